"""The bench rig: both stand-ins in this process, the real bot in a child process aimed at them."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.recordings import Recording
from bot.settings import KNOWN_KEYS, OUR_PREFIXES
from bot.tencent.redis_limiter import DEFAULT_KEY, action_key
from bot.testing.driver import BotProcess
from bot.testing.driver import bot_environ as standin_environ
from bot.testing.standin_slack import SLACK_USER_AGENT, SlackStandIn, sign
from bot.testing.standin_trtc import TrtcStandIn

# Fake credentials shared by the stand-ins and the bot (the same shapes tests/support/harness.py uses).
BOT_TOKEN = "xoxb-bench-stand-in-bot-token"
SIGNING_SECRET = "bench-signing-secret-7a3c"
SECRET_ID = "AKID-bench-stand-in-id"
SECRET_KEY = "bench-tencent-secret-key-4e81"
APP_ID = 1400123456
# Each share comes from a person of its own, as a burst across a workspace does: with the fair-use defaults
# (MAX_JOBS_PER_USER=10, MAX_VOICES_PER_USER=10) one user's 200 shares would mostly be refused, by design.
USER = "U0BENCH"
FINAL_REACTIONS = ("white_check_mark", "x")
# Settings the bot reads from its environment are never inherited from whoever runs the bench.
_BOT_KEYS = frozenset(KNOWN_KEYS)

# The machine's PostgreSQL server (trust auth) and Redis, for the scenarios that run the bot as web and worker
# processes (issue 13). The bench creates a database of its own per run on that server and drops it afterwards.
POSTGRES_SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# A Redis database of the bench's own (11, not 0): the bot counts TRTC calls under fixed keys (one per action), so a
# bot of someone else's on database 0 would otherwise share the bench's 20/s (and the bench theirs).
REDIS_SERVER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
# The bot's call counts: one sorted set per TRTC action (and the single key of bots before issue 19, if left over).
REDIS_KEYS = (action_key("VoiceClone"), action_key("TextToSpeech"), DEFAULT_KEY)

# time.time() minus time.monotonic(): the Slack stand-in stamps calls with the first, TRTC's with the second.
WALL_OFFSET = time.time() - time.monotonic()


def to_monotonic(wall: float) -> float:
    """A time.time() reading on the time.monotonic() scale (drift over one bench run is microseconds)."""
    return wall - WALL_OFFSET


def bot_environ(slack: SlackStandIn, trtc: TrtcStandIn, db_path: Path, **extra: str) -> dict[str, str]:
    """The settings of a bot aimed at the stand-ins, as the bench runs it."""
    # The defaults users get, but one: CONSENT=attested, the workspace attests the speakers' consent, so a share is
    # cloned without a button press (with "ask", the default, nothing is cloned until the uploader confirms in
    # Slack; the press scenario sets "ask" and presses). PREVIEW is left at its default, on: every clone is followed
    # by its TextToSpeech preview and that mp3's upload into the thread, as users get it.
    defaults = {
        "TRTC_TIMEOUT": "30",
        "SHUTDOWN_GRACE_SECONDS": "10",
        "LOG_LEVEL": "WARNING",
        "CONSENT": "attested",
    }
    return standin_environ(slack, trtc, db_path, **{**defaults, **extra})


@dataclass
class Share:
    """One file share: the signed event Slack would POST, and when it was sent."""

    channel: str
    ts: str
    body: bytes
    headers: dict[str, str]
    user: str = USER  # who shared it (the speaker, who alone may press its consent button)
    sent_mono: float = 0.0  # time.monotonic() just before sending
    sent_wall: float = 0.0  # time.time() at the same moment


@dataclass
class Rig:
    """Stand-ins in this process plus `python -m bot run --http` as a child process; a context manager.

    `workers=0` (the default): one bot process, `--role all`, on SQLite. `workers=N`: a `--role web` process
    (the one Slack's requests go to: `process`, `port`) plus N `--role worker` processes, all on one fresh
    PostgreSQL database and one DATA_DIR; `redis=True` adds REDIS_URL, so TRTC_MAX_RPS (per action) is one limit
    for all."""

    workdir: Path
    max_rps: int | None = None
    # chat.postMessage per channel in the Slack stand-in: (per second, burst), refused with 429 over it; None: no limit.
    post_limit: tuple[float, int] | None = None
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 0
    redis: bool = False
    slack: SlackStandIn = field(init=False)
    trtc: TrtcStandIn = field(init=False)
    process: subprocess.Popen[bytes] | None = field(init=False, default=None)
    port: int = field(init=False, default=0)
    worker_processes: list[subprocess.Popen[bytes]] = field(init=False, default_factory=list)
    worker_ports: list[int] = field(init=False, default_factory=list)
    database: str | None = field(init=False, default=None)  # the PostgreSQL database created for this rig
    _drivers: list[BotProcess] = field(init=False, default_factory=list)
    _shares: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()  # the bot runs in it: its paths must not be relative to ours
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.slack = SlackStandIn(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, post_limit=self.post_limit)
        self.trtc = TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID, max_rps=self.max_rps)

    @property
    def url(self) -> str:
        """The bot's Slack request URL."""
        return f"http://127.0.0.1:{self.port}/slack/events"

    @property
    def log_path(self) -> Path:
        """Where the bot's (with workers: the web process's) stdout and stderr go."""
        return self.workdir / "bot.log"

    def worker_log(self, index: int) -> Path:
        """Where worker process `index` (1, 2...) writes."""
        return self.workdir / f"worker-{index}.log"

    @property
    def previews(self) -> bool:
        """Whether the bot previews each new voice (PREVIEW, on unless this rig's env turns it off)."""
        return self.env.get("PREVIEW", "on").lower() != "off"

    @property
    def role(self) -> str:
        """The --role of `process`: all, or web when worker processes do the work."""
        return "web" if self.workers else "all"

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """Every bot process: the one Slack's requests go to, then the workers."""
        return [p for p in (self.process, *self.worker_processes) if p is not None]

    def start(self, timeout: float = 30.0) -> Rig:
        """Start the stand-ins and the bot; return once the bot's /healthz answers 200."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # no stand-in thread or bot process outlives a failed start
            raise

    def _start(self, timeout: float) -> Rig:
        self.slack.start()
        self.trtc.start()
        (self.workdir / "tmp").mkdir(exist_ok=True)
        db = self.workdir / "jobs.db"
        for stale in self.workdir.glob("jobs.db*"):
            stale.unlink()
        env = {k: v for k, v in os.environ.items() if k not in _BOT_KEYS and not k.startswith(OUR_PREFIXES)}
        env.update(bot_environ(self.slack, self.trtc, db, **self.env))
        env["TMPDIR"] = str(self.workdir / "tmp")  # the bot's downloads
        if self.workers:
            env["DATABASE_URL"] = self._create_database()
            data = self.workdir / "data"  # one DATA_DIR for every process, as the roles require
            data.mkdir(exist_ok=True)
            env["DATA_DIR"] = str(data)
        if self.redis:
            _clear_redis_key()
            env["REDIS_URL"] = REDIS_SERVER
        # The web (or all) process first, then the workers one at a time: each creates the tables if missing,
        # and concurrent CREATE TABLE IF NOT EXISTS can collide on PostgreSQL.
        self.process, self.port = self._spawn(env, self.role, self.log_path, timeout)
        for index in range(1, self.workers + 1):
            worker, port = self._spawn(env, "worker", self.worker_log(index), timeout)
            self.worker_processes.append(worker)
            self.worker_ports.append(port)
        return self

    def _spawn(
        self, env: dict[str, str], role: str, log_path: Path, timeout: float
    ) -> tuple[subprocess.Popen[bytes], int]:
        """One bot process through the driver the tests and the demo use; returns once it is healthy."""
        driver = BotProcess(env, self.workdir, role=role)
        driver.spawn(log_path)
        assert driver.proc is not None
        self._drivers.append(driver)
        try:
            driver.wait_healthy(timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{_tail(log_path)}") from None
        return driver.proc, driver.port

    def _create_database(self) -> str:
        import psycopg

        name = f"bench_{os.getpid()}_{secrets.token_hex(4)}"
        with psycopg.connect(POSTGRES_SERVER, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.database = name
        return f"{POSTGRES_SERVER.rsplit('/', 1)[0]}/{name}"

    def _drop_database(self) -> None:
        if self.database is None:
            return
        import psycopg

        with psycopg.connect(POSTGRES_SERVER, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        self.database = None

    def stop(self) -> None:
        """SIGTERM every bot process at once (each drains gracefully), then stop the stand-ins and drop the
        database."""
        running = [p for p in self.processes if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.slack.stop()
        self.trtc.stop()
        try:
            self._drop_database()
        finally:
            if self.redis:
                _clear_redis_key()

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the bot's log (and of each worker's)."""
        tails = [_tail(self.log_path, lines)]
        tails += [f"-- worker {i}:\n{_tail(self.worker_log(i), lines)}" for i in range(1, self.workers + 1)]
        return "\n".join(tails)

    def cpu_seconds(self, web_only: bool = False) -> tuple[float, float]:
        """CPU seconds used so far by the bot processes (`web_only`: the one Slack's requests go to), and by
        every process below them: finished ones (ffmpeg runs, reaped) and ones still running (helper processes
        that live as long as the bot), see tree_cpu."""
        assert self.process is not None
        own = children = 0.0
        for process in [self.process] if web_only else self.processes:
            mine, below = tree_cpu(process.pid)
            own += mine
            children += below
        return own, children

    # -- driving --------------------------------------------------------------------------------------

    def file_share(self, channel: str, recording: Recording, name: str | None = None) -> Share:
        """Upload `recording` to the Slack stand-in and build the signed file_share event for it."""
        content = recording.path.read_bytes()
        self._shares += 1
        user = f"{USER}{self._shares:05d}"
        file = self.slack.add_file(
            content, name or recording.name, recording.mimetype, recording.filetype, user=user
        )
        event = self.slack.user_message(channel, user, [file], channel_type="channel")
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "User-Agent": SLACK_USER_AGENT}
        headers.update(sign(body, SIGNING_SECRET))
        return Share(channel, event["event"]["ts"], body, headers, user)

    def deliver(self, share: Share, client: httpx.Client) -> httpx.Response:
        """POST one share to the bot, stamping when it was sent."""
        share.sent_wall, share.sent_mono = time.time(), time.monotonic()
        return client.post(self.url, content=share.body, headers=share.headers)

    def press(
        self, channel: str, message_ts: str, action_id: str, client: httpx.Client, user: str = USER
    ) -> tuple[float, httpx.Response]:
        """POST the signed block_actions of `action_id` in a bot message, pressed by `user` (the sharer); (sent,
        answer)."""
        payload = self.slack.press(channel, message_ts, action_id, user=user)
        body = urlencode({"payload": json.dumps(payload)}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": SLACK_USER_AGENT}
        headers.update(sign(body, SIGNING_SECRET))
        sent = time.monotonic()
        return sent, client.post(self.url, content=body, headers=headers)

    def final_reaction(self, share: Share) -> str | None:
        """The share's final reaction, once there is one."""
        names = self.slack.reactions(share.channel, share.ts)
        return next((r for r in FINAL_REACTIONS if r in names), None)

    def wait_final(self, shares: list[Share], timeout: float) -> bool:
        """Wait until every share has its final reaction."""
        return self.slack.wait_for(lambda: all(self.final_reaction(s) for s in shares), timeout)

    def first_feedback(self, shares: list[Share]) -> dict[str, float]:
        """Per share ts: time.monotonic() of the first reaction on it or bot message in its thread.

        Reactions are the reactions.add calls recorded (the stand-in never limits them); messages are those the
        stand-in stored, timed by their ts, so a post it refused with 429 does not count as feedback."""
        keys = {(s.channel, s.ts) for s in shares}
        first: dict[str, float] = {}
        for call in list(self.slack.calls):
            params = call.params
            key = (params.get("channel"), params.get("timestamp"))
            if call.method == "reactions.add" and key in keys and key[1] not in first:
                first[str(key[1])] = to_monotonic(call.time)
        for ts, messages in self.thread_messages(shares)[0].items():
            posted = min(to_monotonic(float(m["ts"])) for m in messages)
            first[ts] = min(first.get(ts, posted), posted)
        return first

    def thread_messages(self, shares: list[Share]) -> tuple[dict[str, list[dict[str, Any]]], int]:
        """The bot's messages in each share's thread (by the share's ts, as they are now), and how many bot
        messages the shares' channels hold outside those threads."""
        threads = {s.ts for s in shares}
        found: dict[str, list[dict[str, Any]]] = {}
        stray = 0
        for channel in sorted({s.channel for s in shares}):
            for message in self.slack.messages(channel):
                if message.get("user") != self.slack.bot_user_id:
                    continue
                parent = message.get("thread_ts")
                if parent in threads:
                    found.setdefault(str(parent), []).append(message)
                else:
                    stray += 1
        return found, stray

    def bot_metric(self, name: str, **labels: str) -> float:
        """The sum of a counter's samples on every bot process's /metrics whose labels include `labels` (0 when
        absent)."""
        return sum(_metric(driver.metrics_port, name, labels) for driver in self._drivers)

    def worker_metric(self, name: str, **labels: str) -> list[float]:
        """bot_metric of each worker process, in order."""
        return [_metric(driver.metrics_port, name, labels) for driver in self._drivers[1:]]


def _metric(port: int, name: str, labels: dict[str, str]) -> float:
    """`name`'s samples with `labels` on the /metrics of the process whose METRICS_PORT is `port`, summed."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _clear_redis_key() -> None:
    """Delete the bot's TRTC call counts in the bench's Redis database (those keys only, never a flush)."""
    from redis import Redis

    with Redis.from_url(REDIS_SERVER, socket_timeout=5) as client:
        client.delete(*REDIS_KEYS)


@dataclass
class MemoryPeaks:
    """Peak resident memory of the bot process and of its child processes (ffmpeg), in bytes."""

    bot_hwm: int = 0  # the kernel's high-water mark (VmHWM) for the bot: exact, whatever the polling
    bot_sampled: int = 0  # largest RSS seen by polling
    children: int = 0  # largest VmHWM of any child, polled (a child's final read is close to its peak)
    children_seen: int = 0
    samples: int = 0
    tree_sampled: int = 0  # largest RSS of the bot and its children together, polled (helpers that live long count)


class MemorySampler:
    """Polls the bot and its children every `interval` seconds on a thread, keeping the peaks."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peaks = MemoryPeaks()
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peaks.bot_hwm = max(self.peaks.bot_hwm, status_bytes(self.process.pid, "VmHWM"))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            peaks = self.peaks
            peaks.samples += 1
            try:
                peaks.bot_sampled = max(peaks.bot_sampled, self.process.memory_info().rss)
                children = self.process.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            tree = status_bytes(self.process.pid, "VmRSS")
            for child in children:
                self._seen.add(child.pid)
                peaks.children = max(peaks.children, status_bytes(child.pid, "VmHWM"))
                tree += status_bytes(child.pid, "VmRSS")
            peaks.tree_sampled = max(peaks.tree_sampled, tree)
            peaks.children_seen = len(self._seen)


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of process `pid` itself, and of every process below it: the ones it has reaped (the kernel adds
    them to its children's times) plus the ones still alive (a pool of helpers never exits during a run), each
    alive one with what it reaped in turn. A process is in exactly one of those places at any moment."""
    root = psutil.Process(pid)
    try:
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    below = 0.0
    for child in children:
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue  # reaped meanwhile: counted in its parent's children's times below
        below += times.user + times.system + times.children_user + times.children_system
    times = root.cpu_times()
    return times.user + times.system, below + times.children_user + times.children_system


def status_bytes(pid: int, key: str) -> int:
    """A memory figure from /proc/PID/status (VmRSS, VmHWM...) in bytes; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0
