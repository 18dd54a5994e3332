"""The real bot on loopback against the Slack and TRTC stand-ins, driven exactly as Slack drives it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bot.runtime import Runtime, build_runtime
from bot.settings import Settings, load_settings
from bot.store.database import SqliteConnection
from bot.testing.driver import InProcessBot, free_port
from bot.testing.driver import bot_environ as standin_environ
from bot.testing.standin_slack import SlackStandIn, post_signed
from bot.testing.standin_trtc import TrtcStandIn

BOT_TOKEN = "xoxb-harness-stand-in-bot-token"
APP_TOKEN = "xapp-harness-stand-in-app-token"
SIGNING_SECRET = "harness-signing-secret-5f1e"
SECRET_ID = "AKID-harness-stand-in-id"
SECRET_KEY = "harness-tencent-secret-key-9c2d"
APP_ID = 1400123456

T = TypeVar("T")


def wanted_database() -> str:
    """The database the bots of this test run must use: "postgresql" in scripts/test's second pass, else "sqlite"."""
    return "postgresql" if os.environ.get("TEST_DATABASE") == "postgresql" else "sqlite"


def check_started_on_wanted_database(startup_log: str) -> None:
    """Fail unless the bot's own start-up line ("role: ...; database: URL") names the database of this pass."""
    lines = [line for line in startup_log.splitlines() if "; database: " in line]
    assert lines, f"the bot logged no start-up line naming its database:\n{startup_log[-2000:]}"
    scheme = lines[-1].split("; database: ", 1)[1].split(":", 1)[0]
    wanted = wanted_database()
    assert scheme == wanted, f"the bot started on {scheme}, this pass is for {wanted}: {lines[-1]}"


