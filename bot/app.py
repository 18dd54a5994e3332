"""The app factory and the runtime around it: one Bolt app, served over HTTP or Socket Mode."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import aiohttp
import httpx
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

    async def start(self) -> None:
        """Start the background work: job workers and the Slack outbox sender."""
        await self.runner.start()

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


def create_asgi(runtime: Runtime, *, slack: bool = True) -> Starlette:
    """The HTTP front: POST /slack/events (events, commands, interactivity; HTTP mode only) and GET /healthz."""
    routes = [Route("/healthz", _healthz(runtime), methods=["GET"])]
    if slack:
        handler = AsyncSlackRequestHandler(runtime.app)

        async def slack_events(request: Request) -> Response:
            return await handler.handle(request)

        routes.insert(0, Route("/slack/events", slack_events, methods=["POST"]))
    return Starlette(routes=routes)


def _healthz(runtime: Runtime):  # noqa: ANN202
    async def healthz(request: Request) -> Response:
        if not runtime.ready.is_set() or not runtime.runner.accepting:
            return JSONResponse({"ok": False, "status": "starting or stopping"}, status_code=503)
        return JSONResponse({"ok": True})

    return healthz
