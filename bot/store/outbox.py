"""The outbox: every Slack side effect a job needs, stored before it is sent, so nothing is lost when Slack is down.

A record is one thing the user should see: a message (posted once, then edited), the set of reactions on a
message, an audio file uploaded into a thread (its bytes wait in a private file, deleted once sent or given up), or
the end of a Workflow Builder step (functions.completeSuccess or completeError: StepEnd, one per execution).
Writers only ever store the newest *desired* state and bump its version; the sender (bot.slack.sender) makes
Slack match it. So an out-of-date status edit is never sent: only the newest version of a record goes out.

Every record may name the user it serves (`user=`; an ephemeral's recipient): the sender keeps order per lane, a
channel and one user in it, so one user's long backlog in a channel does not hold back another user's answer there.
Records naming no user form one lane per channel.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bot.store.database import Connection, Database
from bot.store.sql import DueRow, OutboxRow

MESSAGE = "message"
REACTIONS = "reactions"
EPHEMERAL = "ephemeral"  # seen only by one user (payload "user"); never edited
UPLOAD = "upload"  # a file (payload "path", "filename", "title", "comment") shared into a channel or thread; once
# A workflow step's end, sent once per execution (key step_key()): payload "execution_id" and one of "outputs"
# (success), "file_id" (success: the outputs are that uploaded file's permalink) or "error" (completeError). An upload
# made for a step carries payload "step" (the execution id): once delivered, its StepEnd is stored in the same
# transaction.
COMPLETION = "completion"

# Wakes the sender, whichever replica leads it (PostgreSQL NOTIFY; one process calls on_change).
OUTBOX_CHANNEL = "voiceclone_outbox"

PENDING = "pending"
SENT = "sent"
DEAD = "dead"


def step_key(execution_id: str) -> str:
    """The key of a workflow step's end: one record per execution, whoever stores it first (the acknowledgement's
    refusal, the worker's failure or the upload's success), so Slack hears exactly one completion."""
    return f"step:{execution_id}"


@dataclass(frozen=True)
class StepEnd:
    """How a workflow step (a `function_executed` execution) ends: `outputs` or `file_id` (success; the output
    "permalink" is that file's) or `error` (a plain sentence). `channel` and `user` place it in a lane."""

    execution_id: str
    channel: str
    outputs: dict[str, Any] | None = None
    file_id: str | None = None
    error: str | None = None
    team_id: str | None = None
    user: str | None = None
    job_id: int | None = None


@dataclass
class Record:
    """One stored side effect and how far Slack has caught up with it."""

    id: int
    key: str
    kind: str
    job_id: int | None
    team_id: str | None
    channel: str
    thread_ts: str | None
    ts: str | None
    payload: dict[str, Any]
    version: int
    sent_version: int
    applied: list[str]
    fallback: dict[str, Any] | None
    state: str
    attempts: int
    next_at: float
    expires_at: float
    created_at: float
    last_error: str | None
    # The thread's parent, when this message waits for another record to be posted first.
    thread_key: str | None = None
    # A record that must be delivered first (a share's final reaction waits for the answer it announces).
    after_key: str | None = None
    parent_ts: str | None = None
    parent_state: str | None = None
    # The user the record serves (None: nobody in particular); see `lane`.
    user_id: str | None = None

    @property
    def lane(self) -> tuple[str, str | None]:
        """Where order is kept: a channel and the user served there (records of one lane go out in order)."""
        return self.channel, self.user_id


def _record(row: OutboxRow, parent: DueRow | None = None) -> Record:
    return Record(
        id=row["id"],
        key=row["key"],
        kind=row["kind"],
        job_id=row["job_id"],
        team_id=row["team_id"],
        channel=row["channel"],
        thread_ts=row["thread_ts"],
        ts=row["ts"],
        payload=json.loads(row["payload"]),
        version=row["version"],
        sent_version=row["sent_version"],
        applied=json.loads(row["applied"]),
        fallback=json.loads(row["fallback"]) if row["fallback"] else None,
        state=row["state"],
        attempts=row["attempts"],
        next_at=row["next_at"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        last_error=row["last_error"],
        thread_key=row["thread_key"],
        after_key=row["after_key"],
        parent_ts=parent["parent_ts"] if parent else None,
        parent_state=parent["parent_state"] if parent else None,
        user_id=row["user_id"],
    )


@dataclass(frozen=True)
class Look:
    """What one pass of the sender reads (Outbox.look)."""

    expired: list[Record]  # pending records older than the TTL, given up by this look: each gets one log line
    due: list[Record]  # what due() returns
    next_at: float | None  # the earliest next_at of a pending record after `now` (None: none)


class Outbox:
    """Stored Slack side effects; `on_change` wakes the sender when something new is due."""

    def __init__(self, db: Database, *, ttl_seconds: float, on_change: Callable[[], None] | None = None):
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.on_change = on_change
        self.sql = db.sql.outbox
        db.create(self.sql.table)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- writers (the job runner and the handlers) ----------------------------------------------------

    async def put_message(
        self,
        key: str,
        *,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        thread_key: str | None = None,
        team_id: str | None = None,
        job_id: int | None = None,
        fallback: dict[str, Any] | None = None,
        once: bool = False,
        after_key: str | None = None,
        user: str | None = None,
        settle: float = 0.0,
    ) -> None:
        """Store the newest content of message `key` (posted the first time, edited after); `once`: never edit;
        `after_key`: post only once that record has been delivered; `user`: whom it serves (its lane); `settle`:
        seconds this version may wait for a newer one when it would edit a message already posted (a progress
        update: the answer that follows soon replaces it unsent)."""
        payload = json.dumps({"text": text, "blocks": blocks})
        await self._store(self._write(
            key, MESSAGE, channel, payload, thread_ts, thread_key, None, team_id, job_id, fallback, once, after_key,
            user, settle=settle,
        ))

    async def put_ephemeral(
        self, key: str, *, channel: str, user: str, text: str, thread_ts: str | None = None,
        team_id: str | None = None, job_id: int | None = None,
    ) -> None:
        """A message only `user` sees (chat.postEphemeral), sent once per key; it serves `user` (its lane)."""
        payload = json.dumps({"text": text, "user": user})
        await self._store(self._write(
            key, EPHEMERAL, channel, payload, thread_ts, None, None, team_id, job_id, {"user": user}, True, None, user
        ))

    async def put_upload(
        self, key: str, *, channel: str, path: str | os.PathLike[str], filename: str, title: str = "",
        comment: str = "", thread_ts: str | None = None, thread_key: str | None = None, after_key: str | None = None,
        team_id: str | None = None, job_id: int | None = None, user: str | None = None, step: str | None = None,
    ) -> None:
        """Upload the file at `path` (files_upload_v2) once per key, then delete it.

        `thread_key`: into the thread of that record once it is posted; `after_key`: only after that record went;
        `user`: whom it serves (its lane); `step`: the workflow step execution this clip answers (its StepEnd is
        stored once the upload is delivered).
        """
        body: dict[str, Any] = {"path": str(path), "filename": filename, "title": title, "comment": comment}
        if step:
            body["step"] = step
        payload = json.dumps(body)
        await self._store(self._write(
            key, UPLOAD, channel, payload, thread_ts, thread_key, None, team_id, job_id, None, True, after_key, user
        ))

    async def put_reactions(
        self, key: str, *, channel: str, ts: str, names: Iterable[str], team_id: str | None = None,
        job_id: int | None = None, after_key: str | None = None, user: str | None = None,
    ) -> None:
        """Store the reactions the bot should have on message `ts` (others are removed, missing ones added).

        `after_key`: send only once that record has been delivered (the answer before the check mark); `user`: whom
        it serves (its lane).
        """
        await self._store(self.reactions_write(
            key, channel=channel, ts=ts, names=names, team_id=team_id, job_id=job_id, after_key=after_key, user=user
        ))

    def reactions_write(
        self, key: str, *, channel: str, ts: str, names: Iterable[str], team_id: str | None = None,
        job_id: int | None = None, after_key: str | None = None, user: str | None = None,
    ) -> Callable[[Connection], None]:
        """put_reactions as a write for another store's transaction (JobStore.add's `also`: a share's hourglass is
        stored with its job, one commit for both); call `committed()` once that transaction has committed."""
        payload = json.dumps({"names": sorted(set(names))})
        return self._write(key, REACTIONS, channel, payload, None, None, ts, team_id, job_id, None, False, after_key,
                           user, later=True)

    def committed(self) -> None:
        """Writes made by reactions_write were committed: the sender looks at once."""
        self._changed()

    async def put_step_end(self, end: StepEnd) -> bool:
        """Store how a workflow step ends, unless its end is stored already; True when this one was stored."""

        def write(conn: Connection) -> bool:
            stored = self._insert_step_end(conn, end)
            if stored:
                conn.notify(OUTBOX_CHANNEL)
            return stored

        # On the acknowledgement path (a refused step): shares a transaction with other writes of the moment.
        stored = await self.db.run_batched(write)
        if stored:
            self._changed()
        return stored

    async def fail_step_end(self, record: Record, error: str) -> None:
        """Slack refused a step's success for good: the same record (the step's one end) now says why it failed."""
        body = json.dumps({"execution_id": record.payload["execution_id"], "error": error})
        await self._store(self._write(
            record.key, COMPLETION, record.channel, body, None, None, None, record.team_id, record.job_id, None, False,
            None, record.user_id,
        ))

    async def step_ended(self, execution_id: str) -> bool:
        """Whether the step's end (success or failure) is stored already."""
        return await self.get(step_key(execution_id)) is not None

    def _insert_step_end(self, conn: Connection, end: StepEnd) -> bool:
        body: dict[str, Any] = {"execution_id": end.execution_id}
        if end.error is not None:
            body["error"] = end.error
        elif end.file_id is not None:
            body["file_id"] = end.file_id
        else:
            body["outputs"] = end.outputs or {}
        now = time.time()
        params = {
            "key": step_key(end.execution_id), "kind": COMPLETION, "job_id": end.job_id, "team_id": end.team_id,
            "channel": end.channel, "thread_ts": None, "thread_key": None, "ts": None, "payload": json.dumps(body),
            "fallback": None, "after_key": None, "user_id": end.user, "now": now,
            "expires_at": now + self.ttl_seconds,
        }
        return conn.run(self.sql.insert_once, params) > 0

    async def _store(self, write: Callable[[Connection], None]) -> None:
        await self.db.run_batched(write)
        self._changed()

    def _write(
        self,
        key: str,
        kind: str,
        channel: str,
        payload: str,
        thread_ts: str | None,
        thread_key: str | None,
        ts: str | None,
        team_id: str | None,
        job_id: int | None,
        fallback: dict[str, Any] | None,
        once: bool,
        after_key: str | None = None,
        user: str | None = None,
        later: bool = False,
        settle: float = 0.0,
    ) -> Callable[[Connection], None]:
        # `user` is set when the record is first stored; a newer version keeps its lane (and so its place). `later`:
        # nothing in the same transaction reads the record back (Connection.run_later).
        params = {
            "key": key, "kind": kind, "job_id": job_id, "team_id": team_id, "channel": channel,
            "thread_ts": thread_ts, "thread_key": thread_key, "ts": ts, "payload": payload,
            "fallback": json.dumps(fallback) if fallback else None, "after_key": after_key, "user_id": user,
        }
        # `once`: a record never edited (an ephemeral, an upload); else a newer desired state replaces the old.
        statement = self.sql.insert_once if once else self.sql.upsert

        def write(conn: Connection) -> None:
            now = time.time()
            run = conn.run_later if later else conn.run
            edit_at = now + settle if settle > 0 else 0.0
            run(statement, {**params, "now": now, "expires_at": now + self.ttl_seconds, "edit_at": edit_at})
            conn.notify(OUTBOX_CHANNEL)

        return write

    # -- the sender's side ----------------------------------------------------------------------------

    async def due(self, now: float, *, limit: int = 100, skip_teams: Iterable[str] = ()) -> list[Record]:
        """Pending records whose time has come, a reply only once its thread's parent is posted; in lane order: the
        oldest of every lane (Record.lane), then the second of every lane, ... (oldest first within a lane)."""
        return await self.db.run(lambda conn: self._due(conn, now, limit, skip_teams))

    def _due(self, conn: Connection, now: float, limit: int, skip_teams: Iterable[str]) -> list[Record]:
        params = {"now": now, "limit": limit, "skip_teams": self.db.sql.array(sorted(skip_teams))}
        return [_record(row, row) for row in conn.all(self.sql.due, params)]

    async def look(self, now: float, *, limit: int = 100, skip_teams: Iterable[str] = ()) -> Look:
        """A sender's pass in one trip to the database: read due(), the next time a pending record falls due after
        `now`, and give up on records older than the TTL. (Each trip costs the event loop and the database thread
        ~0.1 ms of CPU besides its statements, and a memo's share makes ~13 passes.)"""

        def select(conn: Connection) -> Look:
            # The reads first: the expiry commits by itself, and what it returns must not be lost to a failed read
            # after it (due() leaves out what it is about to expire).
            due = self._due(conn, now, limit, skip_teams)
            row = conn.one(self.sql.next_due_at, {"now": now})
            expired = [_record(row) for row in conn.all(self.sql.expire, {"now": now})]
            return Look(expired, due, row["t"] if row else None)

        look = await self.db.run(select)
        for record in look.expired:
            discard_file(record)
        return look

    async def get(self, key: str) -> Record | None:
        """One record by key."""

        def select(conn: Connection) -> Record | None:
            row = conn.one(self.sql.get, {"key": key})
            return _record(row) if row else None

        return await self.db.run(select)

    async def delivered(
        self, record: Record, *, ts: str | None = None, channel: str | None = None, then: StepEnd | None = None
    ) -> None:
        """Slack now shows `record` at the version that was read; a newer version stays pending. `then`: the
        workflow step's end this delivery makes, stored in the same transaction (never lost, never sent twice)."""
        params = {"version": record.version, "ts": ts, "channel": channel, "id": record.id}
        await self._write_then(lambda conn: conn.run(self.sql.delivered, {**params, "now": time.time()}), then)

    async def _write_then(self, write: Callable[[Connection], object], then: StepEnd | None) -> None:
        if then is None:
            await self.db.run(write)
            return

        def both(conn: Connection) -> None:
            with conn.transaction():
                write(conn)
                self._insert_step_end(conn, then)
                conn.notify(OUTBOX_CHANNEL)

        await self.db.run(both)
        self._changed()

    async def set_ts(self, record: Record, ts: str, channel: str | None = None) -> None:
        """The message was posted (its content may still need an edit to a newer version)."""
        params = {"ts": ts, "channel": channel, "id": record.id}
        await self.db.run(lambda conn: conn.run(self.sql.set_ts, {**params, "now": time.time()}))

    async def set_applied(self, record: Record, names: Iterable[str]) -> None:
        """The reactions Slack has now, so a retry after a failure does only what is left."""
        params = {"applied": json.dumps(sorted(set(names))), "id": record.id}
        await self.db.run(lambda conn: conn.run(self.sql.set_applied, params))

    async def retry_at(self, record: Record, when: float, error: str) -> None:
        """Try again at `when` (Slack down, rate limited)."""
        params = {"when": when, "error": error, "id": record.id}
        await self.db.run(lambda conn: conn.run(self.sql.retry_at, {**params, "now": time.time()}))

    async def repost(self, record: Record) -> None:
        """The message is gone from Slack (message_not_found): post it anew."""

        def write(conn: Connection) -> None:
            conn.run(self.sql.repost, {"id": record.id})
            conn.notify(OUTBOX_CHANNEL)

        await self.db.run(write)
        self._changed()

    async def redirect(self, record: Record, *, channel: str, note: str, note_block: dict[str, Any]) -> None:
        """Send the message somewhere else instead (the user's DM), as a new post headed by `note`.

        The note is kept with the record (not in its payload), so every later version of the message (the final
        answer after a progress update) still says why it arrives there.
        """
        params = {"channel": channel, "fallback": json.dumps({"note": note, "note_block": note_block}), "id": record.id}

        def write(conn: Connection) -> None:
            conn.run(self.sql.redirect, {**params, "now": time.time()})
            conn.notify(OUTBOX_CHANNEL)

        await self.db.run(write)
        self._changed()

    async def give_up(self, record: Record, error: str, *, then: StepEnd | None = None) -> None:
        """Never send this record (an upload's file is deleted); `then`: the workflow step's end this makes (its
        failure), stored in the same transaction."""
        discard_file(record)
        params = {"error": error, "id": record.id}
        await self._write_then(lambda conn: conn.run(self.sql.give_up, {**params, "now": time.time()}), then)

    async def purge(self, before: float) -> int:
        """Delete records delivered or given up before `before` (they hold message text); return how many."""
        return await self.db.run(lambda conn: conn.run(self.sql.purge, {"before": before}))

    async def depth(self) -> int:
        """How many records are waiting to be sent."""

        def select(conn: Connection) -> int:
            row = conn.one(self.sql.depth)
            return row["n"] if row else 0

        return await self.db.run(select)

    def pending_upload_paths(self) -> set[str]:
        """The files pending uploads still hold (blocking: for start-up sweeps, before the loop serves anything)."""

        def select(conn: Connection) -> set[str]:
            paths = (json.loads(row["payload"]).get("path") for row in conn.all(self.sql.pending_uploads))
            return {path for path in paths if path}

        return self.db.call(select)


def discard_file(record: Record) -> None:
    """Delete the audio file an upload record holds (sent, given up or expired)."""
    if record.kind == UPLOAD and record.payload.get("path"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record.payload["path"])
