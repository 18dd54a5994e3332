"""The durable job store: every accepted request is a row before Slack gets its acknowledgement."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
UNFINISHED = (QUEUED, RUNNING)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key  TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    event_id    TEXT,
    team_id     TEXT,
    channel     TEXT,
    thread_ts   TEXT,
    share_ts    TEXT,
    user_id     TEXT,
    file_json   TEXT NOT NULL,
    options     TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'queued',
    stage       TEXT,
    status_ts   TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    result      TEXT,
    error       TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""


@dataclass
class NewJob:
    """A request to store: one file to clone, and where to answer."""

    dedupe_key: str
    kind: str
    file: dict[str, Any]
    options: dict[str, Any]
    channel: str | None = None
    thread_ts: str | None = None
    share_ts: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    event_id: str | None = None


@dataclass
class Job:
    """A stored job."""

    id: int
    dedupe_key: str
    kind: str
    file: dict[str, Any]
    options: dict[str, Any]
    status: str
    channel: str | None
    thread_ts: str | None
    share_ts: str | None
    user_id: str | None
    team_id: str | None
    event_id: str | None
    stage: str | None
    status_ts: str | None
    attempts: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: float
    extra: dict[str, Any] = field(default_factory=dict)


class JobStore:
    """SQLite-backed jobs; every call runs on one private thread so the event loop never waits on disk."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        # One thread owns the connection: SQLite connections are not shared across threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobstore")
        self._conn: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # WAL + NORMAL: a committed row survives the process being killed (not a power cut), at a fraction of
        # the cost of a full fsync per acknowledgement.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._conn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._executor.submit(fn, self._conn).result()

    async def add(self, jobs: Iterable[NewJob]) -> list[int]:
        """Store new jobs in one transaction; return the ids of those not seen before (dedupe on key)."""
        items = list(jobs)
        now = time.time()

        def insert(conn: sqlite3.Connection) -> list[int]:
            ids: list[int] = []
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                for job in items:
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO jobs (dedupe_key, kind, event_id, team_id, channel, thread_ts,"
                        " share_ts, user_id, file_json, options, created_at, updated_at)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            job.dedupe_key,
                            job.kind,
                            job.event_id,
                            job.team_id,
                            job.channel,
                            job.thread_ts,
                            job.share_ts,
                            job.user_id,
                            json.dumps(job.file),
                            json.dumps(job.options),
                            now,
                            now,
                        ),
                    )
                    if cur.rowcount == 1 and cur.lastrowid is not None:
                        ids.append(cur.lastrowid)
            return ids

        return await self._run(insert)

    async def get(self, job_id: int) -> Job | None:
        """One job by id."""

        def select(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return _job(row) if row else None

        return await self._run(select)

    async def unfinished(self) -> list[int]:
        """Ids of jobs a previous run left queued or running, oldest first."""

        def select(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE status IN (?, ?) ORDER BY id", UNFINISHED
            ).fetchall()
            return [r["id"] for r in rows]

        return await self._run(select)

    async def update(self, job_id: int, **values: Any) -> None:
        """Set columns of one job (dicts are stored as JSON)."""
        allowed = {"status", "stage", "status_ts", "thread_ts", "channel", "attempts", "result", "error", "file"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown job columns: {sorted(unknown)}")
        columns = {("file_json" if k == "file" else k): v for k, v in values.items()}
        params = [json.dumps(v) if isinstance(v, dict) else v for v in columns.values()]
        assignments = ", ".join(f"{k} = ?" for k in columns)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608 - fixed column names
                (*params, time.time(), job_id),
            )

        await self._run(write)

    async def counts(self) -> dict[str, int]:
        """Jobs per status."""

        def select(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
            return {r["status"]: r["n"] for r in rows}

        return await self._run(select)

    def close(self) -> None:
        """Close the connection and its thread."""
        if self._conn is not None:
            self._call(lambda conn: conn.close())
            self._conn = None
        self._executor.shutdown(wait=True)


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        dedupe_key=row["dedupe_key"],
        kind=row["kind"],
        file=json.loads(row["file_json"]),
        options=json.loads(row["options"]),
        status=row["status"],
        channel=row["channel"],
        thread_ts=row["thread_ts"],
        share_ts=row["share_ts"],
        user_id=row["user_id"],
        team_id=row["team_id"],
        event_id=row["event_id"],
        stage=row["stage"],
        status_ts=row["status_ts"],
        attempts=row["attempts"],
        result=json.loads(row["result"]) if row["result"] else None,
        error=json.loads(row["error"]) if row["error"] else None,
        created_at=row["created_at"],
    )
