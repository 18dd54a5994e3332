"""The stores' SQL for SQLite (`:name` parameters). One process, one connection, one writer at a time: a claim is
atomic as a single UPDATE, and there is nobody to notify."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from bot.store.sql import (
    JOB_SETTABLE,
    AuditSQL,
    Command,
    Dialect,
    JobsSQL,
    NameRow,
    OutboxSQL,
    Query,
    ReplaysSQL,
    Table,
    VoicesSQL,
)

# -- the connection --------------------------------------------------------------------------------------

# WAL + NORMAL: a committed row survives the process being killed (not a power cut), at a fraction of the cost of a
# full fsync per acknowledgement.
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=5000")
# IMMEDIATE takes the write lock at once: a transaction that reads then writes never fails half-way on a lock.
BEGIN = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
COLUMNS: Query[NameRow] = Query("SELECT name FROM pragma_table_info(:table)")


def add_column(table: str, column: str, kind: str) -> str:
    """ALTER TABLE for a column an older database lacks (names are the stores' own constants, never input)."""
    return f'ALTER TABLE "{table}" ADD COLUMN "{column}" {kind}'


# -- jobs ------------------------------------------------------------------------------------------------

_JOBS_TABLE = Table(
    name="jobs",
    create="""
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
""",
    added={
        "response_url": "TEXT",
        "waits": "INTEGER NOT NULL DEFAULT 0",
        "finished_at": "REAL",
        "consent": "TEXT",
        "prompt": "TEXT",
        "run_at": "REAL NOT NULL DEFAULT 0",
        "lease_owner": "TEXT",
        "lease_until": "REAL",
        "priority": "INTEGER NOT NULL DEFAULT 0",
        "speaker": "TEXT",
    },
    after="CREATE INDEX IF NOT EXISTS jobs_due ON jobs(status, run_at);"
    " CREATE INDEX IF NOT EXISTS jobs_kind_team ON jobs(kind, team_id, created_at);",
)


@functools.cache
def _update_job(columns: tuple[str, ...]) -> Command:
    unknown = set(columns) - JOB_SETTABLE
    if unknown or not columns:
        raise ValueError(f"not settable job columns: {sorted(unknown) or 'none given'}")
    assignments = ", ".join(f"{column} = :{column}" for column in columns)
    return Command(f"UPDATE jobs SET {assignments}, updated_at = :now WHERE id = :id")


JOBS = JobsSQL(
    table=_JOBS_TABLE,
    add=Query(
        "INSERT INTO jobs (dedupe_key, kind, event_id, team_id, channel, thread_ts, share_ts, user_id, file_json,"
        " options, created_at, updated_at, response_url, speaker)"
        " VALUES (:dedupe_key, :kind, :event_id, :team_id, :channel, :thread_ts, :share_ts, :user_id, :file_json,"
        " :options, :now, :now, :response_url, :speaker)"
        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
    ),
    get=Query("SELECT * FROM jobs WHERE id = :id"),
    # One writer at a time: the sub-select and the UPDATE cannot interleave with another claim. Fair: among due
    # jobs, the workspace with the fewest running goes first, then the user with the fewest running in it, then the
    # oldest; so a heavy user's backlog never delays a light user's one job by more than one worker's turn. The
    # running counts are read once (a few rows: at most the workers'), not per due job (2 ms, not 19, at 2000 due).
    claim_next=Query(
        "WITH busy AS (SELECT team_id, user_id, COUNT(*) AS n FROM jobs WHERE status = :running"
        " GROUP BY team_id, user_id),"
        " teams AS (SELECT team_id, SUM(n) AS n FROM busy GROUP BY team_id)"
        " UPDATE jobs SET status = :running, attempts = attempts + 1, lease_owner = :owner, lease_until = :until,"
        " updated_at = :now"
        " WHERE id = (SELECT j.id FROM jobs j LEFT JOIN teams t ON t.team_id IS j.team_id"
        " LEFT JOIN busy b ON b.team_id IS j.team_id AND b.user_id IS j.user_id"
        " WHERE (j.status = :queued AND j.run_at <= :now)"
        " OR (j.status = :running AND COALESCE(j.lease_until, 0) < :now)"
        " ORDER BY j.priority DESC, COALESCE(t.n, 0), COALESCE(b.n, 0), j.id LIMIT 1)"
        " RETURNING *"
    ),
    claim=Query(
        "UPDATE jobs SET status = :running, attempts = attempts + 1, lease_owner = :owner, lease_until = :until,"
        " updated_at = :now"
        " WHERE id = :id AND (status = :queued OR (status = :running AND COALESCE(lease_until, 0) < :now))"
        " RETURNING *"
    ),
    next_due=Query(
        "SELECT MIN(CASE WHEN status = :queued THEN run_at ELSE COALESCE(lease_until, 0) END) AS t"
        " FROM jobs WHERE status IN (:queued, :running)"
    ),
    renew=Command(
        "UPDATE jobs SET lease_until = :until"
        " WHERE lease_owner = :owner AND status = :running AND id IN (SELECT value FROM json_each(:ids))"
    ),
    holds=Query("SELECT id FROM jobs WHERE id = :id AND lease_owner = :owner AND status = :running"),
    release_all=Command("UPDATE jobs SET lease_until = 0 WHERE status = :running"),
    release_owner=Command("UPDATE jobs SET lease_until = 0 WHERE status = :running AND lease_owner = :owner"),
    pending=Query("SELECT COUNT(*) AS n FROM jobs WHERE status IN (:queued, :running)"),
    unfinished=Query("SELECT id FROM jobs WHERE status IN (:queued, :running) ORDER BY id"),
    update=_update_job,
    give_consent=Command(
        "UPDATE jobs SET status = :queued, consent = :consent, attempts = 0, run_at = 0, priority = 1,"
        " updated_at = :now WHERE id = :id AND status = :awaiting"
    ),
    end_waiting=Command(
        "UPDATE jobs SET status = :status, error = :error, finished_at = :now, updated_at = :now"
        " WHERE id = :id AND status = :awaiting"
    ),
    waiting_since=Query("SELECT id FROM jobs WHERE status = :awaiting AND updated_at < :before ORDER BY id"),
    with_prompt=Query("SELECT id FROM jobs WHERE prompt IS NOT NULL AND status IN (:awaiting, :queued, :running)"),
    purge=Query(
        "DELETE FROM jobs WHERE status IN (SELECT value FROM json_each(:finished))"
        " AND COALESCE(finished_at, updated_at) < :before RETURNING id"
    ),
    share_statuses=Query("SELECT status FROM jobs WHERE channel = :channel AND share_ts = :share_ts ORDER BY id"),
    counts=Query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status"),
    # Asked for by the user, or of their recording (forget-me).
    of_user=Query(
        "SELECT id FROM jobs WHERE (user_id = :user OR speaker = :user) AND (team_id = :team OR team_id IS NULL)"
    ),
    of_team=Query("SELECT id FROM jobs WHERE team_id = :team"),
    delete=Command("DELETE FROM jobs WHERE id = :id"),
    delete_team=Command("DELETE FROM jobs WHERE team_id = :team"),
    admission=Query(
        "SELECT a.mine AS jobs_mine, a.n AS jobs_n, s.mine AS says_mine, s.mine_oldest AS says_mine_oldest,"
        " s.n AS says_n, s.oldest AS says_oldest, v.mine AS voices_mine, v.n AS voices_n"
        " FROM (SELECT COALESCE(SUM(CASE WHEN user_id = :user THEN 1 ELSE 0 END), 0) AS mine, COUNT(*) AS n"
        " FROM jobs WHERE status IN (:queued, :running) AND team_id IS :team) a,"
        " (SELECT COALESCE(SUM(CASE WHEN user_id = :user THEN 1 ELSE 0 END), 0) AS mine,"
        " MIN(CASE WHEN user_id = :user THEN created_at END) AS mine_oldest, COUNT(*) AS n,"
        " MIN(created_at) AS oldest FROM jobs WHERE :says AND kind = :say AND team_id IS :team"
        " AND created_at >= :since) s,"
        " (SELECT COALESCE(SUM(CASE WHEN owner = :user THEN 1 ELSE 0 END), 0) AS mine, COUNT(*) AS n"
        " FROM voices WHERE :voices AND team_id = :voice_team) v"
    ),
    admission_by_user=Query(
        "SELECT 'jobs' AS part, user_id AS who, COUNT(*) AS n, NULL AS oldest FROM jobs"
        " WHERE :jobs AND status IN (:queued, :running) AND team_id IS :team GROUP BY user_id"
        " UNION ALL SELECT 'says', user_id, COUNT(*), MIN(created_at) FROM jobs"
        " WHERE :says AND kind = :say AND team_id IS :team AND created_at >= :since GROUP BY user_id"
        " UNION ALL SELECT 'voices', owner, COUNT(*), NULL FROM voices"
        " WHERE :voices AND team_id = :voice_team GROUP BY owner"
    ),
)

# -- outbox ----------------------------------------------------------------------------------------------

_OUTBOX_INSERT = (
    "INSERT INTO outbox (key, kind, job_id, team_id, channel, thread_ts, thread_key, ts, payload, fallback,"
    " expires_at, created_at, updated_at, after_key, user_id)"
    " VALUES (:key, :kind, :job_id, :team_id, :channel, :thread_ts, :thread_key, :ts, :payload, :fallback,"
    " :expires_at, :now, :now, :after_key, :user_id)"
)

OUTBOX = OutboxSQL(
    table=Table(
        name="outbox",
        create="""
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
""",
        # The user a record serves (put_ephemeral: its recipient): the sender keeps order per (channel, user).
        added={"user_id": "TEXT"},
    ),
    # A newer desired state bumps the version. It is due at edit_at (Outbox.put_message's `settle`: a progress edit
    # may wait for a newer state; anything else has edit_at 0, due at once whatever the writer's clock), but a record
    # waiting out a backoff keeps its next_at, and so does a progress edit already waiting: a newer one goes out at
    # the older one's time, so progress shows at most one settle late. A message never posted is due whatever its
    # next_at (see `due`): its first post goes out at once, with the newest state, and an edit stored while that post
    # was on its way waits its settle after it. (That OR costs `due` its index range on next_at: with 5,000 records
    # in backoff, measured 0.8 ms a pass on SQLite and 1.1 ms on PostgreSQL instead of 0.2 and 0.5 ms.)
    upsert=Command(
        _OUTBOX_INSERT + " ON CONFLICT (key) DO UPDATE SET payload = excluded.payload, version = outbox.version + 1,"
        " updated_at = excluded.updated_at, after_key = excluded.after_key,"
        " next_at = CASE WHEN outbox.attempts > 0"
        " OR (:edit_at > :now AND outbox.next_at > :now) THEN outbox.next_at ELSE :edit_at END,"
        " state = CASE WHEN outbox.state = 'dead' THEN 'dead' ELSE 'pending' END"
        " WHERE outbox.payload != excluded.payload"
    ),
    insert_once=Command(_OUTBOX_INSERT + " ON CONFLICT (key) DO NOTHING"),
    # Each lane's (a channel and the user served there) first due record, then each one's second, ...: a light
    # user's record is among the first rows however long another user's backlog in the channel is. Ranked on ids
    # only; the rows read are the few chosen.
    due=Query(
        "WITH d AS (SELECT o.id, ROW_NUMBER() OVER (PARTITION BY o.channel, o.user_id ORDER BY o.id) AS lane_rank"
        " FROM outbox o"
        " LEFT JOIN outbox p ON p.key = o.thread_key"
        " LEFT JOIN outbox a ON a.key = o.after_key"
        " WHERE o.state = 'pending' AND (o.next_at <= :now OR (o.ts IS NULL AND o.attempts = 0))"
        " AND o.expires_at >= :now"
        " AND (o.thread_key IS NULL OR p.ts IS NOT NULL OR p.state = 'dead' OR p.id IS NULL)"
        " AND (o.after_key IS NULL OR a.id IS NULL OR a.state != 'pending')"
        " AND (o.team_id IS NULL OR o.team_id NOT IN (SELECT value FROM json_each(:skip_teams)))"
        " ORDER BY lane_rank, o.id LIMIT :limit)"
        " SELECT o.*, p.ts AS parent_ts, p.state AS parent_state FROM d JOIN outbox o ON o.id = d.id"
        " LEFT JOIN outbox p ON p.key = o.thread_key ORDER BY d.lane_rank, o.id"
    ),
    # The earliest *future* next_at: one at or before now is due (then sent, and its end wakes the sender) or waits
    # for a record that has its own (a parent, an after_key, a backoff); counting it would hide a later one.
    next_due_at=Query("SELECT MIN(next_at) AS t FROM outbox WHERE state = 'pending' AND next_at > :now"),
    get=Query("SELECT * FROM outbox WHERE key = :key"),
    delivered=Command(
        "UPDATE outbox SET sent_version = :version, ts = COALESCE(:ts, ts), channel = COALESCE(:channel, channel),"
        " attempts = 0, last_error = NULL, updated_at = :now,"
        " state = CASE WHEN state = 'pending' AND version <= :version THEN 'sent' ELSE state END WHERE id = :id"
    ),
    set_ts=Command(
        "UPDATE outbox SET ts = :ts, channel = COALESCE(:channel, channel), updated_at = :now WHERE id = :id"
    ),
    set_applied=Command("UPDATE outbox SET applied = :applied WHERE id = :id"),
    retry_at=Command(
        "UPDATE outbox SET attempts = attempts + 1, next_at = :when, last_error = :error, updated_at = :now"
        " WHERE id = :id"
    ),
    repost=Command("UPDATE outbox SET ts = NULL, next_at = 0 WHERE id = :id"),
    # An ephemeral message moved to a DM becomes an ordinary message there.
    redirect=Command(
        "UPDATE outbox SET kind = 'message', channel = :channel, thread_ts = NULL, thread_key = NULL, ts = NULL,"
        " fallback = :fallback, version = version + 1, next_at = 0, updated_at = :now WHERE id = :id"
    ),
    give_up=Command("UPDATE outbox SET state = 'dead', last_error = :error, updated_at = :now WHERE id = :id"),
    expire=Query(
        "UPDATE outbox SET state = 'dead', updated_at = :now WHERE state = 'pending' AND expires_at < :now RETURNING *"
    ),
    purge=Command("DELETE FROM outbox WHERE state != 'pending' AND updated_at < :before"),
    depth=Query("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'"),
    pending_uploads=Query("SELECT payload FROM outbox WHERE kind = 'upload' AND state = 'pending'"),
    delete_sent_of_job=Command("DELETE FROM outbox WHERE job_id = :job_id AND state != 'pending'"),
    delete_team=Command("DELETE FROM outbox WHERE team_id = :team"),
)

# -- voices ----------------------------------------------------------------------------------------------

_VOICE_COLUMNS = (
    "team_id, voice_id, voice_name, owner, created_at, file_name, seconds, model, language, channel, thread_ts,"
    " request_id, label, job_id"
)

VOICES = VoicesSQL(
    table=Table(
        name="voices",
        create="""
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
""",
        added={"preview": "TEXT"},
    ),
    set_preview=Command("UPDATE voices SET preview = :preview WHERE team_id = :team AND voice_id = :voice_id"),
    pending_previews=Query(
        "SELECT * FROM voices WHERE preview = 'pending' AND created_at >= :since ORDER BY created_at"
    ),
    add=Command(
        f"INSERT INTO voices ({_VOICE_COLUMNS})"
        " VALUES (:team_id, :voice_id, :voice_name, :owner, :created_at, :file_name, :seconds, :model, :language,"
        " :channel, :thread_ts, :request_id, :label, :job_id)"
        " ON CONFLICT (team_id, voice_id) DO NOTHING"
    ),
    get=Query("SELECT * FROM voices WHERE team_id = :team AND voice_id = :voice_id"),
    listed=Query(
        "SELECT * FROM voices WHERE (:team IS NULL OR team_id = :team) AND (:owner IS NULL OR owner = :owner)"
        " ORDER BY created_at DESC, voice_id"
    ),
    rename=Command("UPDATE voices SET label = :label WHERE team_id = :team AND voice_id = :voice_id"),
    forget=Query("DELETE FROM voices WHERE team_id = :team AND voice_id = :voice_id RETURNING *"),
    forget_owner=Query("DELETE FROM voices WHERE team_id = :team AND owner = :owner RETURNING *"),
    delete_team=Command("DELETE FROM voices WHERE team_id = :team"),
    # One writer at a time: nothing can delete the job between this and the voice's INSERT.
    job_alive=Query("SELECT id FROM jobs WHERE id = :id"),
    held=Query(
        "SELECT COALESCE(SUM(CASE WHEN owner = :owner THEN 1 ELSE 0 END), 0) AS mine, NULL AS mine_oldest,"
        " COUNT(*) AS n, NULL AS oldest FROM voices WHERE team_id = :team"
    ),
)

# -- audit -----------------------------------------------------------------------------------------------

_AUDIT_COLUMNS = (
    "at, team_id, user_id, consent, job_id, file_id, file_name, audio_sha256, seconds, voice_name, voice_id,"
    " request_id, outcome, requester"
)

AUDIT = AuditSQL(
    table=Table(
        name="audit",
        create="""
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
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit is append-only'); END;
""",
        added={"requester": "TEXT"},
    ),
    record=Command(
        f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES (:at, :team_id, :user_id, :consent, :job_id, :file_id,"
        " :file_name, :audio_sha256, :seconds, :voice_name, :voice_id, :request_id, :outcome, :requester)"
    ),
    entries=Query(
        f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE at >= :since AND (:team IS NULL OR team_id = :team) ORDER BY id"
    ),
    voices_made=Query("SELECT COUNT(DISTINCT voice_id) AS n FROM audit WHERE voice_id IS NOT NULL"),
)


# -- replays --------------------------------------------------------------------------------------------

REPLAYS = ReplaysSQL(
    table=Table(
        name="replays",
        create="""
CREATE TABLE IF NOT EXISTS replays (
    key         TEXT PRIMARY KEY,
    expires_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS replays_expiry ON replays(expires_at);
""",
    ),
    # A key whose last sighting has expired counts as new again (the sweep may not have run yet).
    first=Command(
        "INSERT INTO replays (key, expires_at) VALUES (:key, :until)"
        " ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE replays.expires_at < :now"
    ),
    sweep=Command("DELETE FROM replays WHERE expires_at < :now"),
)


def _array(values: Sequence[Any]) -> str:
    return json.dumps(list(values))


DIALECT = Dialect(
    name="sqlite", jobs=JOBS, outbox=OUTBOX, voices=VOICES, audit=AUDIT, replays=REPLAYS, array=_array
)
