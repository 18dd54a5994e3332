"""The Bolt app and the HTTP front around it: the one module of bot/ that knows the listeners (handlers/).

`Services` is the listeners' own dataclass (handlers.services), named here so that the composition root can build
it without importing handlers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.payload_utils import is_slash_command
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import handlers
from bot import metrics
from bot.settings import Settings
from bot.slack.guard import MAX_REQUEST_BYTES, REFUSALS, BodyLimit, signature_problem
from bot.store.replays import Replays
from handlers import Services

if TYPE_CHECKING:
    # Imported where used: SQLAlchemy and the OAuth stores cost ~15 MB and are needed only with OAuth.
    from bot.store.installations import Installations

__all__ = [
    "ProvideServices", "ReplayGuard", "Served", "Services", "SingleWorkspaceAuthorize", "create_app", "create_asgi",
    "create_metrics_asgi", "replay_key",
]

log = logging.getLogger(__name__)

# Interactions that act (each carries a trigger_id); block_suggestion (a menu's options) only reads, so it may repeat.
_INTERACTIONS = frozenset({
    "block_actions", "view_submission", "view_closed", "shortcut", "message_action", "interactive_message",
})


class ProvideServices(AsyncMiddleware):
    """Puts the listeners' collaborators in every request's context, where each listener takes them from."""

    def __init__(self, services: Services):
        self.services = services

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        req.context["services"] = self.services
        return await next()


def replay_key(req: AsyncBoltRequest) -> str | None:
    """What makes this command or interaction the one it is: its trigger_id (Slack issues one per press, command
    and submission), else a hash of its signed timestamp and body; None for what is not a command or interaction
    (events are deduplicated by the job store, by event and file)."""
    body = req.body
    if not (is_slash_command(body) or body.get("type") in _INTERACTIONS):
        return None
    trigger = body.get("trigger_id")
    if isinstance(trigger, str) and trigger:
        return f"trigger:{trigger}"
    timestamp = (req.headers.get("x-slack-request-timestamp") or [""])[0]
    signed = req.raw_body or json.dumps(body, sort_keys=True)  # Socket Mode: no raw body, the payload itself
    return "body:" + hashlib.sha256(f"{timestamp}:{signed}".encode()).hexdigest()


class ReplayGuard(AsyncMiddleware):
    """Runs each command and interaction once: a request whose key (replay_key) was taken within Slack's window,
    by this process or any replica sharing the database, is acknowledged (200, empty) and does nothing."""

    def __init__(self, replays: Replays):
        self.replays = replays

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        key = replay_key(req)
        if key is not None and not await self.replays.first(key):
            log.info("a command or interaction arrived again (%s): acknowledged, not run twice", key.split(":")[0])
            return BoltResponse(status=200, body="")
        return await next()


def create_app(
    settings: Settings,
    *,
    client: AsyncWebClient,
    services: Services,
    replays: Replays | None = None,
    installations: Installations | None = None,
    oauth_client: AsyncWebClient | None = None,
    authorize: SingleWorkspaceAuthorize | None = None,
) -> AsyncApp:
    """Build the Bolt app; no network is touched until the first request arrives.

    `client` is what listeners get: it serves the acknowledgement path (views.open), so it must not retry and
    must time out well inside Slack's 3 seconds. With `installations` (OAuth mode) it holds no token: Bolt gives
    each request a copy holding its workspace's token, and serves /slack/install and /slack/oauth_redirect;
    `oauth_client` calls oauth.v2.access (off the acknowledgement path, so with a longer limit). `services` are what
    the listeners use; with `services.on_uninstalled` (OAuth mode) they also hear of workspaces leaving. With
    `replays`, each command and interaction runs once however often its signed request is sent (ReplayGuard).
    """
    oauth: dict[str, Any] = {"authorize": authorize} if authorize is not None else {}
    if installations is not None:
        from bot.slack.oauth import authorize, oauth_flow

        flow_client = oauth_client or client
        oauth = {
            "oauth_flow": oauth_flow(settings, installations, flow_client),
            "installation_store": installations.store,
            "installation_store_bot_only": True,
            "authorize": authorize(settings, installations, flow_client),
        }
    app = AsyncApp(
        client=client,
        signing_secret=settings.slack_signing_secret.get() if settings.slack_signing_secret else "",
        # Listeners run before the acknowledgement is sent, so a job is stored before Slack hears "200".
        # They only store and queue; the slow work happens on JobRunner's workers.
        process_before_response=True,
        ignoring_self_events_enabled=True,
        **oauth,
    )
    # After Bolt's own middleware (signature, authorization): only verified requests are remembered or reach the
    # services.
    if replays is not None:
        app.use(ReplayGuard(replays))
    app.use(ProvideServices(services))
    handlers.register(app, uninstalls=services.on_uninstalled is not None)
    return app


class SingleWorkspaceAuthorize(AsyncAuthorize):
    """Bolt's authorization for one workspace (SLACK_BOT_TOKEN), answered from one auth.test made before serving.

    Bolt's own single-workspace authorization caches auth.test lazily and without a lock: every event arriving
    before the first answer makes its own call (200 calls for a burst of 200 shares, measured).
    """

    def __init__(self, token: str):
        self.token = token
        self.result: AuthorizeResult | None = None

    def remember(self, auth_test: AsyncSlackResponse) -> None:
        """The answer of the start-up auth.test (Runtime.check_token), used for every request from now on."""
        self.result = AuthorizeResult.from_auth_test_response(auth_test_response=auth_test, bot_token=self.token)

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult | None:
        if self.result is None:  # only a request served before start-up's check (the tests' own apps)
            self.remember(await context.client.auth_test(token=self.token))
        return self.result


class Served(Protocol):
    """What the HTTP front needs of a running bot (bot.runtime.Runtime)."""

    @property
    def app(self) -> AsyncApp: ...

    @property
    def settings(self) -> Settings: ...

    def health(self) -> str | None: ...


def create_asgi(runtime: Served, *, slack: bool = True, max_body: int = MAX_REQUEST_BYTES) -> BodyLimit:
    """The HTTP front on PORT: POST /slack/events (HTTP mode only) and GET /healthz; /metrics is served on a port of
    its own (create_metrics_asgi).

    OAuth mode adds GET /slack/install and /slack/oauth_redirect in both modes: Slack sends the installer's browser
    to this port in Socket Mode too (Bolt serves installs over HTTP only). No request body over `max_body` bytes
    gets in (bot.slack.guard.BodyLimit), and Slack's signature is checked on the raw bytes before Bolt parses them.
    """

    async def healthz(request: Request) -> Response:
        problem = runtime.health()
        if problem is not None:
            return JSONResponse({"ok": False, "status": problem}, status_code=503)
        return JSONResponse({"ok": True})

    routes = [Route("/healthz", healthz, methods=["GET"])]
    if slack:
        handler = AsyncSlackRequestHandler(runtime.app)
        secret = runtime.settings.slack_signing_secret
        signing_secret = secret.get() if secret else ""

        async def slack_events(request: Request) -> Response:
            problem = signature_problem(request.headers, await request.body(), signing_secret, time.time())
            if problem is not None:
                client = request.client.host if request.client else "?"
                REFUSALS.warning(log, problem, "refused a request to /slack/events from %s: %s", client, problem)
                return JSONResponse({"error": "invalid request"}, status_code=401)
            return await handler.handle(request)  # Bolt reads the same body again (Starlette keeps it)

        routes.insert(0, Route("/slack/events", slack_events, methods=["POST"]))
    flow = runtime.app.oauth_flow
    if flow is not None:
        installs = AsyncSlackRequestHandler(runtime.app)

        async def slack_install(request: Request) -> Response:
            return await installs.handle(request)

        routes += [Route(path, slack_install, methods=["GET"]) for path in (flow.install_path, flow.redirect_uri_path)]
    return BodyLimit(Starlette(routes=routes), max_body)


def create_metrics_asgi() -> BodyLimit:
    """GET /metrics alone, for the metrics port (METRICS_HOST:METRICS_PORT, loopback unless set otherwise).

    The page is what is in memory: nothing here touches the database (the queue and outbox depths are refreshed by
    bot.work.gauges on the processes that run jobs).
    """

    async def metrics_page(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, headers={"Content-Type": content_type})

    return BodyLimit(Starlette(routes=[Route("/metrics", metrics_page, methods=["GET"])]), 0)
