"""The app factory and the runtime around it: one Bolt app, served over HTTP or Socket Mode."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.authorization.async_single_team_authorization import AsyncSingleTeamAuthorization
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import handlers
from bot import metrics
from bot.settings import Settings
from bot.slack.pacing import SLACK_RATES, Pacer, Rate
from bot.slack.replies import Replies
from bot.slack.sender import Sender
from bot.slack.workspaces import OUTBOX, Workspaces, create_web_client
from bot.store.audit import Audit
from bot.store.database import Database, PostgresDatabase, open_database
from bot.store.jobs import JOBS_CHANNEL, QUEUED, JobStore
from bot.store.leader import Leadership
from bot.store.library import VoiceLibrary
from bot.store.outbox import OUTBOX_CHANNEL, Outbox
from bot.store.prepared import PreparedAudio
from bot.store.uninstall import Uninstaller
from bot.store.wakeup import Listener
from bot.tencent.limiter import SlidingWindowLimiter
from bot.tencent.redis_limiter import RedisSlidingWindowLimiter
from bot.tencent.tts import TextToSpeechClient
from bot.tencent.voiceclone import VoiceCloneClient
from bot.work.housekeeping import Housekeeping
from bot.work.runner import JobRunner
from bot.work.voice_service import VoiceService

if TYPE_CHECKING:
    # Imported where used: SQLAlchemy and the OAuth stores cost ~15 MB and are needed only with OAuth.
    from bot.store.installations import Installations

log = logging.getLogger(__name__)

ALL, WEB, WORKER = "all", "web", "worker"
ROLES = (ALL, WEB, WORKER)


def create_app(
    settings: Settings,
    *,
    client: AsyncWebClient,
    runner: JobRunner,
    voices: VoiceService | None = None,
    installations: Installations | None = None,
    oauth_client: AsyncWebClient | None = None,
    on_uninstalled: Uninstaller | None = None,
) -> AsyncApp:
    """Build the Bolt app; no network is touched until the first request arrives.

    `client` is what listeners get: it serves the acknowledgement path (views.open), so it must not retry and
    must time out well inside Slack's 3 seconds. With `installations` (OAuth mode) it holds no token: Bolt gives
    each request a copy holding its workspace's token, and serves /slack/install and /slack/oauth_redirect;
    `oauth_client` calls oauth.v2.access (off the acknowledgement path, so with a longer limit).
    """
    oauth: dict[str, Any] = {}
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
    handlers.register(app, runner=runner, settings=settings, voices=voices, on_uninstalled=on_uninstalled)
    return app


@dataclass
class Runtime:
    """Everything one running bot owns, built from settings; `close()` releases it all."""

    settings: Settings
    db: Database
    store: JobStore
    outbox: Outbox
    client: AsyncWebClient
    trtc: VoiceCloneClient
    http: httpx.AsyncClient
    runner: JobRunner
    sender: Sender
    housekeeping: Housekeeping
    app: AsyncApp
    session: aiohttp.ClientSession | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ack_session: aiohttp.ClientSession | None = None
    voices: VoiceService | None = None
    # OAuth mode: each workspace's installation (None: one workspace, SLACK_BOT_TOKEN).
    installations: Installations | None = None
    # all: everything in this process; web: verify, store, acknowledge; worker: jobs and the Slack outbox.
    role: str = ALL
    leadership: Leadership | None = None
    listener: Listener | None = None
    _grace_until: float = 0.0

    @property
    def works(self) -> bool:
        """True when this process runs jobs (roles all and worker)."""
        return self.role != WEB

    async def start(self) -> None:
        """Start the background work for this role: job workers; the outbox sender and housekeeping when leading."""
        if self.settings.consent == "attested":
            log.info("consent: attested (drops are cloned at once under the workspace's own consent policy)")
        else:
            log.info("consent: ask (nothing is cloned before the uploader presses \"Clone this voice\")")
        log.info("role: %s; database: %s", self.role, self.settings.database_shown)
        if not self.works:
            return
        if isinstance(self.db, PostgresDatabase):
            self.listener = Listener(self.db, {JOBS_CHANNEL: self.runner.wake, OUTBOX_CHANNEL: self.sender.wake})
            self.listener.start()
        await self.runner.start()
        self.leadership = Leadership(self.db, self._lead, self._step_down)
        await self.leadership.start()

    async def _lead(self) -> None:
        self.sender.start()
        self.housekeeping.start()
        if self.voices is not None:
            await self.voices.resume()

    async def _step_down(self) -> None:
        await self.housekeeping.stop()
        # Stopping: what is due goes out in what is left of the grace period; lost leadership: at once.
        await self.sender.stop(max(self._grace_until - time.monotonic(), 1.0) if self._grace_until else 0.2)

    async def close(self) -> None:
        """Stop the workers (within the grace period), then the sender, and close every client."""
        started = time.monotonic()
        self._grace_until = started + max(self.settings.shutdown_grace, 1.0)
        if self.listener is not None:
            self.listener.stop()
        if self.works:
            await self.runner.stop()
        if self.voices is not None:
            await self.voices.stop()
        if self.leadership is not None:
            # The answers of the jobs that just finished go out in what is left of the grace period.
            await self.leadership.stop()
        await self.trtc.aclose()
        if isinstance(self.trtc.limiter, RedisSlidingWindowLimiter):
            await self.trtc.limiter.aclose()
        if self.voices is not None:
            await self.voices.tts.aclose()
        await self.http.aclose()
        if self.session is not None:
            await self.session.close()
        if self.ack_session is not None:
            await self.ack_session.close()
        if self.installations is not None:
            await self.installations.aclose()
        self.db.close()

    async def drain(self, timeout: float = 120.0) -> None:
        """Wait until every job has finished and every answer has been delivered (tests, demo, benchmarks)."""
        async with asyncio.timeout(timeout):
            await self.runner.drain()
            if self.voices is not None:
                await self.voices.drain()
        await self.sender.drain(timeout)

    def health(self) -> str | None:
        """Why the bot cannot do its work right now, or None when it can."""
        if not self.ready.is_set() or (self.works and not self.runner.accepting):
            return "starting or stopping"
        if not self.works:
            return None
        if self.leadership is not None and self.leadership.leading and not self.sender.running:
            return "the Slack outbox sender is not running"
        return self.runner.health()

    async def check_token(self) -> None:
        """Call auth.test once before serving, and hand the answer to Bolt's authorization middleware.

        Bolt caches auth.test lazily and without a lock: every event arriving before the first answer makes its own
        call (200 calls for a burst of 200 shares, measured). Doing it here also fails fast on a bad token.
        OAuth mode has no single token to check (each workspace's is checked once, on its first request): start-up
        creates the installation tables instead.
        """
        if self.installations is not None:
            await self.installations.create_tables()
            return
        result = await self.client.auth_test()
        for middleware in getattr(self.app, "_async_middleware_list", []):
            if isinstance(middleware, AsyncSingleTeamAuthorization) and middleware.auth_test_result is None:
                middleware.auth_test_result = result


def trtc_limiter(settings: Settings) -> SlidingWindowLimiter | RedisSlidingWindowLimiter:
    """TRTC_MAX_RPS for VoiceClone and TextToSpeech together: in Redis for every replica when REDIS_URL is set."""
    if settings.redis_url:
        # A held slot of a process killed mid-call frees itself once no call could still be running.
        limiter = RedisSlidingWindowLimiter.from_url(
            settings.redis_url, settings.trtc_max_rps, 1.0, hold_ttl=settings.trtc_timeout + 1.0 + 5.0
        )
        log.info("TRTC rate limit: %d calls/s shared by every process through Redis at %s",
                 settings.trtc_max_rps, settings.redis_url_shown)
        return limiter
    log.info("TRTC rate limit: %d calls/s in this process (set REDIS_URL to share it between replicas)",
             settings.trtc_max_rps)
    return SlidingWindowLimiter(settings.trtc_max_rps, 1.0)


def build_runtime(
    settings: Settings,
    *,
    pace_interval: float = 1.0,
    workers: int | None = None,
    pacer: Pacer | None = None,
    max_backoff: float | None = None,
    tencent_wait: float = 1800.0,
    role: str = ALL,
) -> Runtime:
    """Wire store, outbox, clients, runner, sender and app together (call inside a running event loop).

    `pace_interval=0` turns Slack pacing off (tests and benchmarks aimed at a stand-in that does not limit);
    `max_backoff` caps the retry delays (tests of outages use a short one); `tencent_wait` is how long a job
    waits out a Tencent outage before answering with the error (0: answer after the client's own retries).
    `role`: all (default), web (acknowledge and store only) or worker (jobs and the outbox; no Slack requests).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role != ALL and not settings.postgres:
        raise ValueError("--role web and --role worker need DATABASE_URL=postgresql://... (SQLite is one process)")
    db = open_database(settings.database_url)
    store = JobStore(db)
    outbox = Outbox(db, ttl_seconds=settings.answer_ttl_hours * 3600)
    session = aiohttp.ClientSession()
    # Clients for three jobs: the ack path must never wait; the outbox retries by itself; the workers'
    # files.info calls may lean on slack_sdk's own retries (bot.slack.workspaces: per workspace, with its token).
    # Its own session: slack_sdk applies `timeout` only to sessions it creates, and Bolt's per-request client
    # reuses this session, so the 2 s limit has to live on the session (on the shared one views.open could take
    # aiohttp's default 5 minutes and the /clone acknowledgement missed Slack's 3 s).
    ack_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
    ack_client = create_web_client(settings, ack_session, retries=False, timeout=2)
    installations = None
    if settings.oauth:
        from bot.store.installations import Installations

        installations = Installations(settings)
    if installations is not None:
        ack_client.token = None  # SLACK_BOT_TOKEN, if also set, belongs to no installed workspace
    workspaces = Workspaces(settings, session, lookup=installations.bot_token if installations else None)
    if pacer is None:
        rates = {**SLACK_RATES, "post": Rate(settings.slack_posts_per_second, SLACK_RATES["post"].burst)}
        pacer = Pacer(rates) if pace_interval > 0 else Pacer({kind: None for kind in SLACK_RATES})
    sender = Sender(
        outbox, lambda team_id: workspaces.client(team_id, OUTBOX), pacer=pacer, max_backoff=max_backoff or 60.0,
        on_token_refused=None if workspaces.single else workspaces.forget,
    )
    outbox.on_change = sender.wake
    trtc = VoiceCloneClient(settings, limiter=trtc_limiter(settings))
    # Downloads never follow redirects: a redirect means Slack's sign-in page (see bot.slack.files).
    http = httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(60, connect=10))
    replies, prepared = Replies(outbox), PreparedAudio(settings.data_path)
    runner = JobRunner(
        settings, store, replies, Audit(db), prepared, workspaces, trtc, http,
        workers=workers, max_backoff=max_backoff or 300.0, tencent_wait=tencent_wait,
    )
    housekeeping = Housekeeping(settings, store, replies, prepared)
    # One TRTC_MAX_RPS cap for VoiceClone and TextToSpeech together: the same limiter.
    tts = TextToSpeechClient(settings, limiter=trtc.limiter)
    voices = VoiceService(settings, VoiceLibrary(db), tts, outbox, workspaces)
    runner.on_cloned = voices.on_cloned
    runner.on_say, voices.enqueue = voices.say_job, runner.accept
    uninstaller = oauth_client = None
    if installations is not None:
        uninstaller = Uninstaller(
            db, prepared, delete_installation=installations.delete_workspace, forget_token=workspaces.forget
        )
        # No retries: a lost answer to oauth.v2.access must not redeem the code twice (Slack: code_already_used).
        oauth_client = create_web_client(settings, session, retries=False, timeout=10)
        oauth_client.token = None
    app = create_app(
        settings, client=ack_client, runner=runner, voices=voices, installations=installations,
        oauth_client=oauth_client, on_uninstalled=uninstaller,
    )
    return Runtime(settings, db, store, outbox, ack_client, trtc, http, runner, sender, housekeeping, app, session,
                   ack_session=ack_session, voices=voices, installations=installations, role=role)


def create_asgi(runtime: Runtime, *, slack: bool = True) -> Starlette:
    """The HTTP front: POST /slack/events (HTTP mode only), GET /healthz and GET /metrics.

    OAuth mode adds GET /slack/install and /slack/oauth_redirect in both modes: Slack sends the installer's browser
    to this port in Socket Mode too (Bolt serves installs over HTTP only).
    """

    async def healthz(request: Request) -> Response:
        problem = runtime.health()
        if problem is not None:
            return JSONResponse({"ok": False, "status": problem}, status_code=503)
        return JSONResponse({"ok": True})

    async def metrics_page(request: Request) -> Response:
        metrics.OUTBOX_DEPTH.set(await runtime.outbox.depth())
        metrics.QUEUE_DEPTH.set((await runtime.store.counts()).get(QUEUED, 0))
        body, content_type = metrics.render()
        return Response(body, headers={"Content-Type": content_type})

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics_page, methods=["GET"])]
    if slack:
        handler = AsyncSlackRequestHandler(runtime.app)

        async def slack_events(request: Request) -> Response:
            return await handler.handle(request)

        routes.insert(0, Route("/slack/events", slack_events, methods=["POST"]))
    flow = runtime.app.oauth_flow
    if flow is not None:
        installs = AsyncSlackRequestHandler(runtime.app)

        async def slack_install(request: Request) -> Response:
            return await installs.handle(request)

        routes += [Route(path, slack_install, methods=["GET"]) for path in (flow.install_path, flow.redirect_uri_path)]
    return Starlette(routes=routes)
