"""A local Slack on 127.0.0.1: Web API, private files, Socket Mode and signed event delivery.

Shapes and error strings follow Slack's documentation and real payloads (see /work/shared/FIELD-NOTES.md).
Where Slack's behaviour is undocumented the stand-in picks the plausible answer and says so in a comment.

    with SlackStandIn() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        file = slack.add_file(b"...", "audio_message.m4a", "audio/mp4", "m4a", subtype="slack_audio")
        body = slack.user_message("C0TEST", files=[file])  # an event_callback body, stored as a message
        post_signed(app_url, body, signing_secret=slack.signing_secret)  # HTTP mode
        slack.send_envelope("events_api", body)  # Socket Mode

Many workspaces: the constructor's is the default; `add_workspace()` or the OAuth install flow
(`GET /oauth/v2/authorize`, then `oauth.v2.access`) adds more, each with its own bot token. Every Web API call and
file download is answered for the workspace of the token it carries; `with slack.workspace(team_id):` makes the
test-side helpers (add_file, user_message, slash_command...) act in another workspace; `uninstall(team_id)`
revokes its tokens and returns the `app_uninstalled` event Slack sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import itertools
import json
import math
import secrets
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

import httpx
from aiohttp import WSCloseCode, WSMsgType, web
from yarl import URL

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


# --------------------------------------------------------------------------------------------------
# Signing and payload builders (what Slack sends to an app)
# --------------------------------------------------------------------------------------------------


def sign(body: bytes | str, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 request signature: HMAC-SHA256 of `v0:<timestamp>:<body>` with the signing secret."""
    raw = body.encode() if isinstance(body, str) else body
    stamp = str(int(time.time()) if timestamp is None else int(timestamp))
    digest = hmac.new(signing_secret.encode(), b"v0:" + stamp.encode() + b":" + raw, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest()}


def new_ts() -> str:
    """A message timestamp like Slack's ("1700000000.123456"), strictly increasing within this process."""
    return _clock.next()


def new_event_id() -> str:
    """An event id like Slack's ("Ev0123ABCD45")."""
    return "Ev" + secrets.token_hex(5).upper()


def event_callback(
    event: JsonDict,
    *,
    event_id: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    is_ext_shared_channel: bool = False,
) -> JsonDict:
    """Wrap an event in the outer `event_callback` envelope Slack POSTs (or pushes over Socket Mode)."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_event_id(),
        "event_time": int(float(event.get("event_ts") or time.time())),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": is_ext_shared_channel,
        "event_context": "4-" + secrets.token_urlsafe(24),
    }


def app_home_opened_event(user: str, tab: str = "home", **envelope: Any) -> JsonDict:
    """The `app_home_opened` event for `user` opening the app's Home tab, in its envelope."""
    event = {"type": "app_home_opened", "user": user, "channel": "D" + secrets.token_hex(5).upper(), "tab": tab,
             "event_ts": f"{time.time():.6f}"}
    return event_callback(event, **envelope)


def message_event(
    channel: str,
    user: str = DEFAULT_USER_ID,
    files: Iterable[Mapping[str, Any]] = (),
    text: str = "",
    ts: str | None = None,
    thread_ts: str | None = None,
    channel_type: str = "channel",
    subtype: str | None = "file_share",
    event_id: str | None = None,
    *,
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    parent_user_id: str | None = None,
) -> JsonDict:
    """The event_callback body Slack sends for a message; with files it is a `file_share` like a real upload.

    Slack voice clips arrive the same way: a file_share whose file has `subtype: "slack_audio"`.
    Pass subtype=None for a plain message.
    """
    ts = ts or new_ts()
    file_list = [dict(f) for f in files]
    event: JsonDict = {"type": "message", "text": text, "user": user, "ts": ts, "team": team_id}
    if subtype is not None:
        event["subtype"] = subtype
    if file_list:
        event["files"] = file_list
        event["upload"] = True
        event["display_as_bot"] = False
    event["blocks"] = _text_blocks(text)
    event["client_msg_id"] = str(uuid.uuid4())
    event["channel"] = channel
    event["event_ts"] = ts
    event["channel_type"] = channel_type
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = parent_user_id or user
    return event_callback(
        event, event_id=event_id, team_id=team_id, api_app_id=api_app_id, bot_user_id=bot_user_id
    )


def file_shared_event(
    file_id: str,
    channel: str,
    user: str = DEFAULT_USER_ID,
    *,
    event_id: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
) -> JsonDict:
    """The thin `file_shared` event that accompanies every upload (ids only, its own event_id)."""
    event = {
        "type": "file_shared",
        "channel_id": channel,
        "file_id": file_id,
        "user_id": user,
        "file": {"id": file_id},
        "event_ts": new_ts(),
    }
    return event_callback(event, event_id=event_id, team_id=team_id, api_app_id=api_app_id)


def slash_command(
    command: str = "/clone",
    text: str = "",
    user_id: str = DEFAULT_USER_ID,
    channel_id: str = DEFAULT_CHANNEL_ID,
    *,
    trigger_id: str | None = None,
    response_url: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    channel_name: str = "general",
    user_name: str = "user",
    api_app_id: str = DEFAULT_APP_ID,
) -> dict[str, str]:
    """A slash command's form fields; SlackStandIn.slash_command gives a live trigger_id and response_url."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url
        or f"https://hooks.slack.com/commands/{team_id}/0/{secrets.token_hex(12)}",
        "trigger_id": trigger_id or _trigger_id(),
    }


def view_submission(
    view: Mapping[str, Any],
    user: str = DEFAULT_USER_ID,
    values: Mapping[str, Any] | None = None,
    *,
    trigger_id: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
    user_name: str = "user",
) -> JsonDict:
    """The interactivity payload of a modal's submission; `values` becomes view.state.values.

    A file_input comes back as values[block_id][action_id] == {"type": "file_input", "files": [file, ...]}.
    """
    submitted = copy.deepcopy(dict(view))
    state = submitted.setdefault("state", {"values": {}})
    if values is not None:
        state["values"] = copy.deepcopy(dict(values))
    return {
        "type": "view_submission",
        "team": {"id": team_id, "domain": team_domain},
        "user": {"id": user, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id or _trigger_id(),
        "view": submitted,
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def block_actions(
    message: Mapping[str, Any],
    channel_id: str,
    action_id: str,
    user: str = DEFAULT_USER_ID,
    *,
    value: str | None = None,
    trigger_id: str | None = None,
    response_url: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
    user_name: str = "user",
) -> JsonDict:
    """The interactivity payload of a button pressed in a message: the button is found in the message's blocks."""
    button: JsonDict | None = None
    block_id = None
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == action_id:
                button, block_id = dict(element), block.get("block_id")
    if button is None:
        raise ValueError(f"no element with action_id {action_id!r} in that message")
    action = {
        "type": button.get("type", "button"),
        "action_id": action_id,
        "block_id": block_id or secrets.token_urlsafe(4),
        "text": button.get("text"),
        "value": value if value is not None else button.get("value"),
        "action_ts": f"{time.time():.6f}",
    }
    if button.get("style"):
        action["style"] = button["style"]
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message.get("ts"),
            "channel_id": channel_id,
            "is_ephemeral": False,
            **({"thread_ts": message["thread_ts"]} if message.get("thread_ts") else {}),
        },
        "trigger_id": trigger_id or _trigger_id(),
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_id.lower()},
        "message": copy.deepcopy(dict(message)),
        "state": {"values": {}},
        "response_url": response_url or "",
        "actions": [action],
    }


def _encode_for_app(body: Mapping[str, Any] | bytes | str, kind: str) -> tuple[bytes, str]:
    if kind == "event":
        content_type = "application/json"
        if isinstance(body, Mapping):
            return json.dumps(body).encode(), content_type
    elif kind == "form":
        content_type = "application/x-www-form-urlencoded"
        if isinstance(body, Mapping):
            return urlencode({k: str(v) for k, v in body.items()}).encode(), content_type
    elif kind == "interactive":
        content_type = "application/x-www-form-urlencoded"
        if isinstance(body, Mapping):
            return urlencode({"payload": json.dumps(body)}).encode(), content_type
    else:
        raise ValueError(f"kind must be 'event', 'form' or 'interactive', not {kind!r}")
    return (body.encode() if isinstance(body, str) else bytes(body)), content_type


def _signed_request(
    body: Mapping[str, Any] | bytes | str,
    kind: str,
    signing_secret: str,
    retry_num: int | None,
    retry_reason: str | None,
    timestamp: int | None,
) -> tuple[bytes, dict[str, str]]:
    content, content_type = _encode_for_app(body, kind)
    headers = {"Content-Type": content_type, "User-Agent": SLACK_USER_AGENT}
    headers.update(sign(content, signing_secret, timestamp))
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
    return content, headers


