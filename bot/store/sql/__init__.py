"""Every statement the stores run, written once per dialect: sqlite.py and postgresql.py each build the named sets
declared here (a set missing a statement, or with one too many, fails at import), in their own SQL and their own
placeholder style (`:name` and `%(name)s`). Nothing rewrites SQL at run time.

Why hand-written statements rather than SQLAlchemy Core: the queue's statements are where the dialects really
differ (SKIP LOCKED, arrays, advisory locks, LISTEN/NOTIFY, triggers), and those are exactly the ones Core would
need raw text for anyway; the rest is short SQL that reads better as SQL. Side by side, each dialect's version of
a statement can be reviewed against the other, and nothing compiles statements on the event loop's hot path (the
web role's acknowledgement is one INSERT). SQLAlchemy stays where slack_sdk brings it: the OAuth stores.

A statement's rows are typed: `Query[JobRow]` returns dicts with the jobs table's columns, so the store code
reading them is checked against what the statement selects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypedDict, TypeVar

R = TypeVar("R")

# Named parameters: a statement names each value once, however often it uses it.
Params = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Query(Generic[R]):
    """A statement whose rows the caller reads (dicts shaped like R)."""

    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """A statement run for its effect; the caller may read how many rows it touched."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table's DDL: `create` makes it as first released (idempotent); `added` are the columns (name -> type) an
    older database lacks and gets on open; `after` runs once they exist (indexes on them, triggers)."""

    name: str
    create: str
    added: Mapping[str, str] = field(default_factory=dict)
    after: str = ""


# -- rows ------------------------------------------------------------------------------------------------


class IdRow(TypedDict):
    id: int


class CountRow(TypedDict):
    n: int


class TimeRow(TypedDict):
    t: float | None


class StatusRow(TypedDict):
    status: str


class StatusCountRow(TypedDict):
    status: str
    n: int


class NameRow(TypedDict):
    name: str


class FlagRow(TypedDict):
    held: bool


class JobRow(TypedDict):
    id: int
    dedupe_key: str
    kind: str
    event_id: str | None
    team_id: str | None
    channel: str | None
    thread_ts: str | None
    share_ts: str | None
    user_id: str | None
    file_json: str
    options: str
    status: str
    stage: str | None
    status_ts: str | None
    attempts: int
    result: str | None
    error: str | None
    created_at: float
    updated_at: float
    response_url: str | None
    waits: int
    finished_at: float | None
    consent: str | None  # JSON {"how": button|form|attested, "user": ..., "at": ...} once given
    prompt: str | None  # JSON: the prepared prompt's facts (pipeline.Prompt.meta()) while it waits for consent
    # The queue: a queued job is due at run_at (a retry waits); a running one belongs to lease_owner until
    # lease_until, renewed while it runs; past that any process may take it over (its owner died).
    run_at: float
    lease_owner: str | None
    lease_until: float | None
    priority: int  # a clone the uploader just confirmed goes first
    # Whose voice the recording is (the file's uploader): only they consent, and the voice is theirs. NULL until a
    # `/clone <file>` request has looked the file up; user_id is who asked.
    speaker: str | None


class OutboxRow(TypedDict):
    id: int
    key: str
    kind: str
    job_id: int | None
    team_id: str | None
    channel: str
    thread_ts: str | None
    thread_key: str | None
    after_key: str | None
    ts: str | None
    payload: str
    version: int
    sent_version: int
    applied: str
    fallback: str | None
    state: str
    attempts: int
    next_at: float
    expires_at: float
    created_at: float
    updated_at: float
    last_error: str | None
    user_id: str | None  # the user the record serves: the sender keeps order per (channel, user_id)


class DueRow(OutboxRow):
    """A record with where its thread's parent stands (the sender posts a reply only once the parent is up)."""

    parent_ts: str | None
    parent_state: str | None


class PayloadRow(TypedDict):
    payload: str


class VoiceRow(TypedDict):
    team_id: str
    voice_id: str
    voice_name: str
    owner: str | None
    created_at: float
    file_name: str | None
    seconds: float | None
    model: str | None
    language: str | None
    channel: str | None
    thread_ts: str | None
    request_id: str | None
    label: str | None
    job_id: int | None
    # "pending" from the clone until the preview (or the sentence saying why there is none) is in the outbox: a
    # restart in between makes the preview then, instead of losing it.
    preview: str | None


class AuditRow(TypedDict):
    at: float
    team_id: str | None
    user_id: str | None
    consent: str
    job_id: int | None
    file_id: str | None
    file_name: str | None
    audio_sha256: str | None
    seconds: float | None
    voice_name: str | None
    voice_id: str | None
    request_id: str | None
    outcome: str
    requester: str | None  # who asked for the clone, when not the speaker who consented (user_id)


