"""The outbox: every Slack side effect a job needs, stored before it is sent, so nothing is lost when Slack is down.

A record is one thing the user should see: a message (posted once, then edited), the set of reactions on a
message, or an audio file uploaded into a thread (its bytes wait in a private file, deleted once sent or given up).
Writers only ever store the newest *desired* state and bump its version; the sender (bot.slack.sender) makes
Slack match it. So an out-of-date status edit is never sent: only the newest version of a record goes out.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bot.store.database import Database

MESSAGE = "message"
REACTIONS = "reactions"
EPHEMERAL = "ephemeral"  # seen only by one user (payload "user"); never edited
UPLOAD = "upload"  # a file (payload "path", "filename", "title", "comment") shared into a channel or thread; once

# Wakes the sender, whichever replica leads it (PostgreSQL NOTIFY; one process calls on_change).
OUTBOX_CHANNEL = "voiceclone_outbox"

PENDING = "pending"
SENT = "sent"
DEAD = "dead"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    job_id       INTEGER,
    team_id      TEXT,
    channel      TEXT NOT NULL,
    thread_ts    TEXT,
    thread_key   TEXT,
    after_key    TEXT,
    ts           TEXT,
    payload      TEXT NOT NULL,
    version      INTEGER NOT NULL DEFAULT 1,
    sent_version INTEGER NOT NULL DEFAULT 0,
    applied      TEXT NOT NULL DEFAULT '[]',
    fallback     TEXT,
    state        TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL DEFAULT 0,
    expires_at   REAL NOT NULL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_at);
"""


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


def _record(row: sqlite3.Row) -> Record:
    keys = row.keys()
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
        parent_ts=row["parent_ts"] if "parent_ts" in keys else None,
        parent_state=row["parent_state"] if "parent_state" in keys else None,
    )


