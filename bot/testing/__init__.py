"""Local stand-ins of Slack and of the TRTC API, speaking real HTTP on loopback (tests, demo, bench)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.testing.slack import SlackStandIn
    from bot.testing.trtc import TrtcStandIn


def bot_environ(
    slack: SlackStandIn, trtc: TrtcStandIn, db_path: str | os.PathLike[str], **extra: str
) -> dict[str, str]:
    """The settings of a bot aimed at these stand-ins, with their own credentials; `extra` overrides."""
    env = {
        "TENCENTCLOUD_SECRET_ID": trtc.secret_id,
        "TENCENTCLOUD_SECRET_KEY": trtc.secret_key,
        "TRTC_SDK_APP_ID": str(trtc.sdk_app_id or 1400000001),
        "TRTC_ENDPOINT": trtc.url,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "SLACK_API_URL": slack.api_url,
        "DATABASE_URL": f"sqlite:///{Path(db_path)}",
    }
    env.update(extra)
    return env