class QuotaRow(TypedDict):
    mine: int  # one user's rows among them
    mine_oldest: float | None
    n: int  # the workspace's rows
    oldest: float | None


class AdmissionRow(TypedDict):
    jobs_mine: int
    jobs_n: int
    says_mine: int
    says_mine_oldest: float | None
    says_n: int
    says_oldest: float | None
    voices_mine: int
    voices_n: int


class AdmissionByUserRow(TypedDict):
    part: str  # "jobs", "says" or "voices"
    who: str | None  # the user (the owner, for voices)
    n: int
    oldest: float | None  # says: the oldest of the user's in the window


# -- the named statements, per store ---------------------------------------------------------------------

# The columns JobStore.update may set; each dialect's `update` builds its SET list from these names only.
JOB_SETTABLE = frozenset({
    "status", "stage", "status_ts", "thread_ts", "channel", "attempts", "result", "error", "file_json", "waits",
    "finished_at", "consent", "prompt", "run_at", "lease_owner", "lease_until", "speaker",
})


@dataclass(frozen=True)
class JobsSQL:
    table: Table
    add: Query[IdRow]
    get: Query[JobRow]
    claim_next: Query[JobRow]
    claim: Query[JobRow]
    next_due: Query[TimeRow]
    renew: Command
    holds: Query[IdRow]
    release_all: Command
    release_owner: Command
    pending: Query[CountRow]
    unfinished: Query[IdRow]
    # SET these columns (a subset of JOB_SETTABLE, each a parameter of its own name) and updated_at = :now.
    update: Callable[[tuple[str, ...]], Command]
    give_consent: Command
    end_waiting: Command
    waiting_since: Query[IdRow]
    with_prompt: Query[IdRow]
    purge: Query[IdRow]
    share_statuses: Query[StatusRow]
    counts: Query[StatusCountRow]
    of_user: Query[IdRow]
    of_team: Query[IdRow]
    delete: Command
    delete_team: Command
    # Fair use (bot.work.quotas), in one statement: a user's and their workspace's jobs queued or running; with `says`,
    # their `say`s since a time (and the oldest); with `voices`, the voices they keep (the library's table); 0 for
    # what was not asked for. `admission_by_user`: the same for every user of the workspace (with `jobs`: the jobs
    # part), read once by a batch of acknowledgements; parts not asked for have no rows.
    admission: Query[AdmissionRow]
    admission_by_user: Query[AdmissionByUserRow]


@dataclass(frozen=True)
class OutboxSQL:
    table: Table
    upsert: Command
    insert_once: Command
    # Due records in lane order: each (channel, user_id)'s first, then each one's second, ... (oldest first within).
    due: Query[DueRow]
    next_due_at: Query[TimeRow]
    get: Query[OutboxRow]
    delivered: Command
    set_ts: Command
    set_applied: Command
    retry_at: Command
    repost: Command
    redirect: Command
    give_up: Command
    expire: Query[OutboxRow]
    purge: Command
    depth: Query[CountRow]
    pending_uploads: Query[PayloadRow]
    delete_sent_of_job: Command
    delete_team: Command


@dataclass(frozen=True)
class VoicesSQL:
    table: Table
    set_preview: Command
    pending_previews: Query[VoiceRow]
    add: Command
    get: Query[VoiceRow]
    listed: Query[VoiceRow]
    rename: Command
    forget: Query[VoiceRow]
    forget_owner: Query[VoiceRow]
    delete_team: Command
    # The job a new voice comes from, locked until the voice is stored (a forget-me waits for it, or wins).
    job_alive: Query[IdRow]
    held: Query[QuotaRow]


@dataclass(frozen=True)
class AuditSQL:
    table: Table
    record: Command
    entries: Query[AuditRow]
    # Distinct VoiceIds the Tencent account has made (forgotten ones included: Tencent cannot delete them).
    voices_made: Query[CountRow]


@dataclass(frozen=True)
class ReplaysSQL:
    table: Table
    # 1 row touched: the key is new (or its last sighting expired); 0: seen within its window.
    first: Command
    sweep: Command


@dataclass(frozen=True)
class Dialect:
    """One database's SQL for every store, and how it takes a list as one parameter."""

    name: str
    jobs: JobsSQL
    outbox: OutboxSQL
    voices: VoicesSQL
    audit: AuditSQL
    replays: ReplaysSQL
    # A list of values as a single parameter (SQLite: JSON text for json_each; PostgreSQL: an array).
    array: Callable[[Sequence[Any]], Any]
