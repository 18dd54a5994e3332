"""Fault injection: what a test makes go wrong in Slack, to see the bot cope.

Failed and rate-limited calls, broken downloads, outages, slow methods, permanent error states (removed bot,
archived channel, deleted message, revoked token) and Slack's posting limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bot.testing.standin_slack.common import (
    OUTAGE_MODES,
    Call,
    JsonDict,
    OutageRequest,
    _Failure,
    _kind_from_id,
    _Throttled,
    new_ts,
)
from bot.testing.standin_slack.core import StandInCore
from bot.testing.standin_slack.payloads import event_callback

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


class Faults(StandInCore):
    """Test controls that make Slack misbehave; reset() forgets them all (a posting limit stays, its buckets full)."""

    # failed calls and downloads -----------------------------------------------------------------------

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

    # outages ------------------------------------------------------------------------------------------

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

    # slow methods -------------------------------------------------------------------------------------

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

    # permanent error states ---------------------------------------------------------------------------

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

    # posting limit ------------------------------------------------------------------------------------

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


def _reset_connection(transport: asyncio.BaseTransport | None) -> None:
    """Close a connection with a TCP RST (SO_LINGER 0), not a FIN: the client sees "connection reset"."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]
