"""Drag-and-drop: a file shared in a channel, group or DM becomes one clone job per audio or video file."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from bot.slack.intake import share_jobs
from bot.store.jobs import Refused
from bot.ui.job_blocks import build_dm_hint
from bot.work.quotas import Quotas
from handlers.services import Services


async def handle_file_share(body: dict[str, Any], context: AsyncBoltContext) -> None:
    """A `message` event with files: store a job per media file (an hourglass says so); a DM of none gets a hint."""
    event = body.get("event") or {}
    if event.get("bot_id") or event.get("bot_profile") or event.get("subtype") == "bot_message":
        # Files posted by bots (ours included: previews, uploads) are never someone's consent to clone.
        return
    services = Services.of(context)
    intake = services.intake
    share = share_jobs(body)
    user, team = event.get("user"), body.get("team_id")
    admit = services.quotas.admission(Quotas.CLONE, team, user, len(share.jobs))
    try:
        # Stored before this returns, and so before Slack gets its 200 (process_before_response).
        await intake.accept(share.jobs, react=True, admit=admit)
    except Refused as refused:
        if share.channel and user:
            await intake.ephemeral(
                f"limit:{body.get('event_id') or share.thread_ts}", share.channel, user, str(refused.refusal),
                share.thread_ts, team,
            )
        return
    if share.is_dm and share.ignored and not share.jobs and share.channel:
        names = ", ".join(str(f.get("name") or f.get("id")) for f in share.ignored)
        # Keyed on the event id, so a Slack retry of the same event does not repeat it.
        await intake.hint(
            f"dm:{body.get('event_id') or share.thread_ts}", share.channel, build_dm_hint(names), share.thread_ts,
            body.get("team_id"),
        )


async def handle_other_message() -> None:
    """Every other message event: nothing to do."""
    # Without a listener Bolt answers 404, which Slack counts as a failed delivery and retries.
    return None


def register(app: AsyncApp) -> None:
    """Listen for file shares, and acknowledge every other message event."""
    app.event({"type": "message", "subtype": "file_share"})(handle_file_share)
    app.event("message")(handle_other_message)
