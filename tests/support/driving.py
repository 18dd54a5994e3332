"""Helpers for the reliability, security and fuzz tests: the bot as a real subprocess, a foreign file host,
the job table as stored, and what a thread looks like to the user."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bot.testing import driver
from bot.testing.standin_slack import SlackStandIn, post_signed
from bot.testing.standin_trtc import TrtcStandIn
from support.harness import (
    APP_ID,
    APP_TOKEN,
    BOT_TOKEN,
    SECRET_ID,
    SECRET_KEY,
    SIGNING_SECRET,
    bot_environ,
    check_started_on_wanted_database,
    wanted_database,
)

FINAL_REACTIONS = ("white_check_mark", "x")
WORKING = "hourglass_flowing_sand"


@contextlib.contextmanager
def standins(max_rps: int | None = None) -> Iterator[tuple[SlackStandIn, TrtcStandIn]]:
    """A running Slack stand-in and TRTC stand-in with the harness's credentials."""
    slack = SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN, signing_secret=SIGNING_SECRET)
    trtc = TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID, max_rps=max_rps)
    slack.start()
    trtc.start()
    try:
        yield slack, trtc
    finally:
        slack.stop()
        trtc.stop()


class BotProcess(driver.BotProcess):
    """The driver's `python -m bot run` child process, aimed at `slack` and `trtc`, with what tests look at: its
    downloads folder, its database (a PostgreSQL one of its own in scripts/test's PostgreSQL pass), and Slack's
    requests delivered to it."""

    def __init__(
        self,
        slack: SlackStandIn,
        trtc: TrtcStandIn,
        tmp: Path,
        *,
        socket_mode: bool = False,
        role: str = "all",
        **env: str,
    ):
        self.slack = slack
        self.tmp = tmp
        self.db_path = tmp / "jobs.db"
        # The bot downloads into tempfile.gettempdir(), which TMPDIR points here: tests can see leftovers.
        self.temp_dir = tmp / "downloads"
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.socket_mode = socket_mode
        environ = {
            **bot_environ(slack, trtc, self.db_path),
            "PATH": os.environ.get("PATH", ""),
            "TMPDIR": str(self.temp_dir),
            "PYTHONUNBUFFERED": "1",
            **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ},
            **({"SLACK_APP_TOKEN": APP_TOKEN} if socket_mode else {}),
            **env,
        }
        super().__init__(environ, tmp, role=role, http=not socket_mode)
        self._postgres: Any = None
        if wanted_database() == "postgresql" and "DATABASE_URL" not in env:
            # scripts/test's PostgreSQL pass: a database of its own, kept across restarts, dropped by close().
            from support.postgres import fresh_database

            self._postgres = fresh_database()
            self.env["DATABASE_URL"] = self._postgres.__enter__()

    @property
    def database(self) -> Path | str:
        """The bot's database: its SQLite file, or its postgresql:// URL (read_jobs and read_rows take either)."""
        url = self.env.get("DATABASE_URL", "")
        return url if url.startswith("postgresql") else self.db_path

    def start(self, timeout: float = 20.0, ready: Callable[[], bool] | None = None) -> BotProcess:
        """Spawn the bot and return once it serves (/healthz 200, or in Socket Mode a new connection), having
        checked that its start-up line names the database this test pass is for."""
        if self.socket_mode and ready is None:
            sockets_before = self.slack.connection_count
            ready = lambda: self.slack.wait_for(lambda: self.slack.connection_count > sockets_before, 0.05)  # noqa: E731
        super().start(timeout, ready)
        if self.env.get("DATABASE_URL", "").startswith("sqlite") or wanted_database() == "postgresql":
            check_started_on_wanted_database(self.logs[-1].read_text(errors="replace"))
        return self

    def close(self) -> None:
        """Kill the process if it is still running (test clean-up); drop its PostgreSQL database if it made one."""
        super().close()
        if self._postgres is not None:
            self._postgres.__exit__(None, None, None)
            self._postgres = None

    def __enter__(self) -> BotProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def deliver(self, body: Any, *, kind: str = "event", retry_num: int | None = None) -> httpx.Response:
        """A signed request to the bot, exactly as Slack sends it."""
        return deliver(self.url, body, kind=kind, retry_num=retry_num)

    def share(
        self, content: bytes, name: str, mimetype: str, filetype: str, **kwargs: Any
    ) -> tuple[Any, Any]:
        """Upload a file and deliver its file_share event; returns (response, body)."""
        return share(self.slack, self.url, content, name, mimetype, filetype, **kwargs)


def deliver(url: str, body: Any, *, kind: str = "event", retry_num: int | None = None) -> httpx.Response:
    """A signed request to the bot at `url`."""
    return post_signed(
        url,
        body,
        kind=kind,
        signing_secret=SIGNING_SECRET,
        retry_num=retry_num,
        retry_reason="http_timeout" if retry_num else None,
    )


def share(
    slack: SlackStandIn,
    url: str,
    content: bytes,
    name: str,
    mimetype: str,
    filetype: str,
    *,
    channel: str = "C0GENERAL",
    text: str = "",
    file_extra: dict[str, Any] | None = None,
    retry_num: int | None = None,
) -> tuple[httpx.Response, dict[str, Any]]:
    """Upload a file to the Slack stand-in and deliver the file_share event to the bot at `url`."""
    file = slack.add_file(content, name, mimetype, filetype, **(file_extra or {}))
    body = slack.user_message(channel, "U0USER", [file], text=text)
    return deliver(url, body, retry_num=retry_num), body


