"""The consent audit: one append-only line per clone attempt, kept when everything else about a job is deleted.

A cloned voice is permanent at Tencent, so this is the record of who consented to what, and how. The table
refuses UPDATE and DELETE (SQLite triggers), so the bot's own code cannot rewrite it either.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from bot.store.database import SQLITE, Database

# How consent was given.
BUTTON = "button"  # the uploader pressed "Clone this voice"
FORM = "form"  # the uploader ticked the consent box in the /clone form
ATTESTED = "attested"  # the workspace collects consent outside Slack (CONSENT=attested)
OPERATOR = "operator"  # the operator ran `python -m bot clone` on a local file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           REAL NOT NULL,
    team_id      TEXT,
    user_id      TEXT,
    consent      TEXT NOT NULL,
    job_id       INTEGER,
    file_id      TEXT,
    file_name    TEXT,
    audio_sha256 TEXT,
    seconds      REAL,
    voice_name   TEXT,
    voice_id     TEXT,
    request_id   TEXT,
    outcome      TEXT NOT NULL
);
"""
_TABLE = _SCHEMA
_SCHEMA += """
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit is append-only'); END;
"""
# The same refusal in PostgreSQL (TRUNCATE too, which skips row triggers there).
_PG_SCHEMA = _TABLE + """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
$fn$ BEGIN RAISE EXCEPTION 'the audit is append-only'; END $fn$;
CREATE OR REPLACE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""

COLUMNS = (
    "at", "team_id", "user_id", "consent", "job_id", "file_id", "file_name", "audio_sha256", "seconds",
    "voice_name", "voice_id", "request_id", "outcome",
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
    at: float = 0.0


class Audit:
    """Append and read the audit table (in the bot's database)."""

    def __init__(self, db: Database):
        self.db = db
        db.schema(_SCHEMA if db.dialect == SQLITE else _PG_SCHEMA)

    async def record(self, entry: AuditEntry) -> None:
        """Append one line (now, unless the entry carries a time)."""
        row = asdict(entry)
        row["at"] = entry.at or time.time()
        values = tuple(row[c] for c in COLUMNS)
        marks = ",".join("?" * len(COLUMNS))
        await self.db.run(
            lambda conn: conn.execute(f"INSERT INTO audit ({','.join(COLUMNS)}) VALUES ({marks})", values)
        )

    def record_sync(self, entry: AuditEntry) -> None:
        """record() for code without an event loop (the CLI)."""
        row = asdict(entry)
        row["at"] = entry.at or time.time()
        values = tuple(row[c] for c in COLUMNS)
        marks = ",".join("?" * len(COLUMNS))
        self.db.call(lambda conn: conn.execute(f"INSERT INTO audit ({','.join(COLUMNS)}) VALUES ({marks})", values))

    def entries(self, since: float | None = None) -> list[AuditEntry]:
        """Every line, oldest first (optionally from `since`, a Unix time)."""

        def select(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                f"SELECT {','.join(COLUMNS)} FROM audit WHERE at >= ? ORDER BY id", (since or 0.0,)
            ).fetchall()
            return [AuditEntry(**{c: r[c] for c in COLUMNS}) for r in rows]

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
