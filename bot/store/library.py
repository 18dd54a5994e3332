"""The voice library: the bot's own record of every voice it cloned, per workspace (Tencent offers no API to list or
delete cloned voices, so this is the only list there is). Slack-free; who may reach a voice is decided here too."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from bot.store.database import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS voices (
    team_id     TEXT NOT NULL DEFAULT '',
    voice_id    TEXT NOT NULL,
    voice_name  TEXT NOT NULL,
    owner       TEXT,
    created_at  REAL NOT NULL,
    file_name   TEXT,
    seconds     REAL,
    model       TEXT,
    language    TEXT,
    channel     TEXT,
    thread_ts   TEXT,
    request_id  TEXT,
    label       TEXT,
    job_id      INTEGER,
    PRIMARY KEY (team_id, voice_id)
);
CREATE INDEX IF NOT EXISTS voices_owner ON voices(team_id, owner);
"""
MAX_LABEL = 80


@dataclass(frozen=True)
class VoiceRecord:
    """One cloned voice as the bot remembers it."""

    team_id: str
    voice_id: str
    voice_name: str
    owner: str | None
    created_at: float
    file_name: str | None = None
    seconds: float | None = None
    model: str | None = None
    language: str | None = None
    channel: str | None = None
    thread_ts: str | None = None
    request_id: str | None = None
    label: str | None = None
    job_id: int | None = None

    @property
    def title(self) -> str:
        """What to call it: the user's label, else Tencent's VoiceName."""
        return self.label or self.voice_name

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def may_reach(voice: VoiceRecord, user: str | None, admins: Iterable[str] = ()) -> bool:
    """Only the owner, or an admin named in ADMIN_USERS, may see, speak with, rename or forget a voice."""
    return user is not None and (user == voice.owner or user in set(admins))


def _voice(row: sqlite3.Row) -> VoiceRecord:
    known = {f.name for f in fields(VoiceRecord)}
    return VoiceRecord(**{key: row[key] for key in row.keys() if key in known})  # noqa: SIM118 (a Row iterates values)


class VoiceLibrary:
    """The voices table in the bot's database."""

    def __init__(self, db: Database):
        self.db = db
        db.schema(_SCHEMA)
        # "pending" from the clone until the preview (or the sentence saying why there is none) is in the outbox:
        # a restart in between makes the preview then, instead of losing it.
        db.add_columns("voices", {"preview": "TEXT"})

    async def set_preview(self, team_id: str | None, voice_id: str, state: str | None) -> None:
        """Record where the voice's preview stands ("pending", "done", or None for none wanted)."""
        await self.db.run(
            lambda conn: conn.execute(
                "UPDATE voices SET preview = ? WHERE team_id = ? AND voice_id = ?", (state, team_id or "", voice_id)
            )
        )

    async def pending_previews(self, since: float) -> list[VoiceRecord]:
        """Voices cloned after `since` whose preview was never made (the bot stopped in between)."""

        def select(conn: sqlite3.Connection) -> list[VoiceRecord]:
            rows = conn.execute(
                "SELECT * FROM voices WHERE preview = 'pending' AND created_at >= ? ORDER BY created_at", (since,)
            ).fetchall()
            return [_voice(r) for r in rows]

        return await self.db.run(select)

    async def add(self, voice: VoiceRecord) -> bool:
        """Remember a voice; False when it was already known (a restart answering from a stored result)."""
        row = voice.to_dict()
        marks = ",".join("?" * len(row))
        sql = f"INSERT OR IGNORE INTO voices ({','.join(row)}) VALUES ({marks})"
        return await self.db.run(lambda conn: conn.execute(sql, tuple(row.values())).rowcount == 1)

    async def get(self, team_id: str | None, voice_id: str) -> VoiceRecord | None:
        """One voice by its VoiceId."""

        def select(conn: sqlite3.Connection) -> VoiceRecord | None:
            row = conn.execute(
                "SELECT * FROM voices WHERE team_id = ? AND voice_id = ?", (team_id or "", voice_id)
            ).fetchone()
            return _voice(row) if row else None

        return await self.db.run(select)

    async def find(
        self, team_id: str | None, user: str | None, ref: str, admins: Iterable[str] = ()
    ) -> VoiceRecord | None:
        """The voice `ref` names for `user`: a VoiceId, or a label or VoiceName among the voices they may reach."""
        voice = await self.get(team_id, ref)
        if voice is not None:
            return voice
        wanted = ref.strip().lower()
        for candidate in await self.listed(team_id, None if user in set(admins) else user):
            if wanted in ((candidate.label or "").lower(), candidate.voice_name.lower()):
                return candidate
        return None

    async def listed(self, team_id: str | None, owner: str | None) -> list[VoiceRecord]:
        """The workspace's voices, newest first; only `owner`'s when given (None: everyone's, for admins and the
        operator)."""

        def select(conn: sqlite3.Connection) -> list[VoiceRecord]:
            sql, args = "SELECT * FROM voices WHERE 1=1", []
            if team_id is not None:
                sql, args = sql + " AND team_id = ?", [*args, team_id]
            if owner is not None:
                sql, args = sql + " AND owner = ?", [*args, owner]
            return [_voice(r) for r in conn.execute(sql + " ORDER BY created_at DESC, voice_id", args)]

        return await self.db.run(select)

    async def rename(self, team_id: str | None, voice_id: str, label: str) -> bool:
        """Set the bot's label (Tencent's VoiceName cannot change)."""
        label = " ".join(label.split())[:MAX_LABEL]

        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE voices SET label = ? WHERE team_id = ? AND voice_id = ?",
                (label or None, team_id or "", voice_id),
            )
            return cur.rowcount > 0

        return await self.db.run(write)

    async def forget(self, team_id: str | None, voice_id: str) -> VoiceRecord | None:
        """Remove a voice and the job that made it (its options hold the transcript); return what was removed."""

        def delete(conn: sqlite3.Connection) -> VoiceRecord | None:
            row = conn.execute(
                "DELETE FROM voices WHERE team_id = ? AND voice_id = ? RETURNING *", (team_id or "", voice_id)
            ).fetchone()
            if row is None:
                return None
            voice = _voice(row)
            if voice.job_id is not None:
                _delete_jobs(conn, [voice.job_id])
            return voice

        return await self.db.run(delete)

    async def forget_user(self, team_id: str | None, user: str) -> tuple[list[VoiceRecord], int]:
        """Remove every voice `user` owns and every job they started (transcripts included): (voices, jobs)."""

        def delete(conn: sqlite3.Connection) -> tuple[list[VoiceRecord], int]:
            rows = conn.execute(
                "DELETE FROM voices WHERE team_id = ? AND owner = ? RETURNING *", (team_id or "", user)
            ).fetchall()
            voices = [_voice(r) for r in rows]
            ids = [r["id"] for r in conn.execute(
                "SELECT id FROM jobs WHERE user_id = ? AND (team_id = ? OR team_id IS NULL)", (user, team_id)
            )]
            ids += [v.job_id for v in voices if v.job_id is not None and v.job_id not in ids]
            _delete_jobs(conn, ids)
            return voices, len(ids)

        return await self.db.run(delete)


def _delete_jobs(conn: sqlite3.Connection, job_ids: list[int]) -> None:
    """Jobs and the Slack records that quote them (messages hold the VoiceId and file names). Pending records
    stay, so nothing half-sent is lost; they are purged by retention like every other record."""
    for job_id in job_ids:
        conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        conn.execute("DELETE FROM outbox WHERE job_id = ? AND state != 'pending'", (job_id,))