def post_signed(
    app_url: str,
    body: Mapping[str, Any] | bytes | str,
    kind: str = "event",
    *,
    signing_secret: str = DEFAULT_SIGNING_SECRET,
    retry_num: int | None = None,
    retry_reason: str | None = None,
    timestamp: int | None = None,
    timeout: float = 10.0,
) -> httpx.Response:
    """POST to an app as Slack does: JSON for events, a form for commands, `payload=` for interactivity.

    kind: "event" (Events API), "form" (slash commands), "interactive" (view_submission, block_actions...).
    """
    content, headers = _signed_request(body, kind, signing_secret, retry_num, retry_reason, timestamp)
    return httpx.post(app_url, content=content, headers=headers, timeout=timeout)


async def post_signed_async(
    app_url: str,
    body: Mapping[str, Any] | bytes | str,
    kind: str = "event",
    *,
    signing_secret: str = DEFAULT_SIGNING_SECRET,
    retry_num: int | None = None,
    retry_reason: str | None = None,
    timestamp: int | None = None,
    timeout: float = 10.0,
) -> httpx.Response:
    """post_signed for code running on an event loop that also serves the app."""
    content, headers = _signed_request(body, kind, signing_secret, retry_num, retry_reason, timestamp)
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await client.post(app_url, content=content, headers=headers)


def _text_blocks(text: str) -> list[JsonDict]:
    if not text:
        return []
    return [
        {
            "type": "rich_text",
            "block_id": secrets.token_hex(3),
            "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
        }
    ]


def _trigger_id() -> str:
    return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"


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

_SIGN_IN_PAGE = """<!DOCTYPE html>
<html lang="en-US">
<head>
<meta charset="utf-8">
<title>Slack</title>
<meta name="robots" content="noindex, nofollow">
</head>
<body class="index">
<div id="page"><div id="page_contents">
<h1>Sign in to {team}</h1>
<p>Enter your email address and password.</p>
<form id="signin_form" action="/" method="post" accept-charset="UTF-8">
<input type="hidden" name="redir" value="{redir}">
<input type="email" name="email" placeholder="you@example.com">
<input type="password" name="password" placeholder="password">
<button type="submit" id="signin_btn">Sign in</button>
</form>
</div></div>
</body>
</html>
"""

# What Slack's edge answers while the service behind it is down: HTML, not the Web API's JSON.
_EDGE_ERROR_PAGE = """<!DOCTYPE html>
<html lang="en-US">
<head>
<meta charset="utf-8">
<title>Slack is temporarily unavailable</title>
</head>
<body>
<h1>503 Service Temporarily Unavailable</h1>
<p>Slack is having some trouble right now. We're looking into it: check https://slack-status.com for updates.</p>
</body>
</html>
"""

_JSON_FIELDS = ("blocks", "attachments", "view", "files", "metadata")


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


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


