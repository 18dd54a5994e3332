"""The consent audit: one append-only line per clone attempt, kept when everything else about a job is deleted.

A cloned voice is permanent at Tencent, so this is the record of who consented to what, and how. The table
refuses UPDATE and DELETE (triggers in the database itself; TRUNCATE too on PostgreSQL), so the bot's own code
cannot rewrite it either.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from bot.store.database import Connection, Database

# How consent was given.
BUTTON = "button"  # the uploader pressed "Clone this voice"
FORM = "form"  # the uploader ticked the consent box in the /clone form
ATTESTED = "attested"  # the workspace collects consent outside Slack (CONSENT=attested)
OPERATOR = "operator"  # the operator ran `python -m bot clone` on a local file

COLUMNS = (
    "at", "team_id", "user_id", "consent", "job_id", "file_id", "file_name", "audio_sha256", "seconds",
    "voice_name", "voice_id", "request_id", "outcome", "requester",
)


@dataclass(frozen=True)
class AuditEntry:
    """One clone attempt: who consented and how, what was sent, what came back."""

    consent: str
    outcome: str  # "cloned", or the error code / exception name
    team_id: str | None = None
    user_id: str | None = None
    job_id: int | None = None
    file_id: str | None = None
    file_name: str | None = None
    audio_sha256: str | None = None
    seconds: float | None = None
    voice_name: str | None = None
    voice_id: str | None = None
    request_id: str | None = None
    # Who asked for the clone; user_id is the speaker who consented (they differ when someone ran `/clone` on
    # another person's recording).
    requester: str | None = None
    at: float = 0.0


class Audit:
    """Append and read the audit table (in the bot's database)."""

    def __init__(self, db: Database):
        self.db = db
        self.sql = db.sql.audit
        db.create(self.sql.table)

    def _append(self, entry: AuditEntry) -> Callable[[Connection], int]:
        row = asdict(entry)
        row["at"] = entry.at or time.time()
        return lambda conn: conn.run(self.sql.record, row)

    async def record(self, entry: AuditEntry) -> None:
        """Append one line (now, unless the entry carries a time)."""
        await self.db.run(self._append(entry))

    def record_sync(self, entry: AuditEntry) -> None:
        """record() for code without an event loop (the CLI)."""
        self.db.call(self._append(entry))

    def voices_made_in(self, conn: Connection) -> int:
        """Distinct VoiceIds cloned on the Tencent account, forgotten ones included (Tencent cannot delete them)."""
        row = conn.one(self.sql.voices_made, {})
        return row["n"] if row else 0

    def entries(self, since: float | None = None, team_id: str | None = None) -> list[AuditEntry]:
        """Every line, oldest first (optionally from `since`, a Unix time; only workspace `team_id`'s when given:
        kept after its uninstall, for Tencent support's questions about its VoiceIds and RequestIds)."""
        params = {"since": since or 0.0, "team": team_id}

        def select(conn: Connection) -> list[AuditEntry]:
            return [AuditEntry(**row) for row in conn.all(self.sql.entries, params)]

        return self.db.call(select)


def iso(at: float) -> str:
    """A Unix time as ISO 8601 UTC."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def render(entries: Iterable[AuditEntry], fmt: str = "csv") -> str:
    """The audit as CSV (a header line, then one line each) or JSON lines, with times in ISO 8601 UTC."""
    rows = [{**asdict(e), "at": iso(e.at)} for e in entries]
    if fmt == "json":
        return "".join(json.dumps({c: r[c] for c in COLUMNS}) + "\n" for r in rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: r[c] for c in COLUMNS} for r in rows)
    return out.getvalue()