class _LogLines(logging.Handler):
    """Collects the formatted records of one logger while a bot starts."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


FAIR_USE_KEYS = (
    "MAX_JOBS_PER_USER", "MAX_JOBS_PER_WORKSPACE", "SAYS_PER_MINUTE_PER_USER", "SAYS_PER_MINUTE_PER_WORKSPACE",
    "MAX_VOICES_PER_USER", "MAX_VOICES_PER_WORKSPACE",
)


def bot_environ(slack: SlackStandIn, trtc: TrtcStandIn, db_path: Path, **extra: str) -> dict[str, str]:
    """The environment a bot aimed at the stand-ins runs with in tests."""
    # CONSENT=attested: most tests are about what happens after consent; tests/test_consent.py sets "ask".
    # PREVIEW=off: most tests count VoiceClone requests and messages; tests/test_voices.py sets "on".
    # The fair-use limits off: many tests share one user and one bot per module; tests/test_fair_use.py and
    # tests/test_voice_cap.py set them (the defaults users get, written out).
    defaults = {
        "TRTC_TIMEOUT": "5", "SHUTDOWN_GRACE_SECONDS": "10", "CONSENT": "attested", "PREVIEW": "off",
        **{key: "0" for key in FAIR_USE_KEYS},
    }
    return standin_environ(slack, trtc, db_path, **{**defaults, **extra})


@dataclass
class BotHarness:
    """Stand-ins plus the bot serving HTTP in a background thread with its own event loop."""

    tmp: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    pace_interval: float = 0.0
    # 0: a Tencent error is answered after the client's own retries (the outage tests wait instead).
    tencent_wait: float = 0.0
    max_backoff: float | None = None
    # How often the queue and outbox depths on /metrics are read (the bot's default: every 5 s).
    gauge_interval: float = 0.2
    slack: SlackStandIn = field(init=False)
    trtc: TrtcStandIn = field(init=False)
    settings: Settings = field(init=False)
    runtime: Runtime = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.slack = SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN, signing_secret=SIGNING_SECRET)
        self.trtc = TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._bot: InProcessBot | None = None
        self.http = httpx.Client(timeout=30)
        self._postgres: Any = None

    # -- life cycle -----------------------------------------------------------------------------------

    def start(self) -> BotHarness:
        """Start stand-ins and the bot; return once /healthz answers 200."""
        self.slack.start()
        self.trtc.start()
        self.port = free_port()
        extra = dict(self.extra_env)
        if os.environ.get("TEST_DATABASE") == "postgresql" and "DATABASE_URL" not in extra:
            # The same tests on PostgreSQL (scripts/test runs a selection this way): a database per bot.
            from support.postgres import fresh_database

            self._postgres = fresh_database()
            extra.setdefault("DATA_DIR", str(self.tmp / "data"))
            extra["DATABASE_URL"] = self._postgres.__enter__()
        env = bot_environ(self.slack, self.trtc, self.tmp / "jobs.db", **extra)
        self.settings = load_settings(environ=env)
        startup = _LogLines()
        app_log = logging.getLogger("bot.runtime")
        app_log.addHandler(startup)
        level = app_log.level
        app_log.setLevel(logging.INFO)
        try:
            self._thread.start()
            asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=20)
        finally:
            app_log.removeHandler(startup)
            app_log.setLevel(level)
        if "DATABASE_URL" not in self.extra_env or wanted_database() == "postgresql":
            check_started_on_wanted_database("\n".join(startup.lines))
        return self

    async def _serve(self) -> None:
        # Built here, on the loop that serves it, with the harness's knobs (pacing, backoff, downloads folder);
        # the driver then serves and stops it as it does for the demo.
        downloads = self.tmp / "downloads"
        downloads.mkdir(exist_ok=True)
        self.runtime = build_runtime(
            self.settings, pace_interval=self.pace_interval, tencent_wait=self.tencent_wait,
            max_backoff=self.max_backoff, temp_dir=downloads, gauge_interval=self.gauge_interval,
        )
        self._bot = InProcessBot(self.settings, self.port, self.runtime)
        await self._bot.start()

    def stop(self) -> None:
        """Graceful stop of the bot, then the stand-ins."""
        if self._bot is not None:
            asyncio.run_coroutine_threadsafe(self._bot.stop(), self._loop).result(timeout=30)
            self._bot = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.http.close()
        self.slack.stop()
        self.trtc.stop()
        if self._postgres is not None:
            self._postgres.__exit__(None, None, None)
            self._postgres = None

    def __enter__(self) -> BotHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- driving --------------------------------------------------------------------------------------

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one statement on the bot's own database (SQLite or PostgreSQL, `?` marks); return its rows, readable
        by position and by column name (sqlite3.Row's way)."""
        return self.runtime.db.call(lambda conn: _raw_sql(conn, statement, params))

    @property
    def url(self) -> str:
        """The bot's Slack request URL."""
        return f"http://127.0.0.1:{self.port}/slack/events"

    @property
    def metrics_port(self) -> int:
        """The port of the bot's /metrics (METRICS_PORT, a free one per bot: bot_environ), never the Slack port."""
        return self.settings.metrics_port

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def share(
        self,
        content: bytes,
        name: str,
        mimetype: str,
        filetype: str,
        *,
        text: str = "",
        channel: str = "C0GENERAL",
        channel_type: str = "channel",
        thread_ts: str | None = None,
        file_extra: dict[str, Any] | None = None,
        retry_num: int | None = None,
    ) -> tuple[httpx.Response, dict[str, Any]]:
        """Upload a file to the Slack stand-in and deliver the file_share event to the bot."""
        file = self.slack.add_file(content, name, mimetype, filetype, **(file_extra or {}))
        body = self.slack.user_message(
            channel, "U0USER", [file], text=text, thread_ts=thread_ts, channel_type=channel_type
        )
        return self.deliver(body, retry_num=retry_num), body

    def deliver(self, body: dict[str, Any], *, kind: str = "event", retry_num: int | None = None) -> httpx.Response:
        """Send a signed request exactly as Slack does."""
        return post_signed(
            self.url,
            body,
            kind=kind,
            signing_secret=SIGNING_SECRET,
            retry_num=retry_num,
            retry_reason="http_timeout" if retry_num else None,
        )

    def wait_final(self, channel: str, ts: str, timeout: float = 60) -> str:
        """Wait for the share's final reaction; return it ('white_check_mark' or 'x')."""
        finals = ("white_check_mark", "x")
        ok = self.slack.wait_for(lambda: any(r in self.slack.reactions(channel, ts) for r in finals), timeout)
        assert ok, f"no final answer; calls: {[c[1] for c in self.slack.calls]}"
        return next(r for r in finals if r in self.slack.reactions(channel, ts))

    def replies(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The bot's messages in the thread of `ts` (current state, after edits)."""
        return [m for m in self.slack.thread(channel, ts) if m.get("ts") != ts]

    def drain(self, timeout: float = 60) -> None:
        """Wait until the bot has no queued or running job."""
        asyncio.run_coroutine_threadsafe(self.runtime.drain(timeout), self._loop).result(timeout + 5)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coroutine` on the bot's event loop (beside its requests and workers); its future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def wait(self, predicate: Callable[[], bool], timeout: float = 30) -> bool:
        """Wait on the Slack stand-in until `predicate` holds."""
        return self.slack.wait_for(predicate, timeout)


class _Row(tuple):
    """A PostgreSQL row readable like sqlite3.Row: by position, by column name, and keys()."""

    names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self.names.index(key) if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self.names)


def _raw_sql(conn: Any, statement: str, params: tuple[Any, ...]) -> list[Any]:
    """A test's own statement on the store's connection, below the stores' named statements (tests only)."""
    if isinstance(conn, SqliteConnection):
        cursor = conn.raw.cursor()
        cursor.row_factory = sqlite3.Row
        return cursor.execute(statement, params).fetchall()
    # The tests write SQLite's `?` marks; psycopg takes `%s` (no test statement has a literal `?` or `%`).
    cursor = conn.raw.cursor(row_factory=lambda cur: _pg_row([c.name for c in cur.description or ()]))
    cursor.execute(statement.replace("?", "%s"), params)
    return cursor.fetchall() if cursor.description else []


def _pg_row(names: list[str]) -> Callable[[Any], _Row]:
    def make(values: Any) -> _Row:
        row = _Row(values)
        row.names = tuple(names)
        return row

    return make
