"""Socket Mode: apps.connections.open, the websocket, envelopes and their acks.

deliver_event is here too: Slack pushes an event over the socket unless the app has set an HTTP request URL.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
from aiohttp import WSCloseCode, WSMsgType, web

from bot.testing.standin_slack.common import JsonDict
from bot.testing.standin_slack.core import StandInCore
from bot.testing.standin_slack.payloads import post_signed


class SocketMode(StandInCore):
    """Envelopes pushed to the newest connection, queued while none is open, acks recorded."""

    def deliver_event(self, body: Mapping[str, Any], *, kind: str = "event") -> httpx.Response | str:
        """Send an event as Slack does: signed POST to request_url (HTTP mode), else a Socket Mode envelope."""
        if self.request_url is not None:
            return post_signed(self.request_url, body, kind=kind, signing_secret=self.signing_secret)
        envelope = {"event": "events_api", "form": "slash_commands", "interactive": "interactive"}[kind]
        return self.send_envelope(envelope, body)

    def _apps_connections_open(self, params: JsonDict) -> JsonDict:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        return {
            "url": f"ws://127.0.0.1:{self.url.rsplit(':', 1)[1]}/link/?ticket={ticket}&app_id={self.app_id}"
        }

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
