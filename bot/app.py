"""The app factory and the runtime around it: one Bolt app, served over HTTP or Socket Mode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import httpx
import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.authorization.async_single_team_authorization import AsyncSingleTeamAuthorization
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import handlers
from bot.jobs import JobStore
from bot.settings import Settings
from bot.trtc import VoiceCloneClient
from bot.worker import JobRunner

log = logging.getLogger(__name__)


def create_web_client(settings: Settings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """The Slack Web API client: SLACK_API_URL, and retries for 429 (Retry-After), 5xx and dropped connections."""
    return AsyncWebClient(
        token=settings.slack_bot_token.get() if settings.slack_bot_token else None,
        base_url=settings.slack_api_url,
        # One session for every call: without it slack_sdk opens (and TLS-handshakes) a connection per call.
        session=session,
        timeout=30,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=3),
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=3),
        ],
    )


def create_app(settings: Settings, *, client: AsyncWebClient, runner: JobRunner) -> AsyncApp:
    """Build the Bolt app; no network is touched until the first request arrives."""
    app = AsyncApp(
        client=client,
        signing_secret=settings.slack_signing_secret.get() if settings.slack_signing_secret else "",
        # Listeners run before the acknowledgement is sent, so a job is stored before Slack hears "200".
        # They only store and queue; the slow work happens on JobRunner's workers.
        process_before_response=True,
        ignoring_self_events_enabled=True,
    )
    handlers.register(app, runner=runner, settings=settings)
    return app


@dataclass
class Runtime:
    """Everything one running bot owns, built from settings; `close()` releases it all."""

    settings: Settings
    store: JobStore
    client: AsyncWebClient
    trtc: VoiceCloneClient
    http: httpx.AsyncClient
    runner: JobRunner
    app: AsyncApp
    session: aiohttp.ClientSession | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self) -> None:
        """Stop the workers (within the grace period) and close every client."""
        await self.runner.stop()
        await self.trtc.aclose()
        await self.http.aclose()
        if self.session is not None:
            await self.session.close()
        self.store.close()

    async def check_token(self) -> None:
        """Call auth.test once before serving, and hand the answer to Bolt's authorization middleware.

        Bolt caches auth.test lazily and without a lock: every event arriving before the first answer makes its own
        call (200 calls for a burst of 200 shares, measured). Doing it here also fails fast on a bad token.
        """
        result = await self.client.auth_test()
        for middleware in getattr(self.app, "_async_middleware_list", []):
            if isinstance(middleware, AsyncSingleTeamAuthorization) and middleware.auth_test_result is None:
                middleware.auth_test_result = result


def build_runtime(settings: Settings, *, pace_interval: float = 1.0, workers: int | None = None) -> Runtime:
    """Wire store, clients, runner and app together (call inside a running event loop)."""
    store = JobStore(settings.database_path)
    session = aiohttp.ClientSession()
    client = create_web_client(settings, session)
    trtc = VoiceCloneClient(settings)
    # Downloads never follow redirects: a redirect means Slack's sign-in page (see bot.slack_files).
    http = httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(60, connect=10))
    runner = JobRunner(settings, store, client, trtc, http, pace_interval=pace_interval, workers=workers)
    app = create_app(settings, client=client, runner=runner)
    return Runtime(settings, store, client, trtc, http, runner, app, session)


def create_asgi(runtime: Runtime) -> Starlette:
    """The HTTP front: POST /slack/events (events, commands, interactivity) and GET /healthz."""
    handler = AsyncSlackRequestHandler(runtime.app)

    async def slack_events(request: Request) -> Response:
        return await handler.handle(request)

    async def healthz(request: Request) -> Response:
        if not runtime.ready.is_set() or not runtime.runner.accepting:
            return JSONResponse({"ok": False, "status": "starting or stopping"}, status_code=503)
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


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
    config = uvicorn.Config(
        create_asgi(runtime),
        host=host,
        port=port or settings.port,
        lifespan="off",
        log_level=settings.log_level.lower() if settings.log_level != "DEBUG" else "info",
        access_log=False,
        # Slack waits 3 s; a deep backlog answered late is worse than a fast 503.
        backlog=2048,
    )
    server = _Server(config)
    await runtime.check_token()
    await runtime.runner.start()
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    runtime.ready.set()
    log.info("listening on http://%s:%s/slack/events", host, config.port)
    try:
        await _wait_either(stop, serving)
    finally:
        runtime.ready.clear()
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await runtime.close()


async def serve_socket(
    settings: Settings, *, stop: asyncio.Event | None = None, runtime: Runtime | None = None
) -> None:
    """Run the bot over Socket Mode until SIGTERM/SIGINT (or `stop`), then shut down gracefully."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    assert settings.slack_app_token is not None
    runtime = runtime or build_runtime(settings)
    stop = stop or _stop_event()
    handler = AsyncSocketModeHandler(runtime.app, settings.slack_app_token.get())
    await runtime.check_token()
    await runtime.runner.start()
    await handler.connect_async()
    runtime.ready.set()
    log.info("connected to Slack over Socket Mode")
    try:
        await stop.wait()
    finally:
        runtime.ready.clear()
        # Stop taking envelopes first, so nothing new is acknowledged while jobs drain.
        await handler.close_async()
        await runtime.close()


async def _wait_either(event: asyncio.Event, task: asyncio.Task[None]) -> None:
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