class SlackStandIn:
    """Slack's Web API, file host and Socket Mode on one loopback port, in its own thread and event loop."""

    def __init__(
        self,
        bot_token: str = DEFAULT_BOT_TOKEN,
        app_token: str | None = None,
        signing_secret: str = DEFAULT_SIGNING_SECRET,
        team_id: str = DEFAULT_TEAM_ID,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_id: str = DEFAULT_BOT_ID,
        *,
        app_id: str = DEFAULT_APP_ID,
        team_domain: str = DEFAULT_TEAM_DOMAIN,
        post_limit: tuple[float, float] | None = None,
    ):
        """post_limit: (per_second, burst) for chat.postMessage per channel (see limit_posts); None: no limit."""
        self.app_token = app_token or DEFAULT_APP_TOKEN
        self.signing_secret = signing_secret
        self.app_id = app_id
        self.url = ""
        self.api_url = ""
        # OAuth: the app's credentials and Redirect URLs (OAuth & Permissions); see configure_oauth.
        self.client_id = DEFAULT_CLIENT_ID
        self.client_secret = DEFAULT_CLIENT_SECRET
        self.redirect_urls: list[str] = []
        # Where Slack POSTs events in HTTP mode (deliver_event); None: Socket Mode envelopes.
        self.request_url: str | None = None

        # Workspaces by team id; tokens -> team id. The constructor's workspace is the default one.
        self._default_team = team_id
        self._teams: dict[str, Workspace] = {
            team_id: Workspace(team_id, team_domain, DEFAULT_TEAM_NAME, bot_user_id, bot_id, [bot_token])
        }
        self._token_teams: dict[str, str] = {bot_token: team_id}
        # Tokens of workspaces that uninstalled the app: "token_revoked" for good (reset() keeps them).
        self._uninstalled_tokens: set[str] = set()
        self._codes: dict[str, JsonDict] = {}  # authorization code -> what was approved
        self._acting = threading.local()  # the workspace a Web API call or a `with workspace()` block acts in
        self._next_installer: tuple[str, str, str] | None = None  # (team_id, team_name, user) for the next approval
        self._deny_next = False
        self.installs: list[JsonDict] = []  # every completed oauth.v2.access (no secrets)

        # One re-entrant lock guards all state; the condition is notified on every recorded change.
        self._cond = threading.Condition(threading.RLock())
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._ids = itertools.count(1)
        self._files: dict[str, JsonDict] = {}
        self._channels: dict[str, JsonDict] = {}
        self._dms: dict[tuple[str, str], str] = {}  # (team id, user id) -> the app's DM channel with that user
        self._channel_teams: dict[str, str] = {}  # channel -> the workspace it belongs to, once known
        self._post_limit: tuple[float, float] | None = None
        self._clear_recordings()
        if post_limit is not None:
            self.limit_posts(*post_limit)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._release_stalls: asyncio.Event | None = None
        self._halt: asyncio.Event | None = None  # set on stop: wakes calls held by delay_next
        self._stopping = False

    # workspaces --------------------------------------------------------------------------------------

    @property
    def _ws(self) -> Workspace:
        """The workspace being acted in: a call's token's, a `with workspace()` block's, else the default."""
        team = getattr(self._acting, "team", None)
        return self._teams[team or self._default_team]

    @property
    def team_id(self) -> str:
        return self._ws.team_id

    @property
    def team_domain(self) -> str:
        return self._ws.team_domain

    @property
    def team_name(self) -> str:
        return self._ws.team_name

    @property
    def bot_user_id(self) -> str:
        return self._ws.bot_user_id

    @property
    def bot_id(self) -> str:
        return self._ws.bot_id

    @property
    def bot_token(self) -> str:
        """The bot token of the workspace acted in (the newest issued there)."""
        return self._ws.bot_token

    @contextlib.contextmanager
    def workspace(self, team_id: str) -> Iterator[Workspace]:
        """Make this thread's helpers (add_file, user_message, slash_command, press...) act in `team_id`."""
        with self._cond:
            ws = self._teams[team_id]
        previous = getattr(self._acting, "team", None)
        self._acting.team = team_id
        try:
            yield ws
        finally:
            self._acting.team = previous

    def workspaces(self) -> list[Workspace]:
        """Every workspace known here (installed or not)."""
        with self._cond:
            return [copy.deepcopy(ws) for ws in self._teams.values()]

    def add_workspace(
        self,
        team_id: str,
        *,
        team_name: str | None = None,
        team_domain: str | None = None,
        bot_token: str | None = None,
    ) -> Workspace:
        """Install the app into a workspace directly (as an admin's "Install to Workspace" does); returns it."""
        with self._cond:
            ws = self._teams.get(team_id)
            if ws is None:
                suffix = hashlib.sha256(team_id.encode()).hexdigest()[:6].upper()
                ws = Workspace(
                    team_id, team_domain or team_id.lower(), team_name or f"Workspace {team_id}",
                    "U0BOT" + suffix, "B0BOT" + suffix,
                )
                self._teams[team_id] = ws
            token = bot_token or f"xoxb-{team_id}-{secrets.token_hex(6)}-{secrets.token_urlsafe(18)}"
            ws.tokens.append(token)
            self._token_teams[token] = team_id
            return copy.deepcopy(ws)

    def configure_oauth(
        self,
        redirect_urls: Iterable[str],
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> None:
        """The app's Redirect URLs (OAuth & Permissions) and, optionally, other client credentials."""
        with self._cond:
            self.redirect_urls = list(redirect_urls)
            self.client_id = client_id or self.client_id
            self.client_secret = client_secret or self.client_secret

    def sign_in(self, team_id: str, *, team_name: str | None = None, user: str = DEFAULT_USER_ID) -> None:
        """Who approves the next install on the authorize page: `user` of workspace `team_id` (new or known)."""
        with self._cond:
            self._next_installer = (team_id, team_name or f"Workspace {team_id}", user)

    def deny_next_install(self) -> None:
        """The next visitor of the authorize page presses Cancel: redirected back with error=access_denied."""
        with self._cond:
            self._deny_next = True

    def uninstall(self, team_id: str) -> JsonDict:
        """The workspace removes the app: its bot tokens answer "token_revoked" from now on (reset() keeps that).

        Returns the `app_uninstalled` event_callback Slack then sends (deliver it with deliver_event).
        """
        with self._cond:
            ws = self._teams[team_id]
            self._uninstalled_tokens.update(ws.tokens)
        self._notify()
        return self.app_uninstalled_event(team_id)

    def app_uninstalled_event(self, team_id: str) -> JsonDict:
        """The `app_uninstalled` event for `team_id`, in its envelope."""
        with self._cond:
            ws = self._teams[team_id]
        event = {"type": "app_uninstalled", "event_ts": f"{time.time():.6f}"}
        return event_callback(event, team_id=team_id, api_app_id=self.app_id, bot_user_id=ws.bot_user_id)

    def tokens_revoked_event(self, team_id: str, *, bot: bool = True, users: Iterable[str] = ()) -> JsonDict:
        """`tokens_revoked` for `team_id` (revoking the bot token here too when bot=True): ids, never tokens."""
        with self._cond:
            ws = self._teams[team_id]
            if bot:
                self._uninstalled_tokens.update(ws.tokens)
        self._notify()
        event = {
            "type": "tokens_revoked",
            "tokens": {"oauth": list(users), "bot": [ws.bot_user_id] if bot else []},
            "event_ts": f"{time.time():.6f}",
        }
        return event_callback(event, team_id=team_id, api_app_id=self.app_id, bot_user_id=ws.bot_user_id)

    def deliver_event(self, body: Mapping[str, Any], *, kind: str = "event") -> httpx.Response | str:
        """Send an event as Slack does: signed POST to request_url (HTTP mode), else a Socket Mode envelope."""
        if self.request_url is not None:
            return post_signed(self.request_url, body, kind=kind, signing_secret=self.signing_secret)
        envelope = {"event": "events_api", "form": "slash_commands", "interactive": "interactive"}[kind]
        return self.send_envelope(envelope, body)

    def _team_of(self, token: str) -> str | None:
        return self._token_teams.get(token)

    def _clear_recordings(self) -> None:
        self.calls: list[Call] = []
        self.file_requests: list[FileRequest] = []
        self.responses: list[ResponseURLPost] = []
        self.acks: list[JsonDict] = []
        self.envelopes: list[JsonDict] = []
        self.stalled: list[str] = []
        self.views: dict[str, JsonDict] = {}
        # views.publish: each user's current Home tab (user id -> view).
        self.home_views: dict[str, JsonDict] = {}
        self.connection_count = 0
        self._messages: dict[str, dict[str, JsonDict]] = {}
        self._ephemerals: list[JsonDict] = []
        self._reactions: dict[tuple[str, str], list[str]] = {}
        self._triggers: dict[str, JsonDict] = {}
        self._response_urls: dict[str, JsonDict] = {}
        self._uploads: dict[str, JsonDict] = {}
        self._tickets: set[str] = set()
        self._failures: dict[str, list[_Failure]] = {}
        self._pending: list[JsonDict] = []
        self._stalls: dict[str, int] = {}
        self._file_failures: dict[str, list[int]] = {}
        # Faults: outages, slow methods, permanent error states and the posting limit's buckets.
        self._outage: str | None = None
        self.outage_requests: list[OutageRequest] = []
        self._delays: dict[str, list[float]] = {}
        self.delayed_calls: list[Call] = []
        self._removed_from: set[str] = set()
        self._archived: set[str] = set()
        self._deleted: set[tuple[str, str]] = set()
        self._dead_tokens: dict[str, str] = {}  # token -> the error every call with it answers
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, monotonic time)
        self.post_refusals = 0

    # lifecycle --------------------------------------------------------------------------------------

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> SlackStandIn:
        """Serve on 127.0.0.1 at a free port; returns when the port is listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._startup())
            except BaseException as exc:  # reported to start() in the caller's thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._stopping = False
        self._thread = threading.Thread(target=run, name="slack-standin", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close sockets and the server; wakes every waiter."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self._stopping = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=15)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(15)
            self._thread = None
            self._loop = None
            self._notify()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=1024**3, middlewares=[self._outage_gate])
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/files-pri/{key}/download/{name:.+}", self._serve_file)
        app.router.add_get("/files-pri/{key}/{name:.+}", self._serve_file)
        app.router.add_get("/", self._sign_in_page)
        app.router.add_get("/oauth/v2/authorize", self._authorize_page)
        app.router.add_post("/upload/v1/{ticket}", self._upload)
        app.router.add_post("/commands/{team}/{n}/{secret}", self._response_url)
        app.router.add_get("/link/", self._socket)
        self._release_stalls = asyncio.Event()
        self._halt = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.url}/api/"

    async def _shutdown(self) -> None:
        if self._release_stalls is not None:
            self._release_stalls.set()
        if self._halt is not None:
            self._halt.set()
        await self._close_sockets(None)
        if self._runner is not None:
            await self._runner.cleanup()

    # recording and waiting ---------------------------------------------------------------------------

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()
            waiters = list(self._async_waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop closed meanwhile: nobody is waiting there
                loop.call_soon_threadsafe(event.set)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
        """Block until predicate() is truthy (re-checked on every call, ack, file request...) or timeout."""
        with self._cond:
            return bool(self._cond.wait_for(lambda: predicate() or self._stopping, timeout)) and bool(
                predicate()
            )

    async def wait_for_async(self, predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
        """wait_for without blocking the caller's event loop (for tests whose app runs on that loop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = asyncio.Event()
        entry = (loop, event)
        with self._cond:
            self._async_waiters.append(entry)
        try:
            while True:
                event.clear()
                with self._cond:
                    if predicate():
                        return True
                remaining = deadline - loop.time()
                if remaining <= 0 or self._stopping:
                    return False
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    with self._cond:
                        return bool(predicate())
        finally:
            with self._cond:
                self._async_waiters.remove(entry)

    def calls_to(self, method: str) -> list[JsonDict]:
        """The params of every call to a Web API method, oldest first."""
        with self._cond:
            return [copy.deepcopy(c.params) for c in self.calls if c.method == method]

    def messages(self, channel: str) -> list[JsonDict]:
        """Every message in a channel as it is now (posts with later updates applied), in ts order."""
        with self._cond:
            stored = self._messages.get(channel, {})
            return [copy.deepcopy(stored[ts]) for ts in sorted(stored, key=float)]

    def thread(self, channel: str, ts: str) -> list[JsonDict]:
        """The thread's parent (when known to the stand-in) followed by its replies, in order."""
        return [m for m in self.messages(channel) if m["ts"] == ts or m.get("thread_ts") == ts]

    def ephemerals(self, channel: str | None = None) -> list[JsonDict]:
        """Ephemeral messages posted (optionally in one channel)."""
        with self._cond:
            return [copy.deepcopy(m) for m in self._ephemerals if channel in (None, m["channel"])]

    def reactions(self, channel: str, ts: str) -> list[str]:
        """The names of the bot's reactions on a message."""
        with self._cond:
            return list(self._reactions.get((channel, ts), []))

    def file_content(self, file_id: str) -> bytes:
        """The bytes of a stored file (added or uploaded through files_upload_v2)."""
        with self._cond:
            return self._files[file_id]["content"]

    def reset(self) -> None:
        """Forget calls, messages, reactions, views, acks and injected failures; keep files and channels.

        Injected failures include every fault below: an outage ends, delays, revoked tokens, removed-from and
        archived channels and deleted messages are forgotten; a posting limit stays set with full buckets.
        """
        with self._cond:
            self._clear_recordings()
        self._notify()

    def _record_call(self, method: str, params: JsonDict, team: str | None = None) -> None:
        with self._cond:
            self.calls.append(Call(time.time(), method, params, team))
        self._notify()

    # test controls -----------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        error: str = "internal_error",
        times: int = 1,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next `times` calls to a method with {"ok": false, "error": error} (before auth)."""
        with self._cond:
            queue = self._failures.setdefault(method, [])
            queue.extend(_Failure(error, status, dict(headers or {})) for _ in range(times))

    def rate_limit_next(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next calls with HTTP 429, `Retry-After` and error "ratelimited", like Slack."""
        self.fail_next(method, "ratelimited", times, status=429, headers={"Retry-After": str(retry_after)})

    def stall_file(self, file_id: str, after_bytes: int) -> None:
        """Serve that file's first bytes, then hang until release_stalls() or stop() (cancellation tests)."""
        with self._cond:
            self._stalls[file_id] = after_bytes

    def fail_file(self, file_id: str, status: int = 500, times: int = 1) -> None:
        """Answer the next `times` downloads of a file with this HTTP status."""
        with self._cond:
            self._file_failures.setdefault(file_id, []).extend([status] * times)

    def release_stalls(self) -> None:
        """Let stalled downloads finish."""
        if self._loop is not None and self._release_stalls is not None:
            self._loop.call_soon_threadsafe(self._release_stalls.set)

    # faults: outages -----------------------------------------------------------------------------------

    def outage(self, mode: str = "refuse") -> None:
        """Take Slack down until restore(); files, messages, channels and every other state are kept.

        "refuse": every request on the port (Web API, file host, uploads, Socket Mode, response_urls) has its
        connection reset (TCP RST) before any HTTP answer, open connections (Socket Mode included) are reset
        at once, as when a load balancer loses its backends. "html": /api/*, file downloads and uploads answer
        HTTP 503 with a text/html page, as Slack's edge does; open Socket Mode connections stay up.
        Requests turned away are recorded in `outage_requests` (never in `calls`): see outage_hits.
        """
        if mode not in OUTAGE_MODES:
            raise ValueError(f"mode must be one of {OUTAGE_MODES}, not {mode!r}")
        with self._cond:
            self._outage = mode
        if mode == "refuse" and self._loop is not None:
            self._run(self._reset_connections())
        self._notify()

    def restore(self) -> None:
        """End an outage: the same port answers normally again (a no-op when there is none)."""
        with self._cond:
            self._outage = None
        self._notify()

    @property
    def in_outage(self) -> str | None:
        """The current outage mode, or None."""
        with self._cond:
            return self._outage

    @property
    def outage_hits(self) -> int:
        """How many requests an outage turned away (reset or answered 503) since start or reset()."""
        with self._cond:
            return len(self.outage_requests)

    def outage_api_calls(self, method: str | None = None) -> int:
        """How many Web API calls (optionally to one method) an outage turned away."""
        prefix = "/api/" + (method or "")
        with self._cond:
            return sum(
                1 for r in self.outage_requests if r.path == prefix or (method is None and r.path.startswith(prefix))
            )

    @web.middleware
    async def _outage_gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        with self._cond:
            mode = self._outage
        if mode is None or (mode == "html" and not request.path.startswith(("/api/", "/files-pri/", "/upload/"))):
            return await handler(request)
        status = 0 if mode == "refuse" else 503
        with self._cond:
            self.outage_requests.append(OutageRequest(time.time(), mode, request.path, status))
        self._notify()
        if mode == "refuse":
            _reset_connection(request.transport)
            return web.Response(status=503)  # never sent: the connection is gone
        return web.Response(status=503, text=_EDGE_ERROR_PAGE, content_type="text/html", charset="utf-8")

    async def _reset_connections(self) -> None:
        if self._runner is not None and self._runner.server is not None:
            for connection in list(self._runner.server.connections):
                _reset_connection(connection.transport)

    # faults: slow methods ------------------------------------------------------------------------------

    def delay_next(self, method: str, seconds: float, times: int = 1) -> None:
        """Hold the next `times` calls to a Web API method for `seconds` on arrival, then answer them.

        The method runs after the hold (a trigger_id older than 3 s by then has expired, as on a slow Slack).
        Other requests are served meanwhile; stop() wakes held calls. Each held call is recorded in
        `delayed_calls` when its hold starts, so a test can wait_for it.
        """
        with self._cond:
            self._delays.setdefault(method, []).extend([seconds] * times)

    async def _hold(self, method: str, params: JsonDict) -> None:
        with self._cond:
            queue = self._delays.get(method)
            seconds = queue.pop(0) if queue else 0.0
            if seconds > 0:
                self.delayed_calls.append(Call(time.time(), method, copy.deepcopy(params)))
        if seconds <= 0 or self._halt is None:
            return
        self._notify()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._halt.wait(), seconds)

    # faults: permanent error states ---------------------------------------------------------------------

    def remove_bot_from(self, channel: str) -> None:
        """The bot leaves a channel: posting, updating and reacting there answer "not_in_channel"."""
        with self._cond:
            self._removed_from.add(channel)

    def add_bot_to(self, channel: str) -> None:
        """Undo remove_bot_from."""
        with self._cond:
            self._removed_from.discard(channel)

    def archive_channel(self, channel: str) -> None:
        """Archive a channel: posting (and updating, reacting, sharing files) there answers "is_archived"."""
        with self._cond:
            self._archived.add(channel)

    def delete_message(self, channel: str, ts: str) -> JsonDict:
        """Delete a message (a person's or the bot's): chat.update and reactions on it answer "message_not_found".

        Returns the `message_deleted` event_callback body Slack would send (to deliver if a test wants to).
        """
        with self._cond:
            previous = self._messages.get(channel, {}).pop(ts, None)
            self._deleted.add((channel, ts))
            self._reactions.pop((channel, ts), None)
        self._notify()
        now = new_ts()
        event: JsonDict = {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "deleted_ts": ts,
            "channel": channel,
            "ts": now,
            "event_ts": now,
            "channel_type": {"private": "group"}.get(kind := _kind_from_id(channel) or "channel", kind),
        }
        if previous is not None:
            event["previous_message"] = previous
        return event_callback(event, team_id=self.team_id, api_app_id=self.app_id, bot_user_id=self.bot_user_id)

    def revoke_token(self, token: str | None = None) -> None:
        """Revoke a token (default: the bot's): every Web API call with it answers "token_revoked" and the file
        host treats it as no token (redirect to sign-in), as after an uninstall."""
        with self._cond:
            self._dead_tokens[token or self.bot_token] = "token_revoked"

    def deactivate_account(self, token: str | None = None) -> None:
        """The bot user (or workspace) is deactivated: every call with its token answers "account_inactive"."""
        with self._cond:
            self._dead_tokens[token or self.bot_token] = "account_inactive"

    def dm_channel(self, user: str) -> str:
        """The app's DM ("im") channel with a user: created on first use, the same id every time (D...)."""
        with self._cond:
            channel = self._dms.get((self.team_id, user))
            if channel is None:
                digest = hashlib.sha256(f"{self.team_id}:{user}".encode()).hexdigest()
                channel = "D" + digest[:10].upper()
                self._dms[(self.team_id, user)] = channel
                self._channel_teams[channel] = self.team_id
                self._channels.setdefault(channel, _channel_object(channel, "im", None, False, user, self.team_id))
            return channel

    # faults: posting limit ------------------------------------------------------------------------------

    def limit_posts(self, per_second: float | None = 1.0, burst: int = 1) -> None:
        """Limit chat.postMessage per channel like Slack (about 1/s, short bursts allowed): a token bucket of
        `burst` posts refilled at `per_second`. Over it: HTTP 429, Retry-After, error "ratelimited", counted in
        `post_refusals`. per_second=None removes the limit (the default: existing tests post freely)."""
        if per_second is not None and (per_second <= 0 or burst < 1):
            raise ValueError("per_second must be > 0 and burst >= 1")
        with self._cond:
            self._post_limit = None if per_second is None else (float(per_second), float(burst))
            self._buckets.clear()

    def _take_post_token(self, channel: str) -> None:
        if self._post_limit is None:
            return
        rate, burst = self._post_limit
        now = time.monotonic()
        tokens, last = self._buckets.get(channel, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[channel] = (tokens, now)
            self.post_refusals += 1
            raise _Throttled(max(1, math.ceil((1.0 - tokens) / rate)))
        self._buckets[channel] = (tokens - 1.0, now)

    def issue_trigger_id(self, age: float = 0.0) -> str:
        """A trigger_id views.open accepts once within 3 s; `age` backdates it (age=4: already expired)."""
        trigger_id = _trigger_id()
        with self._cond:
            self._triggers[trigger_id] = {"issued": time.monotonic() - age, "used": False}
        return trigger_id

    def issue_response_url(self) -> str:
        """A response_url served by the stand-in; POSTs to it are recorded in `.responses`."""
        path = f"/commands/{self.team_id}/{next(self._ids)}/{secrets.token_hex(12)}"
        with self._cond:
            self._response_urls[path] = {"issued": time.monotonic(), "uses": 0}
        return self.url + path

    def add_channel(
        self,
        channel_id: str,
        *,
        name: str | None = None,
        kind: str | None = None,
        is_ext_shared: bool = False,
        user: str = DEFAULT_USER_ID,
    ) -> JsonDict:
        """Register a channel for conversations.info; kind: channel, private, im, mpim (default: by id)."""
        kind = kind or _kind_from_id(channel_id)
        if kind is None:
            raise ValueError(f"cannot tell the kind of channel {channel_id!r}")
        channel = _channel_object(channel_id, kind, name, is_ext_shared, user, self.team_id)
        with self._cond:
            self._channels[channel_id] = channel
            self._channel_teams[channel_id] = self.team_id
        return copy.deepcopy(channel)

    def add_file(
        self,
        content: bytes,
        name: str,
        mimetype: str,
        filetype: str,
        *,
        user: str = DEFAULT_USER_ID,
        subtype: str | None = None,
        slack_connect_stub: bool = False,
        size: int | None = None,
        duration_ms: int | None = None,
        visible_to_bot: bool = True,
        chunked: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> JsonDict:
        """Store a private file; returns the file object as an event would carry it.

        size: the announced size (default: the real length). slack_connect_stub: the event carries only
        Slack Connect's stub and files.info reveals the rest. visible_to_bot=False: files.info says
        file_not_found and the file host redirects even with the right token. chunked: served without a
        Content-Length (chunked transfer encoding), so only the bytes reveal the real size.
        """
        file_id = "F" + secrets.token_hex(5).upper()
        obj = self._file_object(file_id, content, name, mimetype, filetype, user, size, extra)
        if subtype is not None:
            obj["subtype"] = subtype
        if subtype in ("slack_audio", "slack_video"):
            obj["media_display_type"] = subtype.removeprefix("slack_")
        if duration_ms is not None:
            obj["duration_ms"] = duration_ms
        with self._cond:
            self._files[file_id] = {
                "object": obj,
                "content": bytes(content),
                "visible": visible_to_bot,
                "chunked": chunked,
                "team": self.team_id,
            }
        if slack_connect_stub:
            # The exact stub Slack sends to Events API apps for files shared in Slack Connect channels.
            return {
                "id": file_id,
                "mode": "file_access",
                "file_access": "check_file_info",
                "created": 0,
                "timestamp": 0,
                "user": "",
            }
        return copy.deepcopy(obj)

    def _file_object(
        self,
        file_id: str,
        content: bytes,
        name: str,
        mimetype: str,
        filetype: str,
        user: str,
        size: int | None,
        extra: Mapping[str, Any] | None,
    ) -> JsonDict:
        now = int(time.time())
        key = f"{self.team_id}-{file_id}"
        quoted = quote(name)
        obj: JsonDict = {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": filetype.upper(),
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": len(content) if size is None else size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": True,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{self.url}/files-pri/{key}/{quoted}",
            "url_private_download": f"{self.url}/files-pri/{key}/download/{quoted}",
            "permalink": f"{self.url}/files/{user}/{file_id}/{quoted}",
            "permalink_public": f"{self.url}/{key}-{secrets.token_hex(5)}",
            "has_rich_preview": False,
            "file_access": "visible",
        }
        obj.update(copy.deepcopy(dict(extra or {})))
        return obj

    def user_message(
        self,
        channel: str,
        user: str = DEFAULT_USER_ID,
        files: Iterable[Mapping[str, Any]] = (),
        text: str = "",
        thread_ts: str | None = None,
        channel_type: str | None = None,
        subtype: str | None = "file_share",
        event_id: str | None = None,
    ) -> JsonDict:
        """A person posts (files and/or text): stored as a message here and returned as an event_callback."""
        kind = _kind_from_id(channel) or "channel"
        channel_type = channel_type or {"private": "group"}.get(kind, kind)
        body = message_event(
            channel,
            user,
            files,
            text,
            thread_ts=thread_ts,
            channel_type=channel_type,
            subtype=subtype if files or subtype != "file_share" else None,
            event_id=event_id,
            team_id=self.team_id,
            api_app_id=self.app_id,
            bot_user_id=self.bot_user_id,
        )
        stored = {k: v for k, v in body["event"].items() if k not in ("channel_type", "event_ts")}
        with self._cond:
            self._channel_teams.setdefault(channel, self.team_id)
            self._messages.setdefault(channel, {})[stored["ts"]] = copy.deepcopy(stored)
            for file in files:
                self._record_share(str(file.get("id")), channel, kind, stored["ts"], thread_ts)
        self._notify()
        return body

    def _record_share(self, file_id: str, channel: str, kind: str, ts: str, thread_ts: str | None) -> None:
        """Where a file was shared, as files.info reports it: channels/groups/ims lists and `shares`."""
        stored = self._files.get(file_id)
        if stored is None:
            return
        obj = stored["object"]
        listing = {"channel": "channels", "private": "groups", "mpim": "groups", "im": "ims"}.get(kind, "channels")
        if channel not in obj.setdefault(listing, []):
            obj[listing].append(channel)
        visibility = "public" if kind == "channel" else "private"
        share: JsonDict = {"ts": ts, "channel_name": channel.lower(), "team_id": self.team_id, "reply_count": 0}
        if thread_ts:
            share["thread_ts"] = thread_ts
        obj.setdefault("shares", {}).setdefault(visibility, {}).setdefault(channel, []).append(share)

    def slash_command(
        self,
        command: str = "/clone",
        text: str = "",
        user_id: str = DEFAULT_USER_ID,
        channel_id: str = DEFAULT_CHANNEL_ID,
        **fields: Any,
    ) -> dict[str, str]:
        """slash_command() with a live trigger_id and a response_url served here."""
        fields.setdefault("trigger_id", self.issue_trigger_id())
        fields.setdefault("response_url", self.issue_response_url())
        return slash_command(
            command,
            text,
            user_id,
            channel_id,
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.app_id,
            **fields,
        )

    def view_submission(
        self,
        view: Mapping[str, Any] | str,
        user: str = DEFAULT_USER_ID,
        values: Mapping[str, Any] | None = None,
    ) -> JsonDict:
        """view_submission() for a view opened here (by id or object), with a live trigger_id."""
        if isinstance(view, str):
            with self._cond:
                view = copy.deepcopy(self.views[view])
        return view_submission(
            view,
            user,
            values,
            trigger_id=self.issue_trigger_id(),
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.app_id,
        )

    def press(self, channel_id: str, message_ts: str, action_id: str, user: str = DEFAULT_USER_ID) -> JsonDict:
        """block_actions() for a button in a message the bot posted here, as `user` presses it now."""
        with self._cond:
            message = copy.deepcopy(self._messages[channel_id][message_ts])
        return block_actions(
            message,
            channel_id,
            action_id,
            user,
            trigger_id=self.issue_trigger_id(),
            response_url=self.issue_response_url(),
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.app_id,
        )

    # Web API --------------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        token = _bearer(request) or params.pop("token", None)
        client = _basic(request)  # oauth.v2.access: slack_sdk sends the client id and secret as HTTP Basic auth
        try:
            await self._hold(method, params)
            return await self._answer_api(method, params, token, client)
        finally:
            params.pop("client_secret", None)  # never recorded
            with self._cond:
                team = self._team_of(token) if token else None
            self._record_call(method, params, team)

    async def _answer_api(
        self, method: str, params: JsonDict, token: str | None, client: tuple[str, str] | None = None
    ) -> web.Response:
        with self._cond:
            queue = self._failures.get(method)
            failure = queue.pop(0) if queue else None
        if failure is not None:
            return web.json_response(
                {"ok": False, "error": failure.error}, status=failure.status, headers=failure.headers
            )
        if method == "oauth.v2.access":  # authenticated by the app's client id and secret, not a token
            return self._oauth_access(params, client)
        handler = self._methods().get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method", "req_method": method})
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        with self._cond:
            team = self._team_of(token) if token != self.app_token else self._default_team
            dead = self._dead_tokens.get(token) or ("token_revoked" if token in self._uninstalled_tokens else None)
        if team is None:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if dead is not None:
            return web.json_response({"ok": False, "error": dead})
        wants_app_token = method == "apps.connections.open"
        if method != "auth.test" and (token == self.app_token) != wants_app_token:
            return web.json_response({"ok": False, "error": "not_allowed_token_type"})
        try:
            with self._cond:
                # Every answer is the token's workspace's: its team id, bot user, files and channels.
                self._acting.team = team
                try:
                    result = handler(params)
                finally:
                    self._acting.team = None
        except _SlackError as exc:
            return web.json_response({"ok": False, "error": exc.error, **exc.extra})
        except _Throttled as exc:
            self._notify()
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(exc.retry_after)}
            )
        self._notify()
        return web.json_response({"ok": True, **result})

    def _methods(self) -> dict[str, Callable[[JsonDict], JsonDict]]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "files.info": self._files_info,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "conversations.info": self._conversations_info,
            "apps.connections.open": self._apps_connections_open,
        }

    def _auth_test(self, params: JsonDict) -> JsonDict:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": "voiceclone",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _channel(self, params: JsonDict, key: str = "channel") -> str:
        channel = params.get(key)
        if not channel or (channel not in self._channels and _kind_from_id(channel) is None):
            raise _SlackError("channel_not_found")
        if self._channel_teams.get(channel, self.team_id) != self.team_id:
            raise _SlackError("channel_not_found")  # another workspace's channel: this token cannot see it
        return channel

    def _writable(self, channel: str, member: bool = True) -> None:
        """Slack's order: an archived channel says is_archived before the bot's membership is looked at."""
        if channel in self._archived:
            raise _SlackError("is_archived")
        if member and channel in self._removed_from:
            raise _SlackError("not_in_channel")

    def _bot_message(self, channel: str, params: JsonDict, ts: str) -> JsonDict:
        message: JsonDict = {
            "user": self.bot_user_id,
            "type": "message",
            "ts": ts,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": params.get("text") or "",
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": "voiceclone",
                "team_id": self.team_id,
            },
        }
        blocks = _json_value(params.get("blocks"))
        if blocks:
            message["blocks"] = blocks
        thread_ts = params.get("thread_ts")
        if thread_ts:
            message["thread_ts"] = thread_ts
            parent = self._messages.get(channel, {}).get(thread_ts)
            message["parent_user_id"] = parent["user"] if parent else DEFAULT_USER_ID
            if parent is not None:
                parent.setdefault("thread_ts", thread_ts)
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["latest_reply"] = ts
        metadata = _json_value(params.get("metadata"))
        if metadata:
            message["metadata"] = metadata
        return message

    def _chat_post_message(self, params: JsonDict) -> JsonDict:
        # Posting to a user id posts into the app's DM with that user and answers with the D... id.
        target = params.get("channel")
        user = target if isinstance(target, str) and _is_user_id(target) else None
        channel = self.dm_channel(user) if user else self._channel(params)
        self._take_post_token(channel)
        self._writable(channel)
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _SlackError("no_text")
        ts = new_ts()
        message = self._bot_message(channel, params, ts)
        self._messages.setdefault(channel, {})[ts] = message
        return {"channel": channel, "ts": ts, "message": copy.deepcopy(message)}

    def _chat_update(self, params: JsonDict) -> JsonDict:
        channel = self._channel(params)
        self._writable(channel)
        ts = params.get("ts") or ""
        message = self._messages.get(channel, {}).get(ts)
        if message is None:
            raise _SlackError("message_not_found")
        if message.get("user") != self.bot_user_id:
            raise _SlackError("cant_update_message")
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _SlackError("no_text")
        if "text" in params:
            message["text"] = params["text"] or ""
        if "blocks" in params:
            message["blocks"] = _json_value(params["blocks"]) or []
        message["edited"] = {"user": self.bot_user_id, "ts": new_ts()}
        return {"channel": channel, "ts": ts, "text": message["text"], "message": copy.deepcopy(message)}

    def _chat_post_ephemeral(self, params: JsonDict) -> JsonDict:
        channel = self._channel(params)
        self._writable(channel, member=False)  # Slack documents is_archived, not not_in_channel, here
        if not params.get("user"):
            raise _SlackError("user_not_in_channel")
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _SlackError("no_text")
        ts = new_ts()
        self._ephemerals.append(
            {
                "channel": channel,
                "user": params["user"],
                "text": params.get("text") or "",
                "blocks": _json_value(params.get("blocks")) or [],
                "thread_ts": params.get("thread_ts"),
                "message_ts": ts,
            }
        )
        return {"message_ts": ts}

    def _reaction_target(self, params: JsonDict) -> tuple[str, str, str]:
        channel = self._channel(params)
        self._writable(channel)
        ts, name = params.get("timestamp"), params.get("name")
        if not ts:
            raise _SlackError("no_item_specified")
        if not name:
            raise _SlackError("invalid_name")
        if (channel, ts) in self._deleted:
            raise _SlackError("message_not_found")
        # Messages posted by people before the stand-in saw them are assumed to exist.
        return channel, ts, name.strip(":")

    def _reactions_add(self, params: JsonDict) -> JsonDict:
        channel, ts, name = self._reaction_target(params)
        names = self._reactions.setdefault((channel, ts), [])
        if name in names:
            raise _SlackError("already_reacted")
        names.append(name)
        return {}

    def _reactions_remove(self, params: JsonDict) -> JsonDict:
        channel, ts, name = self._reaction_target(params)
        names = self._reactions.get((channel, ts), [])
        if name not in names:
            raise _SlackError("no_reaction")
        names.remove(name)
        return {}

    def _files_info(self, params: JsonDict) -> JsonDict:
        stored = self._files.get(params.get("file") or "")
        if stored is None or not stored["visible"] or stored["team"] != self.team_id:
            raise _SlackError("file_not_found")
        return {
            "file": copy.deepcopy(stored["object"]),
            "comments": [],
            "response_metadata": {"next_cursor": ""},
        }

    def _files_get_upload_url(self, params: JsonDict) -> JsonDict:
        filename, length = params.get("filename"), params.get("length")
        if not filename or length in (None, ""):
            raise _SlackError("invalid_arguments")
        ticket = secrets.token_urlsafe(16)
        file_id = "F" + secrets.token_hex(5).upper()
        self._uploads[ticket] = {
            "file_id": file_id,
            "filename": filename,
            "length": int(length),
            "content": None,
        }
        return {"upload_url": f"{self.url}/upload/v1/{ticket}", "file_id": file_id}

    def _files_complete_upload(self, params: JsonDict) -> JsonDict:
        items = _json_value(params.get("files"))
        if not isinstance(items, list) or not items:
            raise _SlackError("invalid_arguments")
        by_id = {u["file_id"]: u for u in self._uploads.values()}
        channel = params.get("channel_id") or (params.get("channels") or "").split(",")[0] or None
        if channel is not None:
            channel = self._channel({"channel": channel})
            self._writable(channel)
        done = []
        for item in items:
            upload = by_id.get(item.get("id", ""))
            if upload is None or upload["content"] is None:
                raise _SlackError("file_not_found")
            done.append((item, upload))
        objects = []
        for item, upload in done:
            name = upload["filename"]
            obj = self._file_object(
                upload["file_id"], upload["content"], name, _guess_mimetype(name), _filetype(name),
                self.bot_user_id, None, None,
            )  # fmt: skip
            obj["title"] = item.get("title") or name
            self._files[obj["id"]] = {
                "object": obj,
                "content": upload["content"],
                "visible": True,
                "chunked": False,
                "team": self.team_id,
            }
            objects.append(obj)
        if channel is not None:
            ts = new_ts()
            message = self._bot_message(channel, {**params, "text": params.get("initial_comment") or ""}, ts)
            message.update({"subtype": "file_share", "upload": True, "files": copy.deepcopy(objects)})
            self._messages.setdefault(channel, {})[ts] = message
            for obj in objects:
                where = "private" if _kind_from_id(channel) in ("private", "im", "mpim") else "public"
                share = {"ts": ts, "channel_name": channel, "reply_count": 0}
                if params.get("thread_ts"):
                    share["thread_ts"] = params["thread_ts"]
                obj["shares"] = {where: {channel: [share]}}
        return {"files": copy.deepcopy(objects)}

    def _exchange_trigger(self, trigger_id: str | None) -> None:
        if not trigger_id:
            raise _SlackError("invalid_arguments")
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            raise _SlackError("invalid_trigger_id")
        if trigger["used"]:
            raise _SlackError("exchanged_trigger_id")
        if time.monotonic() - trigger["issued"] > TRIGGER_TTL:
            raise _SlackError("expired_trigger_id")
        trigger["used"] = True

    def _views_open(self, params: JsonDict) -> JsonDict:
        view = _json_value(params.get("view"))
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise _SlackError("invalid_arguments")
        self._exchange_trigger(params.get("trigger_id"))
        view_id = "V" + secrets.token_hex(5).upper()
        stored = {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "blocks": [],
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "clear_on_close": False,
            "notify_on_close": False,
            **copy.deepcopy(view),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": self.app_id,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self.views[view_id] = stored
        return {"view": copy.deepcopy(stored)}

    def _views_update(self, params: JsonDict) -> JsonDict:
        view = _json_value(params.get("view"))
        if not isinstance(view, dict):
            raise _SlackError("invalid_arguments")
        view_id, external_id = params.get("view_id"), params.get("external_id")
        if not view_id and not external_id:
            raise _SlackError("invalid_arguments")
        stored = self.views.get(view_id or "") or next(
            (v for v in self.views.values() if external_id and v.get("external_id") == external_id), None
        )
        if stored is None:
            raise _SlackError("not_found")
        if params.get("hash") and params["hash"] != stored["hash"]:
            raise _SlackError("hash_conflict")
        keep = {
            k: stored[k]
            for k in ("id", "team_id", "root_view_id", "app_id", "app_installed_team_id", "bot_id")
        }
        stored.clear()
        stored.update({"blocks": [], "private_metadata": "", "callback_id": "", "external_id": ""})
        stored.update(copy.deepcopy(view))
        stored.update(keep)
        stored.update({"state": {"values": {}}, "hash": f"{int(time.time())}.{secrets.token_hex(4)}"})
        stored.setdefault("previous_view_id", None)
        return {"view": copy.deepcopy(stored)}

    def _views_publish(self, params: JsonDict) -> JsonDict:
        view = _json_value(params.get("view"))
        user = params.get("user_id")
        if not isinstance(view, dict) or view.get("type") != "home" or not user:
            raise _SlackError("invalid_arguments")
        if len(view.get("blocks") or []) > 100:
            raise _SlackError("invalid_blocks")
        view_id = (self.home_views.get(user) or {}).get("id") or "V" + secrets.token_hex(5).upper()
        stored = {"id": view_id, "team_id": self.team_id, "app_id": self.app_id, "bot_id": self.bot_id,
                  "state": {"values": {}}, "hash": f"{int(time.time())}.{secrets.token_hex(4)}", **copy.deepcopy(view)}
        self.home_views[user] = stored
        return {"view": copy.deepcopy(stored)}

    def app_home_opened(self, user: str = DEFAULT_USER_ID) -> JsonDict:
        """app_home_opened for `user`, addressed to this workspace."""
        return app_home_opened_event(user, team_id=self.team_id, api_app_id=self.app_id, bot_user_id=self.bot_user_id)

    def press_home(self, user: str, action_id: str, value: str) -> JsonDict:
        """block_actions for a button on `user`'s Home tab (the button is found by action_id and value)."""
        with self._cond:
            view = copy.deepcopy(self.home_views[user])
        for block in view.get("blocks") or []:
            for element in block.get("elements") or []:
                if element.get("action_id") == action_id and element.get("value") == value:
                    body = block_actions({"blocks": [block]}, "", action_id, user, trigger_id=self.issue_trigger_id(),
                                         team_id=self.team_id, team_domain=self.team_domain, api_app_id=self.app_id)
                    body["container"] = {"type": "view", "view_id": view["id"]}
                    body.pop("channel", None)
                    body.pop("message", None)
                    body["view"] = view
                    return body
        raise ValueError(f"no {action_id} button for {value!r} on {user}'s Home tab")

    def _conversations_info(self, params: JsonDict) -> JsonDict:
        channel_id = self._channel(params)
        channel = copy.deepcopy(
            self._channels.get(channel_id)
            or _channel_object(
                channel_id, _kind_from_id(channel_id) or "channel", None, False, DEFAULT_USER_ID, self.team_id
            )
        )
        channel["is_archived"] = channel_id in self._archived
        if "is_member" in channel:
            channel["is_member"] = channel_id not in self._removed_from
        return {"channel": channel}

    def _apps_connections_open(self, params: JsonDict) -> JsonDict:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        return {
            "url": f"ws://127.0.0.1:{self.url.rsplit(':', 1)[1]}/link/?ticket={ticket}&app_id={self.app_id}"
        }

    # OAuth install flow ---------------------------------------------------------------------------------

    def _redirect_allowed(self, redirect_uri: str) -> bool:
        """Slack accepts a redirect_uri under one of the app's Redirect URLs (same scheme and host, path below)."""
        wanted = urlsplit(redirect_uri)
        for url in self.redirect_urls:
            allowed = urlsplit(url)
            if (wanted.scheme, wanted.netloc) == (allowed.scheme, allowed.netloc) and wanted.path.startswith(
                allowed.path
            ):
                return True
        return False

    async def _authorize_page(self, request: web.Request) -> web.Response:
        """slack.com/oauth/v2/authorize: the signed-in user approves at once (or cancels: deny_next_install).

        Problems with the app's own parameters show Slack's error page (no redirect: the target is untrusted).
        """
        query = request.query
        with self._cond:
            redirect_uri = query.get("redirect_uri") or None
            if query.get("client_id") != self.client_id:
                return _oauth_error_page("invalid_client_id", 400)
            if redirect_uri is not None and not self._redirect_allowed(redirect_uri):
                return _oauth_error_page("bad_redirect_uri", 400)
            target = redirect_uri or (self.redirect_urls[0] if self.redirect_urls else None)
            if target is None:
                return _oauth_error_page("bad_redirect_uri", 400)
            state = query.get("state")
            if self._deny_next:
                self._deny_next = False
                answer: dict[str, str] = {"error": "access_denied"}
            else:
                team_id, team_name, user = self._next_installer or (
                    query.get("team") or self._default_team, DEFAULT_TEAM_NAME, DEFAULT_USER_ID
                )
                self._next_installer = None
                code = f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**13)}.{secrets.token_hex(32)}"
                self._codes[code] = {
                    "team_id": team_id,
                    "team_name": team_name,
                    "user": user,
                    "redirect_uri": redirect_uri,
                    "scopes": [s for s in (query.get("scope") or "").split(",") if s],
                    "issued": time.monotonic(),
                    "used": False,
                }
                answer = {"code": code}
            if state is not None:
                answer["state"] = state
        self._notify()
        separator = "&" if urlsplit(target).query else "?"
        raise web.HTTPFound(target + separator + urlencode(answer))

    def _oauth_access(self, params: JsonDict, client: tuple[str, str] | None) -> web.Response:
        """oauth.v2.access: a code (once, within 10 minutes) for the workspace's new bot token."""
        client_id, client_secret = client or (params.get("client_id"), params.get("client_secret"))
        with self._cond:
            if client_id != self.client_id:
                error = "invalid_client_id"
            elif not hmac.compare_digest(str(client_secret or ""), self.client_secret):
                error = "bad_client_secret"
            else:
                error = None
            grant = self._codes.get(str(params.get("code") or "")) if error is None else None
            if error is None and (grant is None or grant["used"] or time.monotonic() - grant["issued"] > CODE_TTL):
                error = "invalid_code"  # Slack answers the same for an unknown, used or expired code
            if error is None and grant is not None and grant["redirect_uri"] != (params.get("redirect_uri") or None):
                error = "bad_redirect_uri"  # the redirect_uri must be the one the authorize step was given
            if error is not None or grant is None:
                return web.json_response({"ok": False, "error": error})
            grant["used"] = True
            ws = self.add_workspace(grant["team_id"], team_name=grant["team_name"])
            stored = self._teams[ws.team_id]
            stored.installer = grant["user"]
            stored.scopes = tuple(grant["scopes"])
            self.installs.append({"team_id": ws.team_id, "user": grant["user"], "scopes": list(grant["scopes"])})
        self._notify()
        return web.json_response(
            {
                "ok": True,
                "access_token": ws.bot_token,
                "token_type": "bot",
                "scope": ",".join(grant["scopes"]),
                "bot_user_id": ws.bot_user_id,
                "app_id": self.app_id,
                "team": {"id": ws.team_id, "name": ws.team_name},
                "enterprise": None,
                "authed_user": {"id": grant["user"]},
                "is_enterprise_install": False,
            }
        )

    # file host ------------------------------------------------------------------------------------------

    def _record_file_request(
        self, path: str, present: bool, authorized: bool, status: int, team: str | None = None
    ) -> None:
        with self._cond:
            self.file_requests.append(FileRequest(time.time(), path, present, authorized, status, team))
        self._notify()

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        team, _, file_id = request.match_info["key"].partition("-")
        token = _bearer(request) or ""
        with self._cond:
            # Only a live bot token of the workspace the file belongs to opens it.
            authorized = (
                self._team_of(token) == team
                and token not in self._dead_tokens
                and token not in self._uninstalled_tokens
            )
            stored = self._files.get(file_id)
            if stored is not None and stored["team"] != team:
                stored = None
            sender = self._team_of(token)
            stall = self._stalls.get(file_id)
            failures = self._file_failures.get(file_id)
            failure = failures.pop(0) if failures else None
        if failure is not None:
            self._record_file_request(request.path, header is not None, authorized, failure, sender)
            return web.Response(status=failure, text="Slack is having trouble", content_type="text/plain")
        if stored is None:
            self._record_file_request(request.path, header is not None, authorized, 404, sender)
            return web.Response(status=404, text="Not Found")
        if not authorized or not stored["visible"]:
            # What files.slack.com does without a valid token (or for a file the bot cannot see).
            self._record_file_request(request.path, header is not None, authorized, 302, sender)
            location = URL(f"{self.url}/?redir={quote(request.path_qs, safe='')}", encoded=True)
            raise web.HTTPFound(location)
        self._record_file_request(request.path, True, True, 200, sender)
        content: bytes = stored["content"]
        obj = stored["object"]
        headers = {"Content-Disposition": f'attachment; filename="{quote(obj["name"])}"'}
        if stall is None and not stored["chunked"]:
            return web.Response(body=content, content_type=obj["mimetype"], headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_type = obj["mimetype"]
        if stored["chunked"]:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(content)
        await response.prepare(request)
        sent = 0
        if stall is not None:
            await response.write(content[:stall])
            sent = len(content[:stall])
            with self._cond:
                self.stalled.append(file_id)
            self._notify()
            assert self._release_stalls is not None
            await self._release_stalls.wait()
        try:
            for start in range(sent, len(content), 64 * 1024):
                await response.write(content[start : start + 64 * 1024])
            await response.write_eof()
        except ConnectionResetError:
            # The client hung up mid-body, as the bot does when a file outgrows its size cap: as on Slack, fine.
            pass
        return response

    async def _sign_in_page(self, request: web.Request) -> web.Response:
        self._record_file_request(request.path, "Authorization" in request.headers, False, 200)
        page = _SIGN_IN_PAGE.format(team=self.team_domain, redir=request.query.get("redir", ""))
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _upload(self, request: web.Request) -> web.Response:
        ticket = request.match_info["ticket"]
        if request.content_type == "multipart/form-data":
            form = await request.post()
            field = next((v for v in form.values() if not isinstance(v, str)), None)
            data = field.file.read() if field is not None else b""
        else:
            data = await request.read()
        with self._cond:
            upload = self._uploads.get(ticket)
            if upload is not None:
                upload["content"] = data
        self._notify()
        if upload is None:
            return web.Response(status=404, text="Not Found", content_type="text/plain")
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _response_url(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            payload: Any = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        with self._cond:
            issued = self._response_urls.get(request.path)
            if issued is None:
                status, text = 404, "no_service"
            elif time.monotonic() - issued["issued"] > RESPONSE_URL_TTL:
                status, text = 404, "expired_url"
            elif issued["uses"] >= RESPONSE_URL_USES:
                status, text = 404, "used_url"
            else:
                issued["uses"] += 1
                status, text = 200, "ok"
            self.responses.append(ResponseURLPost(time.time(), self.url + request.path, payload, status))
        self._notify()
        return web.Response(status=status, text=text, content_type="text/plain")

    # Socket Mode ----------------------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._cond:
            valid = ticket in self._tickets
            self._tickets.discard(ticket)
        if not valid:
            return web.Response(status=401, text="invalid ticket", content_type="text/plain")
        ws = web.WebSocketResponse(timeout=1.0)
        await ws.prepare(request)
        with self._cond:
            self._sockets.append(ws)
            self.connection_count += 1
            pending, self._pending = self._pending, []
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {
                    "host": "applink-standin",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        self._notify()
        for envelope in pending:
            await self._deliver(envelope)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("envelope_id"):
                    with self._cond:
                        self.acks.append(data)
                    self._notify()
        finally:
            with self._cond:
                if ws in self._sockets:
                    self._sockets.remove(ws)
            self._notify()
        return ws

    async def _deliver(self, envelope: JsonDict) -> None:
        with self._cond:
            live = [ws for ws in self._sockets if not ws.closed]
        if live:
            try:
                await live[-1].send_str(json.dumps(envelope))
            except ConnectionError:
                live = []
        with self._cond:
            if live:
                self.envelopes.append(envelope)
            else:
                # Slack keeps events for an app that is briefly away and delivers them on reconnection.
                self._pending.append(envelope)
        self._notify()

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the Slack stand-in is not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("call this from outside the stand-in's own thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def send_envelope(
        self,
        type: str,
        payload: Mapping[str, Any],
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool | None = None,
    ) -> str:
        """Push an envelope to the newest Socket Mode connection (queued until one connects); returns its id.

        type: "events_api" (payload: an event_callback body), "slash_commands" (the command's fields) or
        "interactive" (an interactivity payload).
        """
        if type not in ("events_api", "slash_commands", "interactive"):
            raise ValueError(f"unknown envelope type {type!r}")
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": type,
            "payload": copy.deepcopy(dict(payload)),
            "accepts_response_payload": (
                type != "events_api" if accepts_response_payload is None else accepts_response_payload
            ),
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        self._run(self._deliver(envelope))
        return envelope_id

    def redeliver(self, envelope_id: str, retry_reason: str = "timeout") -> str:
        """Send an envelope again, as Slack does when it is not acked: same payload, retry_attempt + 1."""
        with self._cond:
            sent = [e for e in self.envelopes + self._pending if e["envelope_id"] == envelope_id]
        if not sent:
            raise KeyError(envelope_id)
        old = sent[-1]
        return self.send_envelope(
            old["type"],
            old["payload"],
            retry_attempt=old["retry_attempt"] + 1,
            retry_reason=retry_reason,
            accepts_response_payload=old["accepts_response_payload"],
        )

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> JsonDict | None:
        """The client's ack for an envelope (with its payload, if any), or None after timeout."""

        def find() -> JsonDict | None:
            return next((a for a in self.acks if a.get("envelope_id") == envelope_id), None)

        self.wait_for(lambda: find() is not None, timeout)
        with self._cond:
            found = find()
            return copy.deepcopy(found) if found is not None else None

    async def wait_for_ack_async(self, envelope_id: str, timeout: float = 5.0) -> JsonDict | None:
        """wait_for_ack without blocking the caller's event loop."""

        def find() -> JsonDict | None:
            return next((a for a in self.acks if a.get("envelope_id") == envelope_id), None)

        await self.wait_for_async(lambda: find() is not None, timeout)
        with self._cond:
            found = find()
            return copy.deepcopy(found) if found is not None else None

    def open_sockets(self) -> int:
        """How many Socket Mode connections are open now."""
        with self._cond:
            return sum(1 for ws in self._sockets if not ws.closed)

    def wait_for_socket(self, timeout: float = 5.0) -> bool:
        """True once a Socket Mode client is connected."""
        return self.wait_for(lambda: self.open_sockets() > 0, timeout)

    async def wait_for_socket_async(self, timeout: float = 5.0) -> bool:
        """wait_for_socket without blocking the caller's event loop."""
        return await self.wait_for_async(lambda: self.open_sockets() > 0, timeout)

    async def _close_sockets(self, reason: str | None) -> int:
        with self._cond:
            sockets = list(self._sockets)
        for ws in sockets:
            if reason is not None and not ws.closed:
                await ws.send_json(
                    {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-standin"}}
                )
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server closed the connection")
        return len(sockets)

    def disconnect_sockets(self, reason: str | None = None) -> int:
        """Close every Socket Mode connection (after a {"type": "disconnect"} message when reason is given).

        slack_sdk reconnects through apps.connections.open; unacked envelopes can then be redeliver()ed.
        """
        return self._run(self._close_sockets(reason))


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _basic(request: web.Request) -> tuple[str, str] | None:
    """(client_id, client_secret) from an HTTP Basic Authorization header, else None."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, colon, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    return (login, password) if colon else None


def _oauth_error_page(error: str, status: int) -> web.Response:
    """What slack.com's authorize page shows when the app's own parameters are wrong."""
    page = f"<!DOCTYPE html><html><head><title>Slack</title></head><body><h1>Oops, something went wrong.</h1>" \
        f"<p>Please let the app developer know: <code>{error}</code></p></body></html>"
    return web.Response(status=status, text=page, content_type="text/html", charset="utf-8")


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def _read_params(request: web.Request) -> JsonDict:
    """Merge query and body like Slack: form, multipart or JSON (JSON needs the token in the header)."""
    params: JsonDict = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            body.pop("token", None)  # Slack ignores a token inside a JSON body
            params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            params[key] = value if isinstance(value, str) else value.file.read()
    return params


def _reset_connection(transport: asyncio.BaseTransport | None) -> None:
    """Close a connection with a TCP RST (SO_LINGER 0), not a FIN: the client sees "connection reset"."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


def _is_user_id(value: str) -> bool:
    return len(value) > 1 and value[0] in "UW" and value.isalnum() and value == value.upper()


def _json_value(value: Any) -> Any:
    if isinstance(value, str | bytes) and value[:1] in ("[", "{", b"[", b"{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


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


_MIMETYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "webm": "audio/webm",
    "flac": "audio/flac",
    "mp4": "video/mp4",
    "txt": "text/plain",
    "json": "application/json",
    "png": "image/png",
    "pdf": "application/pdf",
}


def _filetype(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return {"txt": "text", "": "binary"}.get(ext, ext)


def _guess_mimetype(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _MIMETYPES.get(ext, "application/octet-stream")
