"""What stands in front of Bolt on the Slack port: a cap on request bodies, enforced before anything reads a body,
and Slack's signature checked on the raw bytes before Bolt parses any of them.

`BodyLimit` is a pure ASGI middleware around the whole HTTP front: a Content-Length over the cap is refused with
413 before a byte of the body is read; a body without one (chunked) is read up to the cap and refused with 413 the
moment it passes it. Either way the connection is closed after the answer, so the rest is never read and memory
stays flat whatever a client sends. A body within the cap is handed to the app as one message.

`signature_problem` is Bolt's v0 check done first: a request with missing, malformed or non-numeric signature
headers, a stale timestamp or a wrong signature is refused with 401 and one WARNING line (Bolt itself turns a
non-numeric X-Slack-Request-Timestamp into a 500 with a traceback, and parses an unsigned body before checking it).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from bot.logs import Throttle

log = logging.getLogger(__name__)
# Refused requests log one line per reason every 10 s at most: anyone on the internet can send them.
REFUSALS = Throttle(10.0)

# Slack's requests are a few kB (a view submission with its state is the largest); 1 MB is far above any of them.
MAX_REQUEST_BYTES = 1024 * 1024
# Slack signs with the time of sending; Bolt (and Slack's documentation) accept 5 minutes either way.
SIGNATURE_WINDOW = 300

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Pure ASGI middleware: no request body over `max_bytes` reaches `app` (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await _refuse(send, 400, b"Bad Content-Length\n")
            return
        if declared is not None and declared > self.max_bytes:
            REFUSALS.warning(log, "too large", "refused a body of %d bytes (Content-Length) for %s: the limit is %d",
                             declared, scope.get("path", ""), self.max_bytes)
            await _refuse(send, 413, b"Request body too large\n")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before its body ended: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                REFUSALS.warning(log, "too large", "refused a streamed body for %s at %d bytes (the limit is %d)",
                                 scope.get("path", ""), size, self.max_bytes)
                await _refuse(send, 413, b"Request body too large\n")
                return
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length (None: not declared; -1: not a number)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() and len(text) <= 18 else -1
    return None


async def _refuse(send: Send, status: int, text: bytes) -> None:
    """Answer and close the connection: whatever is left of the body is never read."""
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(text)).encode()),
            (b"connection", b"close"),
        ],
    })
    await send({"type": "http.response.body", "body": text, "more_body": False})


def signature_problem(headers: Mapping[str, str], body: bytes, signing_secret: str, now: float) -> str | None:
    """Why this is not a request Slack signed with `signing_secret` (Slack's v0 scheme), or None when it is.

    The reasons are fixed phrases: nothing of the request is quoted back into the log.
    """
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if not timestamp or not signature:
        return "no X-Slack-Request-Timestamp or X-Slack-Signature header"
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "an X-Slack-Request-Timestamp that is not a number"
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW:
        return "an X-Slack-Request-Timestamp more than 5 minutes away (a replay, or a clock far off)"
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = b"v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, signature.encode("latin-1", "replace")):
        return "a signature that does not match (SLACK_SIGNING_SECRET, or not from Slack)"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "a body that is not UTF-8"
    return None
