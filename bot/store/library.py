"""The voice library: the bot's own record of every voice it cloned, per workspace (Tencent offers no API to list or
delete cloned voices, so this is the only list there is). Slack-free; who may reach a voice is decided here too."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from bot.store.database import Connection, Database
from bot.store.sql import VoiceRow

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


def _voice(row: VoiceRow) -> VoiceRecord:
    return VoiceRecord(
        team_id=row["team_id"],
        voice_id=row["voice_id"],
        voice_name=row["voice_name"],
        owner=row["owner"],
        created_at=row["created_at"],
        file_name=row["file_name"],
        seconds=row["seconds"],
        model=row["model"],
        language=row["language"],
        channel=row["channel"],
        thread_ts=row["thread_ts"],
        request_id=row["request_id"],
        label=row["label"],
        job_id=row["job_id"],
    )


class VoiceLibrary:
    """The voices table in the bot's database."""

    def __init__(self, db: Database):
        self.db = db
        self.sql = db.sql.voices
        db.create(self.sql.table)

    async def set_preview(self, team_id: str | None, voice_id: str, state: str | None) -> None:
        """Record where the voice's preview stands ("pending", "done", or None for none wanted)."""
        params = {"preview": state, "team": team_id or "", "voice_id": voice_id}
        await self.db.run(lambda conn: conn.run(self.sql.set_preview, params))

    async def pending_previews(self, since: float) -> list[VoiceRecord]:
        """Voices cloned after `since` whose preview was never made (the bot stopped in between)."""
        params = {"since": since}
        return await self.db.run(lambda conn: [_voice(row) for row in conn.all(self.sql.pending_previews, params)])

    async def add(self, voice: VoiceRecord) -> bool:
        """Remember a voice; False when it was already known (a restart answering from a stored result), or when
        the job that made it is gone: its speaker asked to be forgotten while it was being cloned."""
        params = voice.to_dict()

        def insert(conn: Connection) -> bool:
            with conn.transaction():
                if voice.job_id is not None and conn.one(self.sql.job_alive, {"id": voice.job_id}) is None:
                    return False
                return conn.run(self.sql.add, params) == 1

        return await self.db.run(insert)

    def held_in(self, conn: Connection, team_id: str | None, owner: str | None) -> tuple[int, int]:
        """Voices kept: (`owner`'s, the workspace's); on the database thread, in a caller's transaction."""
        row = conn.one(self.sql.held, {"team": team_id or "", "owner": owner})
        return (row["mine"], row["n"]) if row else (0, 0)

    async def get(self, team_id: str | None, voice_id: str) -> VoiceRecord | None:
        """One voice by its VoiceId."""

        def select(conn: Connection) -> VoiceRecord | None:
            row = conn.one(self.sql.get, {"team": team_id or "", "voice_id": voice_id})
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
        operator); every workspace's when `team_id` is None (the operator)."""
        params = {"team": team_id, "owner": owner}
        return await self.db.run(lambda conn: [_voice(row) for row in conn.all(self.sql.listed, params)])

    async def rename(self, team_id: str | None, voice_id: str, label: str) -> bool:
        """Set the bot's label (Tencent's VoiceName cannot change)."""
        label = " ".join(label.split())[:MAX_LABEL]
        params = {"label": label or None, "team": team_id or "", "voice_id": voice_id}
        return await self.db.run(lambda conn: conn.run(self.sql.rename, params) > 0)

    async def forget(self, team_id: str | None, voice_id: str) -> VoiceRecord | None:
        """Remove a voice and the job that made it (its options hold the transcript); return what was removed."""

        def delete(conn: Connection) -> VoiceRecord | None:
            with conn.transaction():
                row = conn.one(self.sql.forget, {"team": team_id or "", "voice_id": voice_id})
                if row is None:
                    return None
                voice = _voice(row)
                if voice.job_id is not None:
                    _delete_jobs(conn, [voice.job_id])
                return voice

        return await self.db.run(delete)

    async def forget_user(self, team_id: str | None, user: str) -> tuple[list[VoiceRecord], int]:
        """Remove every voice `user` owns and every job they started or that clones their recording (transcripts
        included): (voices, jobs). A clone running meanwhile keeps no voice (see add())."""

        def delete(conn: Connection) -> tuple[list[VoiceRecord], int]:
            with conn.transaction():
                # Jobs first: deleting one waits for a voice being stored from it (add() holds its row), so the
                # voices read after that include it.
                ids = [row["id"] for row in conn.all(conn.sql.jobs.of_user, {"user": user, "team": team_id})]
                _delete_jobs(conn, ids)
                voices = [_voice(r) for r in conn.all(self.sql.forget_owner, {"team": team_id or "", "owner": user})]
                more = [v.job_id for v in voices if v.job_id is not None and v.job_id not in ids]
                _delete_jobs(conn, more)
                return voices, len(ids) + len(more)

        return await self.db.run(delete)


def _delete_jobs(conn: Connection, job_ids: list[int]) -> None:
    """Jobs and the Slack records that quote them (messages hold the VoiceId and file names). Pending records
    stay, so nothing half-sent is lost; they are purged by retention like every other record."""
    for job_id in job_ids:
        conn.run(conn.sql.jobs.delete, {"id": job_id})
        conn.run(conn.sql.outbox.delete_sent_of_job, {"job_id": job_id})
