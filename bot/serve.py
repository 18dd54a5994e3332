"""Serving the app: over HTTP (uvicorn) or Socket Mode, until SIGTERM/SIGINT, then a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from bot.app import Runtime, build_runtime, create_asgi
from bot.settings import Settings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime owns shutdown so jobs can finish first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_http(
    settings: Settings,
    *,
    host: str = "0.0.0.0",
    port: int | None = None,
    stop: asyncio.Event | None = None,
    runtime: Runtime | None = None,
) -> None:
    """Run the bot behind uvicorn until SIGTERM/SIGINT (or `stop`), then shut down gracefully."""
    runtime = runtime or build_runtime(settings)
    stop = stop or _stop_event()
    server = _server(runtime, host, port or settings.port, slack=True)
    await runtime.check_token()
    await runtime.start()
    serving = await _start(server)
    runtime.ready.set()
    log.info("listening on http://%s:%s/slack/events", host, server.config.port)
    try:
        await _wait_either(stop, serving)
    finally:
        runtime.ready.clear()
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await runtime.close()


async def serve_socket(
    settings: Settings,
    *,
    host: str = "0.0.0.0",
    port: int | None = None,
    stop: asyncio.Event | None = None,
    runtime: Runtime | None = None,
) -> None:
    """Run the bot over Socket Mode until SIGTERM/SIGINT (or `stop`), then shut down gracefully."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    assert settings.slack_app_token is not None
    runtime = runtime or build_runtime(settings)
    stop = stop or _stop_event()
    handler = AsyncSocketModeHandler(runtime.app, settings.slack_app_token.get())
    # Socket Mode needs no inbound port for Slack, but orchestrators still probe /healthz and scrape /metrics.
    server = _server(runtime, host, port or settings.port, slack=False)
    await runtime.check_token()
    await runtime.start()
    serving = await _start(server)
    await handler.connect_async()
    runtime.ready.set()
    log.info("connected to Slack over Socket Mode; health on port %s", server.config.port)
    try:
        await _wait_either(stop, serving)
    finally:
        runtime.ready.clear()
        # Stop taking envelopes first, so nothing new is acknowledged while jobs drain.
        await handler.close_async()
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await runtime.close()


def _server(runtime: Runtime, host: str, port: int, *, slack: bool) -> _Server:
    config = uvicorn.Config(
        create_asgi(runtime, slack=slack),
        host=host,
        port=port,
        lifespan="off",
        # No log_config: uvicorn's loggers propagate to ours, so its lines are scrubbed and formatted too.
        log_config=None,
        access_log=False,
        # Slack waits 3 s; a deep backlog answered late is worse than a fast 503.
        backlog=2048,
    )
    return _Server(config)


async def _start(server: _Server) -> asyncio.Task[None]:
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    return serving


async def _wait_either(event: asyncio.Event, task: asyncio.Task[None]) -> None:
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