class Outbox:
    """Stored Slack side effects; `on_change` wakes the sender when something new is due."""

    def __init__(self, db: Database, *, ttl_seconds: float, on_change: Callable[[], None] | None = None):
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.on_change = on_change
        db.schema(_SCHEMA)

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
    ) -> None:
        """Store the newest content of message `key` (posted the first time, edited after); `once`: never edit;
        `after_key`: post only once that record has been delivered."""
        payload = json.dumps({"text": text, "blocks": blocks})
        await self._upsert(
            key, MESSAGE, channel, payload, thread_ts, thread_key, None, team_id, job_id, fallback, once, after_key
        )

    async def put_ephemeral(
        self, key: str, *, channel: str, user: str, text: str, thread_ts: str | None = None,
        team_id: str | None = None, job_id: int | None = None,
    ) -> None:
        """A message only `user` sees (chat.postEphemeral), sent once per key."""
        payload = json.dumps({"text": text, "user": user})
        await self._upsert(
            key, EPHEMERAL, channel, payload, thread_ts, None, None, team_id, job_id, {"user": user}, True
        )

    async def put_upload(
        self, key: str, *, channel: str, path: str | os.PathLike[str], filename: str, title: str = "",
        comment: str = "", thread_ts: str | None = None, thread_key: str | None = None, after_key: str | None = None,
        team_id: str | None = None, job_id: int | None = None,
    ) -> None:
        """Upload the file at `path` (files_upload_v2) once per key, then delete it.

        `thread_key`: into the thread of that record once it is posted; `after_key`: only after that record went.
        """
        payload = json.dumps({"path": str(path), "filename": filename, "title": title, "comment": comment})
        await self._upsert(
            key, UPLOAD, channel, payload, thread_ts, thread_key, None, team_id, job_id, None, True, after_key
        )

    async def put_reactions(
        self, key: str, *, channel: str, ts: str, names: Iterable[str], team_id: str | None = None,
        job_id: int | None = None, after_key: str | None = None,
    ) -> None:
        """Store the reactions the bot should have on message `ts` (others are removed, missing ones added).

        `after_key`: send only once that record has been delivered (the answer before the check mark).
        """
        payload = json.dumps({"names": sorted(set(names))})
        await self._upsert(
            key, REACTIONS, channel, payload, None, None, ts, team_id, job_id, None, False, after_key
        )

    async def _upsert(
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
    ) -> None:
        now = time.time()
        on_conflict = (
            "DO NOTHING"
            if once
            # A newer desired state: bump the version; a record waiting out a backoff keeps its next_at.
            else "DO UPDATE SET payload = excluded.payload, version = outbox.version + 1,"
            " updated_at = excluded.updated_at, after_key = excluded.after_key,"
            " state = CASE WHEN outbox.state = 'dead' THEN 'dead' ELSE 'pending' END"
            " WHERE outbox.payload != excluded.payload"
        )

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO outbox (key, kind, job_id, team_id, channel, thread_ts, thread_key, ts, payload, fallback,"
                " expires_at, created_at, updated_at, after_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                f" ON CONFLICT(key) {on_conflict}",
                (
                    key, kind, job_id, team_id, channel, thread_ts, thread_key, ts, payload,
                    json.dumps(fallback) if fallback else None, now + self.ttl_seconds, now, now, after_key,
                ),
            )
            self.db.notify_in(conn, OUTBOX_CHANNEL)

        await self.db.run_batched(write)
        self._changed()

    # -- the sender's side ----------------------------------------------------------------------------

    async def due(self, now: float, *, limit: int = 100, skip_teams: Iterable[str] = ()) -> list[Record]:
        """Pending records whose time has come, oldest first; a reply waits until its thread's parent is posted."""
        skip = sorted(skip_teams)
        marks = ",".join("?" * len(skip))
        team_filter = f" AND (o.team_id IS NULL OR o.team_id NOT IN ({marks}))" if skip else ""

        def select(conn: sqlite3.Connection) -> list[Record]:
            rows = conn.execute(
                "SELECT o.*, p.ts AS parent_ts, p.state AS parent_state FROM outbox o"
                " LEFT JOIN outbox p ON p.key = o.thread_key"
                " LEFT JOIN outbox a ON a.key = o.after_key"
                " WHERE o.state = 'pending' AND o.next_at <= ?"
                " AND (o.thread_key IS NULL OR p.ts IS NOT NULL OR p.state = 'dead' OR p.id IS NULL)"
                " AND (o.after_key IS NULL OR a.id IS NULL OR a.state != 'pending')"
                f"{team_filter} ORDER BY o.id LIMIT ?",
                (now, *skip, limit),
            ).fetchall()
            return [_record(r) for r in rows]

        return await self.db.run(select)

    async def next_due_at(self) -> float | None:
        """When the earliest pending record is due (None when nothing is pending)."""

        def select(conn: sqlite3.Connection) -> float | None:
            row = conn.execute("SELECT MIN(next_at) AS t FROM outbox WHERE state = 'pending'").fetchone()
            return row["t"]

        return await self.db.run(select)

    async def get(self, key: str) -> Record | None:
        """One record by key."""

        def select(conn: sqlite3.Connection) -> Record | None:
            row = conn.execute("SELECT * FROM outbox WHERE key = ?", (key,)).fetchone()
            return _record(row) if row else None

        return await self.db.run(select)

    async def delivered(self, record: Record, *, ts: str | None = None, channel: str | None = None) -> None:
        """Slack now shows `record` at the version that was read; a newer version stays pending."""
        version = record.version

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET sent_version = ?, ts = COALESCE(?, ts), channel = COALESCE(?, channel),"
                " attempts = 0, last_error = NULL, updated_at = ?,"
                " state = CASE WHEN state = 'pending' AND version <= ? THEN 'sent' ELSE state END WHERE id = ?",
                (version, ts, channel, time.time(), version, record.id),
            )

        await self.db.run(write)

    async def set_ts(self, record: Record, ts: str, channel: str | None = None) -> None:
        """The message was posted (its content may still need an edit to a newer version)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET ts = ?, channel = COALESCE(?, channel), updated_at = ? WHERE id = ?",
                (ts, channel, time.time(), record.id),
            )

        await self.db.run(write)

    async def set_applied(self, record: Record, names: Iterable[str]) -> None:
        """The reactions Slack has now, so a retry after a failure does only what is left."""
        applied = json.dumps(sorted(set(names)))
        await self.db.run(lambda conn: conn.execute("UPDATE outbox SET applied = ? WHERE id = ?", (applied, record.id)))

    async def retry_at(self, record: Record, when: float, error: str) -> None:
        """Try again at `when` (Slack down, rate limited)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ?, updated_at = ? WHERE id = ?",
                (when, error, time.time(), record.id),
            )

        await self.db.run(write)

    async def repost(self, record: Record) -> None:
        """The message is gone from Slack (message_not_found): post it anew."""
        await self.db.run(
            lambda conn: conn.execute("UPDATE outbox SET ts = NULL, next_at = 0 WHERE id = ?", (record.id,))
        )
        await self.db.notify(OUTBOX_CHANNEL)
        self._changed()

    async def redirect(self, record: Record, *, channel: str, note: str, note_block: dict[str, Any]) -> None:
        """Send the message somewhere else instead (the user's DM), as a new post headed by `note`.

        The note is kept with the record (not in its payload), so every later version of the message (the final
        answer after a progress update) still says why it arrives there.
        """
        fallback = json.dumps({"note": note, "note_block": note_block})

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                # An ephemeral message moved to a DM becomes an ordinary message there.
                "UPDATE outbox SET kind = 'message', channel = ?, thread_ts = NULL, thread_key = NULL, ts = NULL,"
                " fallback = ?, version = version + 1, next_at = 0, updated_at = ? WHERE id = ?",
                (channel, fallback, time.time(), record.id),
            )
            self.db.notify_in(conn, OUTBOX_CHANNEL)

        await self.db.run(write)
        self._changed()

    async def give_up(self, record: Record, error: str) -> None:
        """Never send this record (an upload's file is deleted)."""
        discard_file(record)
        await self.db.run(
            lambda conn: conn.execute(
                "UPDATE outbox SET state = 'dead', last_error = ?, updated_at = ? WHERE id = ?",
                (error, time.time(), record.id),
            )
        )

    async def expire(self, now: float) -> list[Record]:
        """Give up on pending records older than the TTL; returns them (each gets one log line)."""

        def write(conn: sqlite3.Connection) -> list[Record]:
            rows = conn.execute(
                "UPDATE outbox SET state = 'dead', updated_at = ? WHERE state = 'pending' AND expires_at < ?"
                " RETURNING *",
                (now, now),
            ).fetchall()
            return [_record(r) for r in rows]

        expired = await self.db.run(write)
        for record in expired:
            discard_file(record)
        return expired

    async def purge(self, before: float) -> int:
        """Delete records delivered or given up before `before` (they hold message text); return how many."""

        def delete(conn: sqlite3.Connection) -> int:
            cur = conn.execute("DELETE FROM outbox WHERE state != 'pending' AND updated_at < ?", (before,))
            return cur.rowcount

        return await self.db.run(delete)

    async def depth(self) -> int:
        """How many records are waiting to be sent."""

        def select(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0])

        return await self.db.run(select)


def discard_file(record: Record) -> None:
    """Delete the audio file an upload record holds (sent, given up or expired)."""
    if record.kind == UPLOAD and record.payload.get("path"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record.payload["path"])
