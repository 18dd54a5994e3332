"""What every part of the Slack stand-in shares: settings, records of what it saw, ids, workspaces, channels."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import web

DEFAULT_BOT_TOKEN = "xoxb-stand-in-bot-token"
DEFAULT_APP_TOKEN = "xapp-stand-in-app-token"
DEFAULT_SIGNING_SECRET = "5tand1n0s1gn1ng0secret0000000000"
DEFAULT_TEAM_ID = "T0TEST"
DEFAULT_TEAM_DOMAIN = "standin"
DEFAULT_TEAM_NAME = "Stand-in Workspace"
# The app's credentials for the OAuth install flow (Basic Information -> App Credentials on Slack).
DEFAULT_CLIENT_ID = "1234567890123.4567890123456"
DEFAULT_CLIENT_SECRET = "5tand1n0c11ent0secret0000000000a"
CODE_TTL = 600.0  # seconds an authorization code can be exchanged (Slack: 10 minutes), once
DEFAULT_APP_ID = "A0TEST"
DEFAULT_BOT_USER_ID = "U0BOT"
DEFAULT_BOT_ID = "B0BOT"
DEFAULT_USER_ID = "U0USER"
DEFAULT_CHANNEL_ID = "C0TEST"
VERIFICATION_TOKEN = "standinverificationtoken"  # the deprecated `token` field Slack still sends
SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"

TRIGGER_TTL = 3.0  # seconds a trigger_id can be exchanged, once
RESPONSE_URL_USES = 5  # a response_url takes 5 posts within 30 minutes
RESPONSE_URL_TTL = 30 * 60

OUTAGE_MODES = ("refuse", "html")

JsonDict = dict[str, Any]


class Call(NamedTuple):
    """One Web API request as received (the token removed)."""

    time: float
    method: str
    params: JsonDict
    # The workspace whose token the call carried (None: no token, or one Slack does not know).
    team: str | None = None


class FileRequest(NamedTuple):
    """One request to the private file host; proves whether a token was sent and whether it was right."""

    time: float
    path: str
    authorization_present: bool
    authorized: bool
    status: int
    team: str | None = None  # the workspace of the token sent, if any


class ResponseURLPost(NamedTuple):
    """One POST to a response_url the stand-in issued."""

    time: float
    url: str
    payload: Any
    status: int


class OutageRequest(NamedTuple):
    """One request turned away by an outage: proof that traffic really hit it (status 0: connection reset)."""

    time: float
    mode: str
    path: str
    status: int


class _SlackError(Exception):
    """A Web API error answered as {"ok": false, "error": ...}."""

    def __init__(self, error: str, **extra: Any):
        self.error = error
        self.extra = extra
        super().__init__(error)


class _Throttled(Exception):
    """A call over a rate limit: HTTP 429 with Retry-After (whole seconds) and error "ratelimited"."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__("ratelimited")


class _Failure(NamedTuple):
    error: str
    status: int
    headers: Mapping[str, str]


@dataclass
class Workspace:
    """One Slack workspace the app is (or was) installed in, with its bot user and bot tokens."""

    team_id: str
    team_domain: str
    team_name: str
    bot_user_id: str
    bot_id: str
    tokens: list[str] = field(default_factory=list)  # issued bot tokens, newest last
    installer: str = DEFAULT_USER_ID
    scopes: tuple[str, ...] = ()

    @property
    def bot_token(self) -> str:
        """The newest bot token issued for this workspace."""
        return self.tokens[-1]


class _Clock:
    """Message ts values: Slack's are unique per channel and ordered; ours are unique process-wide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> str:
        with self._lock:
            micros = max(int(time.time() * 1_000_000), self._last + 1)
            self._last = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


_clock = _Clock()


def new_ts() -> str:
    """A message timestamp like Slack's ("1700000000.123456"), strictly increasing within this process."""
    return _clock.next()


def new_event_id() -> str:
    """An event id like Slack's ("Ev0123ABCD45")."""
    return "Ev" + secrets.token_hex(5).upper()


def _trigger_id() -> str:
    return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _kind_from_id(channel_id: str) -> str | None:
    if not channel_id or not channel_id.isalnum() or channel_id != channel_id.upper():
        return None
    return {"C": "channel", "G": "private", "D": "im"}.get(channel_id[0])


def _channel_object(
    channel_id: str, kind: str, name: str | None, is_ext_shared: bool, user: str, team_id: str = DEFAULT_TEAM_ID
) -> JsonDict:
    created = int(time.time()) - 86400
    if kind == "im":
        return {
            "id": channel_id,
            "created": created,
            "is_archived": False,
            "is_im": True,
            "is_org_shared": False,
            "context_team_id": team_id,
            "user": user,
            "is_user_deleted": False,
            "priority": 0,
        }
    if kind not in ("channel", "private", "mpim"):
        raise ValueError(f"kind must be channel, private, im or mpim, not {kind!r}")
    name = name or ("mpdm-user--voiceclone-1" if kind == "mpim" else channel_id.lower())
    return {
        "id": channel_id,
        "name": name,
        "is_channel": kind == "channel",
        "is_group": kind == "private",
        "is_im": False,
        "is_mpim": kind == "mpim",
        "is_private": kind != "channel",
        "created": created,
        "is_archived": False,
        "is_general": False,
        "unlinked": 0,
        "name_normalized": name,
        "is_shared": is_ext_shared,
        "is_org_shared": False,
        "is_pending_ext_shared": False,
        "pending_shared": [],
        "context_team_id": team_id,
        "creator": user,
        "is_ext_shared": is_ext_shared,
        "shared_team_ids": [team_id],
        "is_member": True,
        "topic": {"value": "", "creator": "", "last_set": 0},
        "purpose": {"value": "", "creator": "", "last_set": 0},
        "previous_names": [],
    }
