"""What Slack sends to an app: signed requests and the bodies of events, slash commands and interactions.

Plain functions, usable without a running stand-in; SlackStandIn's helpers fill in live trigger_ids,
response_urls and the acting workspace.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from bot.testing.standin_slack.common import (
    DEFAULT_APP_ID,
    DEFAULT_BOT_USER_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_SIGNING_SECRET,
    DEFAULT_TEAM_DOMAIN,
    DEFAULT_TEAM_ID,
    DEFAULT_USER_ID,
    SLACK_USER_AGENT,
    VERIFICATION_TOKEN,
    JsonDict,
    _trigger_id,
    new_event_id,
    new_ts,
)


def sign(body: bytes | str, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 request signature: HMAC-SHA256 of `v0:<timestamp>:<body>` with the signing secret."""
    raw = body.encode() if isinstance(body, str) else body
    stamp = str(int(time.time()) if timestamp is None else int(timestamp))
    digest = hmac.new(signing_secret.encode(), b"v0:" + stamp.encode() + b":" + raw, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest()}


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
