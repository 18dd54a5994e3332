"""The composition root: build_runtime builds every component through its constructor, in dependency order, and
Runtime starts and stops them (the Bolt app is bot.slack.app's, served over HTTP or Socket Mode by bot.serve)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import httpx
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings
from bot.slack.app import Services, SingleWorkspaceAuthorize, create_app
from bot.slack.intake import Intake
from bot.slack.pacing import SLACK_RATES, Pacer, Rate
from bot.slack.replies import Replies
from bot.slack.sender import Sender
from bot.slack.workspaces import OUTBOX, Workspaces, create_web_client
from bot.store.audit import Audit
from bot.store.connection import Listener
from bot.store.database import Database, open_database, serves_many_processes
from bot.store.jobs import JOBS_CHANNEL, JobStore
from bot.store.leader import Leadership
from bot.store.library import VoiceLibrary
from bot.store.outbox import OUTBOX_CHANNEL, Outbox
from bot.store.prepared import PreparedAudio
from bot.store.private import keep_private
from bot.store.replays import Replays
from bot.store.uninstall import Uninstaller
from bot.tencent.limiter import PerActionLimiter
from bot.tencent.tts import TextToSpeechClient
from bot.tencent.voiceclone import VoiceCloneClient
from bot.wake import Wakeup
from bot.work.consent import ConsentButtons
from bot.work.gauges import DepthGauges
from bot.work.housekeeping import Housekeeping
from bot.work.pool import JobQueue
from bot.work.quotas import Quotas
from bot.work.runner import JobRunner
from bot.work.voice_service import VoiceService

if TYPE_CHECKING:
    # Imported where used: SQLAlchemy and the OAuth stores cost ~15 MB and are needed only with OAuth.
    from bot.store.installations import Installations

log = logging.getLogger(__name__)

ALL, WEB, WORKER = "all", "web", "worker"
ROLES = (ALL, WEB, WORKER)


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
    # One workspace (SLACK_BOT_TOKEN): Bolt's authorization, given the start-up auth.test's answer.
    authorize: SingleWorkspaceAuthorize | None = None
    leadership: Leadership | None = None
    listener: Listener | None = None
    # The queue and outbox depths for /metrics, refreshed on a timer by the processes that run jobs.
    gauges: DepthGauges | None = None
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
        # Other processes' writes wake this one's workers and sender (None: no other process writes here).
        self.listener = self.db.listener({JOBS_CHANNEL: self.runner.wake, OUTBOX_CHANNEL: self.sender.wake})
        if self.listener is not None:
            self.listener.start()
        await self.runner.start()
        if self.gauges is not None:
            self.gauges.start()
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
        if self.gauges is not None:
            await self.gauges.stop()
        if self.works:
            await self.runner.stop()
        if self.voices is not None:
            await self.voices.stop()
        if self.leadership is not None:
            # The answers of the jobs that just finished go out in what is left of the grace period.
            await self.leadership.stop()
        await self.trtc.aclose()
        if isinstance(self.trtc.limiter, PerActionLimiter):
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
        """Call auth.test once before serving, and keep the answer for Bolt's authorization (SingleWorkspaceAuthorize).

        Doing it here fails fast on a bad token, and no request waits for it.
        OAuth mode has no single token to check (each workspace's is checked once, on its first request): start-up
        creates the installation tables instead.
        """
        if self.installations is not None:
            await self.installations.create_tables()
            return
        if self.authorize is not None:
            self.authorize.remember(await self.client.auth_test(token=self.authorize.token))


def trtc_limiter(settings: Settings) -> PerActionLimiter:
    """TRTC_MAX_RPS per action (VoiceClone, TextToSpeech), each in its own window as Tencent counts them: in Redis
    for every replica when REDIS_URL is set (a key per action), else in this process."""
    if settings.redis_url:
        # Imported only here: redis-py imports `cryptography` when it is installed (~5 MB a process without Redis).
        from bot.tencent.redis_limiter import RedisSlidingWindowLimiter

        # A held slot of a process killed mid-call frees itself once no call could still be running.
        limiter = RedisSlidingWindowLimiter.per_action_from_url(
            settings.redis_url, settings.trtc_max_rps, 1.0, hold_ttl=settings.trtc_timeout + 1.0 + 5.0
        )
        log.info("TRTC rate limit: %d calls/s per action shared by every process through Redis at %s",
                 settings.trtc_max_rps, settings.redis_url_shown)
        return limiter
    log.info("TRTC rate limit: %d calls/s per action in this process (set REDIS_URL to share it between replicas)",
             settings.trtc_max_rps)
    return PerActionLimiter.in_process(settings.trtc_max_rps, 1.0)


def build_runtime(
    settings: Settings,
    *,
    pace_interval: float = 1.0,
    workers: int | None = None,
    pacer: Pacer | None = None,
    max_backoff: float | None = None,
    tencent_wait: float = 1800.0,
    role: str = ALL,
    temp_dir: str | Path | None = None,
    gauge_interval: float = 5.0,
) -> Runtime:
    """Build every component through its constructor, in dependency order (call inside a running event loop).

    `pace_interval=0` turns Slack pacing off (tests and benchmarks aimed at a stand-in that does not limit);
    `max_backoff` caps the retry delays (tests of outages use a short one); `tencent_wait` is how long a job
    waits out a Tencent outage before answering with the error (0: answer after the client's own retries).
    `role`: all (default), web (acknowledge and store only) or worker (jobs and the outbox; no Slack requests).
    `temp_dir`: where downloads are kept while a job runs (default: the system's temporary folder).
    `gauge_interval`: how often the queue and outbox depths shown on /metrics are read (tests read them sooner).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role != ALL and not serves_many_processes(settings.database_url):
        raise ValueError("--role web and --role worker need DATABASE_URL=postgresql://... (SQLite is one process)")
    db = open_database(settings.database_url)
    try:
        # The database file, its journals and the data folder: readable by this user only, or start-up ends here.
        keep_private(settings.database_url, settings.data_path)
        # What lives on disk before anything that holds a connection: a folder that cannot be made ends start-up
        # with nothing to close.
        prepared = PreparedAudio(settings.data_path)
    except OSError:
        db.close()
        raise
    # The wake-ups come first: what stores work (the outbox, the job queue) and what sleeps until work is due
    # (the sender, the workers) each get the same one, so neither needs the other.
    outbox_due, jobs_due = Wakeup(), Wakeup()
    store = JobStore(db)
    queue = JobQueue(store, jobs_due)
    outbox = Outbox(db, ttl_seconds=settings.answer_ttl_hours * 3600, on_change=outbox_due.ring)
    session = aiohttp.ClientSession()
    # Clients for three jobs: the ack path must never wait; the outbox retries by itself; the workers'
    # files.info calls may lean on slack_sdk's own retries (bot.slack.workspaces: per workspace, with its token).
    # Its own session: slack_sdk applies `timeout` only to sessions it creates, and Bolt's per-request client
    # reuses this session, so the 2 s limit has to live on the session (on the shared one views.open could take
    # aiohttp's default 5 minutes and the /clone acknowledgement missed Slack's 3 s).
    ack_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
    # Tokenless: Bolt gives each request a copy holding its workspace's token (from SLACK_BOT_TOKEN through
    # `authorize`, or from the workspace's installation).
    ack_client = create_web_client(settings, ack_session, anonymous=True, retries=False, timeout=2)
    installations = authorize = None
    if settings.oauth:
        from bot.store.installations import Installations

        installations = Installations(settings)
    elif settings.slack_bot_token:
        authorize = SingleWorkspaceAuthorize(settings.slack_bot_token.get())
    workspaces = Workspaces(settings, session, lookup=installations.bot_token if installations else None)
    if pacer is None:
        rates = {**SLACK_RATES, "post": Rate(settings.slack_posts_per_second, SLACK_RATES["post"].burst)}
        pacer = Pacer(rates) if pace_interval > 0 else Pacer({kind: None for kind in SLACK_RATES})
    sender = Sender(
        outbox, lambda team_id: workspaces.client(team_id, OUTBOX), pacer=pacer, max_backoff=max_backoff or 60.0,
        on_token_refused=None if workspaces.single else workspaces.forget, wakeup=outbox_due,
    )
    trtc = VoiceCloneClient(settings, limiter=trtc_limiter(settings))
    # Downloads never follow redirects: a redirect means Slack's sign-in page (see bot.slack.files).
    http = httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(60, connect=10))
    replies, library = Replies(outbox), VoiceLibrary(db)
    # The same PerActionLimiter: TRTC_MAX_RPS for VoiceClone and another TRTC_MAX_RPS for TextToSpeech.
    tts = TextToSpeechClient(settings, limiter=trtc.limiter)
    # Before the runner: it hands each answered clone and each "say" job to the voices, which queue their
    # "say" jobs through the queue rather than through the runner.
    voices = VoiceService(settings, library, tts, outbox, workspaces, queue=queue)
    audit = Audit(db)
    quotas = Quotas(settings, store, library, audit)
    runner = JobRunner(
        settings, queue, replies, audit, prepared, workspaces, trtc, http, voices=voices, quotas=quotas,
        workers=workers, max_backoff=max_backoff or 300.0, tencent_wait=tencent_wait, temp_dir=temp_dir,
    )
    # Commands and interactions already taken, for every replica (Bolt's middleware checks; housekeeping sweeps).
    replays = Replays(db)
    housekeeping = Housekeeping(settings, store, replies, prepared, replays=replays)
    uninstaller = oauth_client = None
    if installations is not None:
        uninstaller = Uninstaller(
            db, prepared, delete_installation=installations.delete_workspace, forget_token=workspaces.forget
        )
        # No retries: a lost answer to oauth.v2.access must not redeem the code twice (Slack: code_already_used).
        oauth_client = create_web_client(settings, session, anonymous=True, retries=False, timeout=10)
    services = Services(
        intake=Intake(queue, replies), consent=ConsentButtons(store, replies, prepared, runner), voices=voices,
        library=library, outbox=outbox, quotas=quotas, on_uninstalled=uninstaller,
    )
    app = create_app(
        settings, client=ack_client, services=services, installations=installations, oauth_client=oauth_client,
        authorize=authorize, replays=replays,
    )
    return Runtime(settings, db, store, outbox, ack_client, trtc, http, runner, sender, housekeeping, app, session,
                   ack_session=ack_session, voices=voices, installations=installations, role=role,
                   authorize=authorize, gauges=DepthGauges(store, outbox, gauge_interval))
