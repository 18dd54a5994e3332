"""The durable job store: every accepted request is a row before Slack gets its acknowledgement."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.store.database import Connection, Database, SqliteDatabase
from bot.store.sql import JobRow

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

# Wakes the workers of every replica (PostgreSQL NOTIFY; one process needs no message).
JOBS_CHANNEL = "voiceclone_jobs"

# The admission lock's key (a PostgreSQL advisory lock; any fixed number the bot uses for nothing else). One key for
# every workspace: a batch holding two keys could deadlock with another holding them in the other order.
_ADMISSION_KEY = zlib.crc32(b"voiceclone-bot admission")

# Decides, inside the transaction that would store the jobs, whether they may be stored: None, or why not (opaque
# here: bot.work.quotas's Refusal). One database call, so a burst of acknowledgements is checked exactly and without
# a lock held across trips to the database thread.
Admission = Callable[[Connection], object | None]


class Refused(Exception):
    """An admission check said no: nothing was stored. `refusal` is what it said."""

    def __init__(self, refusal: object):
        super().__init__("refused by an admission check")
        self.refusal = refusal


# One part of the fair-use counts (JobStore.admission_counts), per user: (how many, the oldest's created_at).
PerUser = dict[str | None, tuple[int, float | None]]


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
    # Whose voice the recording is (the file's uploader), when known at intake; see Job.speaker.
    speaker: str | None = None


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
    # Whose voice it is: the recording's uploader, who alone consents and owns the voice (user_id asked for it).
    # None for a `/clone <file>` request until the file has been looked up, and for speech.
    speaker: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# The statuses a statement compares with, by the names the statements give them.
_STATUSES = {"queued": QUEUED, "running": RUNNING, "awaiting": AWAITING}


class JobStore:
    """The jobs table; every call runs on the database's own thread."""

    def __init__(self, db: Database | str | Path):
        self._owns_db = not isinstance(db, Database)
        self.db = db if isinstance(db, Database) else SqliteDatabase(db)
        self.sql = self.db.sql.jobs
        self.db.create(self.sql.table)
        self._run = self.db.run
        # An idle worker looks again after this long even when nobody wakes it: with other processes sharing the
        # database their jobs, and a NOTIFY lost while the listener reconnected, are only seen by looking.
        self.idle_poll = 1.0 if self.db.shared else 5.0

    async def recover(self) -> int:
        """At start: give back the jobs a previous run left running, when it is certainly gone (a database only
        one process can use: whatever is marked running there belongs to a run that ended). With replicas a
        running job may be another one's: its lease decides. Returns how many were given back."""
        return 0 if self.db.shared else await self.release()

    async def add(
        self, jobs: Iterable[NewJob], admit: Admission | None = None, also: Callable[[Connection], None] | None = None
    ) -> list[int]:
        """Store new jobs in one transaction; return the ids of those not seen before (dedupe on key). With `admit`,
        only if it says None in that same transaction; else raise Refused with what it said. `also`: another write
        for the same transaction when a job is new (a share's hourglass: one commit for both, and it is there before
        any worker can see the job)."""
        now = time.time()
        rows = [
            {
                "dedupe_key": job.dedupe_key, "kind": job.kind, "event_id": job.event_id, "team_id": job.team_id,
                "channel": job.channel, "thread_ts": job.thread_ts, "share_ts": job.share_ts,
                "user_id": job.user_id, "file_json": json.dumps(job.file), "options": json.dumps(job.options),
                "now": now, "response_url": job.response_url, "speaker": job.speaker,
            }
            for job in jobs
        ]
        if not rows:
            return []
        statement = self.sql.add

        def insert(conn: Connection) -> list[int] | Refused:
            ids: list[int] = []
            with conn.transaction():
                refusal = admit(conn) if admit is not None else None
                if refusal is not None:
                    return Refused(refusal)
                for params in rows:
                    row = conn.one(statement, params)
                    if row is not None:
                        ids.append(row["id"])
                if ids:
                    if also is not None:
                        also(conn)
                    conn.notify(JOBS_CHANNEL)
            return ids

        outcome = await self.db.run_batched(insert)
        if isinstance(outcome, Refused):
            raise outcome
        return outcome

    def hold_admission(self, conn: Connection) -> None:
        """In a transaction that checks a fair-use limit and then stores: hold the admission lock until it ends, so
        that checks on other connections (and replicas) count what this one stores."""
        conn.hold_lock(_ADMISSION_KEY)

    def admission_counts(
        self, conn: Connection, team_id: str | None, user_id: str | None, *, says_since: float | None, voices: bool
    ) -> dict[str, tuple[PerUser, tuple[int, float | None]]]:
        """What the fair-use limits count, in one statement (on the database thread, in a caller's transaction), per
        part: ("jobs": queued or running; with `says_since`, "says": speech jobs asked for since then; with `voices`,
        "voices": voices kept) -> (the user's count and oldest, the workspace's count and oldest)."""
        row = conn.one(self.sql.admission, self._admission_params(team_id, user_id, True, says_since, voices))
        assert row is not None  # aggregates over no rows still make one row
        parts = {"jobs": ({user_id: (row["jobs_mine"], None)}, (row["jobs_n"], None))}
        if says_since is not None:
            mine = {user_id: (row["says_mine"], row["says_mine_oldest"])}
            parts["says"] = (mine, (row["says_n"], row["says_oldest"]))
        if voices:
            parts["voices"] = ({user_id: (row["voices_mine"], None)}, (row["voices_n"], None))
        return parts

    def admission_counts_by_user(
        self, conn: Connection, team_id: str | None, *, jobs: bool, says_since: float | None, voices: bool
    ) -> dict[str, PerUser]:
        """admission_counts for every user of the workspace at once (for a batch of acknowledgements), each part only
        when asked for."""
        params = self._admission_params(team_id, None, jobs, says_since, voices)
        counts: dict[str, PerUser] = {}
        if jobs:
            counts["jobs"] = {}
        if says_since is not None:
            counts["says"] = {}
        if voices:
            counts["voices"] = {}
        for row in conn.all(self.sql.admission_by_user, params):
            counts[row["part"]][row["who"]] = (row["n"], row["oldest"])
        return counts

    @staticmethod
    def _admission_params(
        team_id: str | None, user_id: str | None, jobs: bool, says_since: float | None, voices: bool
    ) -> dict[str, Any]:
        return {
            **_STATUSES, "say": SAY, "team": team_id, "user": user_id, "jobs": jobs, "says": says_since is not None,
            "since": says_since or 0.0, "voices": voices, "voice_team": team_id or "",
        }

    async def get(self, job_id: int) -> Job | None:
        """One job by id."""

        def select(conn: Connection) -> Job | None:
            row = conn.one(self.sql.get, {"id": job_id})
            return _job(row) if row else None

        return await self._run(select)

    async def claim_next(self, owner: str, lease: float) -> Job | None:
        """Take the next due job for `owner`, atomically: a queued one whose time has come, or a running one whose
        owner stopped renewing its lease (killed); count the attempt. None when nothing is due."""
        return await self._run(lambda conn: self._claim_next(conn, owner, lease))

    async def next_due(self) -> float | None:
        """When the next job falls due: the earliest queued run_at or running lease end (None: nothing waits)."""
        return await self._run(self._next_due)

    async def look(self, owner: str, lease: float) -> tuple[Job | None, float | None]:
        """An idle worker's look in one trip to the database: claim_next's job, or (None, next_due) when none is
        due. (Each trip costs the event loop and the database thread ~0.1 ms of CPU besides the statement.)"""

        def both(conn: Connection) -> tuple[Job | None, float | None]:
            job = self._claim_next(conn, owner, lease)
            return (job, None) if job is not None else (None, self._next_due(conn))

        return await self._run(both)

    def _claim_next(self, conn: Connection, owner: str, lease: float) -> Job | None:
        now = time.time()
        row = conn.one(self.sql.claim_next, {**_STATUSES, "owner": owner, "until": now + lease, "now": now})
        return _job(row) if row else None

    def _next_due(self, conn: Connection) -> float | None:
        row = conn.one(self.sql.next_due, _STATUSES)
        return row["t"] if row else None

    async def renew(self, owner: str, job_ids: Iterable[int], lease: float) -> int:
        """Extend `owner`'s lease on the jobs it is running; return how many it still holds."""
        held = sorted(job_ids)
        if not held:
            return 0
        ids = self.db.sql.array(held)

        def update(conn: Connection) -> int:
            return conn.run(self.sql.renew, {**_STATUSES, "owner": owner, "until": time.time() + lease, "ids": ids})

        return await self._run(update)

    async def holds(self, job_id: int, owner: str) -> bool:
        """True while `owner` still holds the job's lease (checked before the one call that must not repeat)."""

        def select(conn: Connection) -> bool:
            return conn.one(self.sql.holds, {**_STATUSES, "id": job_id, "owner": owner}) is not None

        return await self._run(select)

    async def release(self, owner: str | None = None) -> int:
        """Let other workers take running jobs now: `owner`'s (stopping), or every one (see recover())."""

        def update(conn: Connection) -> int:
            if owner is None:
                count = conn.run(self.sql.release_all, _STATUSES)
            else:
                count = conn.run(self.sql.release_owner, {**_STATUSES, "owner": owner})
            if count:
                conn.notify(JOBS_CHANNEL)
            return count

        return await self._run(update)

    async def pending(self) -> int:
        """Jobs queued (due or waiting for a retry) or running."""

        def select(conn: Connection) -> int:
            row = conn.one(self.sql.pending, _STATUSES)
            return row["n"] if row else 0

        return await self._run(select)

    async def unfinished(self) -> list[int]:
        """Ids of jobs a previous run left queued or running, oldest first."""
        return await self._run(lambda conn: [row["id"] for row in conn.all(self.sql.unfinished, _STATUSES)])

    async def update(self, job_id: int, **values: Any) -> bool:
        """Set columns of one job (dicts are stored as JSON); False when the job is gone (forget-me deleted it)."""
        allowed = {
            "status", "stage", "status_ts", "thread_ts", "channel", "attempts", "result", "error", "file", "waits",
            "finished_at", "consent", "prompt", "run_at", "lease_owner", "lease_until", "speaker",
        }
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown job columns: {sorted(unknown)}")
        params: dict[str, Any] = {
            ("file_json" if k == "file" else k): json.dumps(v) if isinstance(v, dict) else v for k, v in values.items()
        }
        statement = self.sql.update(tuple(params))
        params["id"] = job_id

        def write(conn: Connection) -> bool:
            changed = conn.run(statement, {**params, "now": time.time()}) > 0
            if changed and values.get("status") == QUEUED:
                conn.notify(JOBS_CHANNEL)
            return changed

        return await self._run(write)

    async def claim(self, job_id: int, owner: str = "", lease: float = 30.0) -> Job | None:
        """Take one job for `owner` and count the attempt, atomically: only when it is queued or its running
        owner's lease ran out; None otherwise (finished, or running elsewhere)."""

        def update(conn: Connection) -> Job | None:
            now = time.time()
            row = conn.one(
                self.sql.claim, {**_STATUSES, "id": job_id, "owner": owner, "until": now + lease, "now": now}
            )
            return _job(row) if row else None

        return await self._run(update)

    async def give_consent(self, job_id: int, consent: dict[str, Any]) -> bool:
        """Record consent and queue the job again, once: False when it was not waiting (a double press)."""
        # The preparing attempt succeeded: the clone starts with a clean count of attempts (the statement's).
        params = {**_STATUSES, "id": job_id, "consent": json.dumps(consent)}

        def update(conn: Connection) -> bool:
            changed = conn.run(self.sql.give_consent, {**params, "now": time.time()}) == 1
            if changed:
                conn.notify(JOBS_CHANNEL)
            return changed

        return await self._run(update)

    async def end_waiting(self, job_id: int, status: str, error: dict[str, Any] | None = None) -> bool:
        """End a job waiting for consent (cancelled, expired), once: False when it was not waiting."""
        params = {**_STATUSES, "id": job_id, "status": status, "error": json.dumps(error) if error else None}
        return await self._run(lambda conn: conn.run(self.sql.end_waiting, {**params, "now": time.time()}) == 1)

    async def waiting_since(self, before: float) -> list[int]:
        """Jobs waiting for consent since before `before` (Unix time)."""
        params = {**_STATUSES, "before": before}
        return await self._run(lambda conn: [row["id"] for row in conn.all(self.sql.waiting_since, params)])

    async def with_prompt(self) -> list[int]:
        """Jobs whose prepared prompt may still be on disk (waiting, or queued/running after consent)."""
        return await self._run(lambda conn: [row["id"] for row in conn.all(self.sql.with_prompt, _STATUSES)])

    async def purge(self, finished_before: float) -> list[int]:
        """Delete jobs that ended before `finished_before` (rows, transcripts, Slack file objects); return ids."""
        params = {"finished": self.db.sql.array(FINISHED), "before": finished_before}
        return await self._run(lambda conn: [row["id"] for row in conn.all(self.sql.purge, params)])

    async def share_statuses(self, channel: str, share_ts: str) -> list[str]:
        """The status of every job from one shared message (one job per file in it)."""
        params = {"channel": channel, "share_ts": share_ts}
        return await self._run(lambda conn: [row["status"] for row in conn.all(self.sql.share_statuses, params)])

    async def counts(self) -> dict[str, int]:
        """Jobs per status."""
        return await self._run(lambda conn: {row["status"]: row["n"] for row in conn.all(self.sql.counts)})

    def close(self) -> None:
        """Close the database when this store opened it."""
        if self._owns_db:
            self.db.close()


def _job(row: JobRow) -> Job:
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
        speaker=row["speaker"],
    )
