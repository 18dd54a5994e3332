"""The durable job store: every accepted request is a row before Slack gets its acknowledgement."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.store.database import POSTGRESQL, Database

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
# Prepared, waiting for the uploader to press "Clone this voice" (CONSENT=ask); then QUEUED again.
AWAITING = "awaiting_consent"
CANCELLED = "cancelled"
EXPIRED = "expired"
UNFINISHED = (QUEUED, RUNNING)
# A job kind besides the clones ("share", "modal", "command"): speak with a voice (bot.work.voice_service.say_job).
SAY = "say"
FINISHED = (DONE, FAILED, CANCELLED, EXPIRED)

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
CREATE INDEX IF NOT EXISTS jobs_share ON jobs(channel, share_ts);
"""
# Columns added after the first release; older databases get them on open.
_NEW_COLUMNS = {
    "response_url": "TEXT",
    "waits": "INTEGER NOT NULL DEFAULT 0",
    "finished_at": "REAL",
    "consent": "TEXT",  # {"how": button|form|attested, "user": ..., "at": ...} once given
    "prompt": "TEXT",  # the prepared prompt's facts (pipeline.Prompt.meta()) while it waits for consent
    # The queue: a queued job is due at run_at (a retry waits); a running one belongs to lease_owner until
    # lease_until, renewed while it runs; past that any process may take it over (its owner died).
    "run_at": "REAL NOT NULL DEFAULT 0",
    "lease_owner": "TEXT",
    "lease_until": "REAL",
    "priority": "INTEGER NOT NULL DEFAULT 0",  # a clone the uploader just confirmed goes first
}
# Wakes the workers of every replica (PostgreSQL NOTIFY; one process needs no message).
JOBS_CHANNEL = "voiceclone_jobs"


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
    response_url: str | None = None


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
    response_url: str | None = None
    waits: int = 0
    finished_at: float | None = None
    consent: dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JobStore:
    """The jobs table; every call runs on the database's own thread."""

    def __init__(self, db: Database | str | Path):
        self._owns_db = not isinstance(db, Database)
        self.db = db if isinstance(db, Database) else Database(db)
        self.db.schema(_SCHEMA)
        self.db.add_columns("jobs", _NEW_COLUMNS)
        self.db.schema("CREATE INDEX IF NOT EXISTS jobs_due ON jobs(status, run_at);")
        self._run = self.db.run
        # SKIP LOCKED: two replicas claiming at once take different jobs instead of queueing on one row lock.
        # (SQLite has one writer at a time, so its UPDATE ... WHERE id = (SELECT ...) is atomic as it is.)
        self._skip_locked = " FOR UPDATE SKIP LOCKED" if self.db.dialect == POSTGRESQL else ""

    async def add(self, jobs: Iterable[NewJob]) -> list[int]:
        """Store new jobs in one transaction; return the ids of those not seen before (dedupe on key)."""
        items = list(jobs)
        now = time.time()

        def insert(conn: Any) -> list[int]:
            ids: list[int] = []
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                for job in items:
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO jobs (dedupe_key, kind, event_id, team_id, channel, thread_ts,"
                        " share_ts, user_id, file_json, options, created_at, updated_at, response_url)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
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
                            job.response_url,
                        ),
                    )
                    row = cur.fetchone()
                    if row is not None:
                        ids.append(row[0])
                if ids:
                    self.db.notify_in(conn, JOBS_CHANNEL)
            return ids

        return await self.db.run_batched(insert)

    async def get(self, job_id: int) -> Job | None:
        """One job by id."""

        def select(conn: Any) -> Job | None:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return _job(row) if row else None

        return await self._run(select)

    async def claim_next(self, owner: str, lease: float) -> Job | None:
        """Take the next due job for `owner`, atomically: a queued one whose time has come, or a running one whose
        owner stopped renewing its lease (killed); count the attempt. None when nothing is due."""

        def update(conn: Any) -> Job | None:
            now = time.time()
            row = conn.execute(
                "UPDATE jobs SET status = ?, attempts = attempts + 1, lease_owner = ?, lease_until = ?, updated_at = ?"
                " WHERE id = (SELECT id FROM jobs WHERE (status = ? AND run_at <= ?)"
                " OR (status = ? AND COALESCE(lease_until, 0) < ?)"
                f" ORDER BY priority DESC, id LIMIT 1{self._skip_locked}) RETURNING *",
                (RUNNING, owner, now + lease, now, QUEUED, now, RUNNING, now),
            ).fetchone()
            return _job(row) if row else None

        return await self._run(update)

    async def next_due(self) -> float | None:
        """When the next job falls due: the earliest queued run_at or running lease end (None: nothing waits)."""

        def select(conn: Any) -> float | None:
            row = conn.execute(
                "SELECT MIN(CASE WHEN status = ? THEN run_at ELSE COALESCE(lease_until, 0) END) AS t"
                " FROM jobs WHERE status IN (?, ?)",
                (QUEUED, *UNFINISHED),
            ).fetchone()
            return row["t"] if row else None

        return await self._run(select)

    async def renew(self, owner: str, job_ids: Iterable[int], lease: float) -> int:
        """Extend `owner`'s lease on the jobs it is running; return how many it still holds."""
        ids = sorted(job_ids)
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))

        def update(conn: Any) -> int:
            return conn.execute(
                f"UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND status = ? AND id IN ({marks})",
                (time.time() + lease, owner, RUNNING, *ids),
            ).rowcount

        return await self._run(update)

    async def holds(self, job_id: int, owner: str) -> bool:
        """True while `owner` still holds the job's lease (checked before the one call that must not repeat)."""

        def select(conn: Any) -> bool:
            row = conn.execute(
                "SELECT 1 FROM jobs WHERE id = ? AND lease_owner = ? AND status = ?", (job_id, owner, RUNNING)
            ).fetchone()
            return row is not None

        return await self._run(select)

    async def release(self, owner: str | None = None) -> int:
        """Let other workers take running jobs now: `owner`'s (stopping), or every one (SQLite: the previous
        process is gone, since only one process uses the file)."""

        def update(conn: Any) -> int:
            if owner is None:
                cur = conn.execute("UPDATE jobs SET lease_until = 0 WHERE status = ?", (RUNNING,))
            else:
                cur = conn.execute(
                    "UPDATE jobs SET lease_until = 0 WHERE status = ? AND lease_owner = ?", (RUNNING, owner)
                )
            if cur.rowcount:
                self.db.notify_in(conn, JOBS_CHANNEL)
            return cur.rowcount

        return await self._run(update)

    async def pending(self) -> int:
        """Jobs queued (due or waiting for a retry) or running."""

        def select(conn: Any) -> int:
            row = conn.execute("SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", UNFINISHED).fetchone()
            return int(row[0])

        return await self._run(select)

    async def unfinished(self) -> list[int]:
        """Ids of jobs a previous run left queued or running, oldest first."""

        def select(conn: Any) -> list[int]:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE status IN (?, ?) ORDER BY id", UNFINISHED
            ).fetchall()
            return [r["id"] for r in rows]

        return await self._run(select)

    async def update(self, job_id: int, **values: Any) -> None:
        """Set columns of one job (dicts are stored as JSON)."""
        allowed = {
            "status", "stage", "status_ts", "thread_ts", "channel", "attempts", "result", "error", "file", "waits",
            "finished_at", "consent", "prompt", "run_at", "lease_owner", "lease_until",
        }
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown job columns: {sorted(unknown)}")
        columns = {("file_json" if k == "file" else k): v for k, v in values.items()}
        params = [json.dumps(v) if isinstance(v, dict) else v for v in columns.values()]
        assignments = ", ".join(f"{k} = ?" for k in columns)

        def write(conn: Any) -> None:
            conn.execute(
                f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608 - fixed column names
                (*params, time.time(), job_id),
            )
            if values.get("status") == QUEUED:
                self.db.notify_in(conn, JOBS_CHANNEL)

        await self._run(write)

    async def claim(self, job_id: int, owner: str = "", lease: float = 30.0) -> Job | None:
        """Take one job for `owner` and count the attempt, atomically: only when it is queued or its running
        owner's lease ran out; None otherwise (finished, or running elsewhere)."""

        def update(conn: Any) -> Job | None:
            now = time.time()
            row = conn.execute(
                "UPDATE jobs SET status = ?, attempts = attempts + 1, lease_owner = ?, lease_until = ?, updated_at = ?"
                " WHERE id = ? AND (status = ? OR (status = ? AND COALESCE(lease_until, 0) < ?)) RETURNING *",
                (RUNNING, owner, now + lease, now, job_id, QUEUED, RUNNING, now),
            ).fetchone()
            return _job(row) if row else None

        return await self._run(update)

    async def give_consent(self, job_id: int, consent: dict[str, Any]) -> bool:
        """Record consent and queue the job again, once: False when it was not waiting (a double press)."""

        def update(conn: Any) -> bool:
            cur = conn.execute(
                # The preparing attempt succeeded: the clone starts with a clean count of attempts.
                "UPDATE jobs SET status = ?, consent = ?, attempts = 0, run_at = 0, priority = 1, updated_at = ?"
                " WHERE id = ? AND status = ?",
                (QUEUED, json.dumps(consent), time.time(), job_id, AWAITING),
            )
            if cur.rowcount == 1:
                self.db.notify_in(conn, JOBS_CHANNEL)
            return cur.rowcount == 1

        return await self._run(update)

    async def end_waiting(self, job_id: int, status: str, error: dict[str, Any] | None = None) -> bool:
        """End a job waiting for consent (cancelled, expired), once: False when it was not waiting."""

        def update(conn: Any) -> bool:
            now = time.time()
            cur = conn.execute(
                "UPDATE jobs SET status = ?, error = ?, finished_at = ?, updated_at = ? WHERE id = ? AND status = ?",
                (status, json.dumps(error) if error else None, now, now, job_id, AWAITING),
            )
            return cur.rowcount == 1

        return await self._run(update)

    async def waiting_since(self, before: float) -> list[int]:
        """Jobs waiting for consent since before `before` (Unix time)."""

        def select(conn: Any) -> list[int]:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE status = ? AND updated_at < ? ORDER BY id", (AWAITING, before)
            ).fetchall()
            return [r["id"] for r in rows]

        return await self._run(select)

    async def with_prompt(self) -> list[int]:
        """Jobs whose prepared prompt may still be on disk (waiting, or queued/running after consent)."""

        def select(conn: Any) -> list[int]:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE prompt IS NOT NULL AND status IN (?, ?, ?)", (AWAITING, *UNFINISHED)
            ).fetchall()
            return [r["id"] for r in rows]

        return await self._run(select)

    async def purge(self, finished_before: float) -> list[int]:
        """Delete jobs that ended before `finished_before` (rows, transcripts, Slack file objects); return ids."""
        marks = ",".join("?" * len(FINISHED))

        def delete(conn: Any) -> list[int]:
            rows = conn.execute(
                f"DELETE FROM jobs WHERE status IN ({marks}) AND COALESCE(finished_at, updated_at) < ? RETURNING id",
                (*FINISHED, finished_before),
            ).fetchall()
            return [r["id"] for r in rows]

        return await self._run(delete)

    async def share_statuses(self, channel: str, share_ts: str) -> list[str]:
        """The status of every job from one shared message (one job per file in it)."""

        def select(conn: Any) -> list[str]:
            rows = conn.execute(
                "SELECT status FROM jobs WHERE channel = ? AND share_ts = ? ORDER BY id", (channel, share_ts)
            ).fetchall()
            return [r["status"] for r in rows]

        return await self._run(select)

    async def counts(self) -> dict[str, int]:
        """Jobs per status."""

        def select(conn: Any) -> dict[str, int]:
            rows = conn.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
            return {r["status"]: r["n"] for r in rows}

        return await self._run(select)

    def close(self) -> None:
        """Close the database when this store opened it."""
        if self._owns_db:
            self.db.close()


def _job(row: Any) -> Job:
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
        response_url=row["response_url"],
        waits=row["waits"],
        finished_at=row["finished_at"],
        consent=json.loads(row["consent"]) if row["consent"] else None,
        prompt=json.loads(row["prompt"]) if row["prompt"] else None,
    )