def modal_values(file: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The state of a filled-in `/clone` form: one recording, consent given."""
    return {
        "audio": {"audio": {"type": "file_input", "files": [file]}},
        "name": {"name": {"type": "plain_text_input", "value": name}},
        "text": {"text": {"type": "plain_text_input", "value": None}},
        "language": {"language": {"type": "static_select", "selected_option": None}},
        "model": {"model": {"type": "static_select", "selected_option": None}},
        "consent": {"consent": {"type": "checkboxes", "selected_options": [{"value": "yes"}]}},
    }


def share_key(body: dict[str, Any]) -> str:
    """The job store's dedupe key for the (single) file of a file_share body."""
    event = body["event"]
    return f"share:{event['channel']}:{event['ts']}:{event['files'][0]['id']}"


def where(body: dict[str, Any]) -> tuple[str, str]:
    """(channel, ts) of a share."""
    return body["event"]["channel"], body["event"]["ts"]


def is_final(slack: SlackStandIn, channel: str, ts: str) -> bool:
    """True once the share carries a final reaction."""
    return any(r in slack.reactions(channel, ts) for r in FINAL_REACTIONS)


def wait_finals(slack: SlackStandIn, bodies: list[dict[str, Any]], timeout: float = 60) -> None:
    """Wait until every share carries a final reaction."""
    ok = slack.wait_for(lambda: all(is_final(slack, *where(b)) for b in bodies), timeout)
    missing = [where(b) for b in bodies if not is_final(slack, *where(b))]
    assert ok, f"no final answer for {missing}"


def replies(slack: SlackStandIn, channel: str, ts: str) -> list[dict[str, Any]]:
    """The bot's messages in the thread of `ts`, as they are now (after edits)."""
    return [m for m in slack.thread(channel, ts) if m.get("ts") != ts]


def reply_text(message: dict[str, Any]) -> str:
    """Everything a user can read in a message: its text and its blocks."""
    return message.get("text", "") + "\n" + json.dumps(message.get("blocks", []), ensure_ascii=False)


def final_adds(slack: SlackStandIn, channel: str, ts: str) -> int:
    """How many successful or failed final reactions the bot asked Slack to add to a share."""
    return sum(
        1
        for call in slack.calls_to("reactions.add")
        if call.get("channel") == channel
        and call.get("timestamp") == ts
        and call.get("name") in FINAL_REACTIONS
    )


def assert_one_final_answer(slack: SlackStandIn, body: dict[str, Any]) -> dict[str, Any]:
    """Exactly one bot message in the share's thread, one final reaction (added once); return the message."""
    channel, ts = where(body)
    thread = replies(slack, channel, ts)
    assert len(thread) == 1, [m.get("text") for m in thread]
    reactions = slack.reactions(channel, ts)
    assert len([r for r in reactions if r in FINAL_REACTIONS]) == 1 and WORKING not in reactions, reactions
    assert final_adds(slack, channel, ts) == 1
    return thread[0]


def read_rows(database: Path | str, sqlite_sql: str, postgres_sql: str, params: tuple[Any, ...] = ()) -> list[dict]:
    """Rows from the bot's database (a SQLite file's path, or a postgresql:// URL), read with a connection of our
    own (the bot may be running or dead); each dialect's statement is written for it."""
    if isinstance(database, str) and database.startswith("postgresql"):
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(database, row_factory=dict_row, connect_timeout=10) as conn:
            return list(conn.execute(postgres_sql, params).fetchall())
    conn = sqlite3.connect(database, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sqlite_sql, params)]
    finally:
        conn.close()


def read_jobs(database: Path | str) -> list[dict[str, Any]]:
    """Every row of the job table (`database`: a SQLite path or a postgresql:// URL, as BotProcess.database)."""
    return read_rows(database, "SELECT * FROM jobs ORDER BY id", "SELECT * FROM jobs ORDER BY id")


def wait_jobs(db_path: Path | str, statuses: set[str], count: int | None = None, timeout: float = 30) -> bool:
    """Poll the job table until every job has one of `statuses` (and there are `count` jobs, if given).

    Polled: the bot's database gives no event to wait on.
    """
    deadline = time.monotonic() + timeout
    while True:
        jobs = read_jobs(db_path)
        if jobs and {j["status"] for j in jobs} <= statuses and count in (None, len(jobs)):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def jobs_by_key(db_path: Path | str) -> dict[str, dict[str, Any]]:
    """The job table keyed by dedupe key."""
    return {row["dedupe_key"]: row for row in read_jobs(db_path)}


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any half-open window [t, t + window)."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


class ForeignHost:
    """A loopback HTTP server posing as a host that is not Slack's; records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                host.requests.append((self.path, dict(self.headers)))
                body = b"ID3" + bytes(4096)
                self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ForeignHost:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def ffmpeg_recorder(bin_dir: Path, log: Path, real: str) -> Path:
    """An `ffmpeg` first on PATH that runs the real one and logs when each run starts and ends."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "start $$ $(date +%s.%N)" >> "{log}"\n'
        f'"{real}" "$@"\n'
        "rc=$?\n"
        f'echo "end $$ $(date +%s.%N)" >> "{log}"\n'
        "exit $rc\n"
    )
    script.chmod(0o755)
    return script


def max_overlap(log: Path) -> tuple[int, int]:
    """(most ffmpeg runs alive at once, runs seen) from an ffmpeg_recorder log."""
    events = []
    for line in log.read_text().splitlines():
        kind, _, stamp = line.split()
        events.append((float(stamp), 0 if kind == "end" else 1))
    alive = best = 0
    for _, starts in sorted(events):  # at equal times an end sorts first
        alive += 1 if starts else -1
        best = max(best, alive)
    return best, sum(1 for _, s in events if s)
