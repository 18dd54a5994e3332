"""The database behind every store: embedded SQLite (default, one process) or PostgreSQL (several replicas).

The stores write portable SQL against a sqlite3-shaped connection (`execute(sql, params)` with `?` marks,
`with conn:` for a transaction, rows readable by name and by index); on PostgreSQL a thin adapter translates the
few differences (placeholders, `INSERT OR IGNORE`, DDL types). Every call runs on the database's own threads, so
the event loop never waits on a socket or the disk. Hand-written rather than SQLAlchemy Core: the stores'
queries were already portable SQL, and a thin adapter (PgConnection, translate) keeps SQLite's one-connection,
zero-setup path exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


class Database:
    """A SQLite connection used only from its own thread; `run()` awaits a function of the connection there."""

    dialect = SQLITE
    # SQLite is one process: the only holder of the leadership (outbox sender, housekeeping) is this one.
    shared = False

    def __init__(self, path: str | Path, schema: str = ""):
        self.path = str(path)
        # One thread owns the connection: SQLite connections are not shared across threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database")
        self._conn: Any = None
        self._executor.submit(self._open).result()
        if schema:
            self.call(lambda conn: conn.executescript(schema))

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # WAL + NORMAL: a committed row survives the process being killed (not a power cut), at a fraction of
        # the cost of a full fsync per acknowledgement.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn

    async def run(self, fn: Callable[[Any], T]) -> T:
        """Run fn(connection) on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._conn)

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run fn(connection) on the database thread and block for the answer (start-up, tools)."""
        return self._executor.submit(fn, self._conn).result()

    def schema(self, script: str) -> None:
        """Create tables and indexes (idempotent)."""
        self.call(lambda conn: conn.executescript(script))

    def add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Add columns a database made by an older version lacks (SQLite has no ADD COLUMN IF NOT EXISTS)."""

        def migrate(conn: sqlite3.Connection) -> None:
            have = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

        self.call(migrate)

    async def run_batched(self, fn: Callable[[Any], T]) -> T:
        """run(fn), where several processes' worth of small writes may share one transaction (PostgreSQL)."""
        return await self.run(fn)

    def notify_in(self, conn: Any, channel: str) -> None:
        """From inside a write: tell other processes `channel` has news once it commits (one process: nothing)."""

    async def notify(self, channel: str) -> None:
        """Tell other processes something changed (one process here: nothing to do)."""

    def close(self) -> None:
        """Close the connection and its thread."""
        if self._conn is not None:
            self.call(lambda conn: conn.close())
            self._conn = None
        self._executor.shutdown(wait=True)


def open_database(url_or_path: str | Path, *, connections: int = 4) -> Database:
    """A Database for `postgresql://...`, else a SQLite file path (or ':memory:')."""
    text = str(url_or_path)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(text, connections=connections)
    if text.startswith("sqlite:"):
        from bot.settings import sqlite_path

        text = sqlite_path(text)
    return Database(text)


# -- PostgreSQL ---------------------------------------------------------------------------------------------


class Row:
    """A result row readable like sqlite3.Row: by column name, by index, and `keys()`."""

    __slots__ = ("_index", "_names", "_values")

    def __init__(self, names: list[str], index: dict[str, int], values: Sequence[Any]):
        self._names = names
        self._index = index
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Any:
        return iter(self._values)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = [column.name for column in cursor.description or ()]
    index = {name: i for i, name in enumerate(names)}
    return lambda values: Row(names, index, values)


_MARK = re.compile(r"\?")
_RETURNING = re.compile(r"\sRETURNING\s", re.IGNORECASE)


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """One statement in SQLite's dialect (as the stores write it) in PostgreSQL's."""
    out = sql.replace("%", "%%")
    out = _MARK.sub("%s", out)
    stripped = out.lstrip()
    if stripped.upper().startswith("BEGIN IMMEDIATE"):
        return "BEGIN"
    if "INSERT OR IGNORE INTO" in out:
        out = out.replace("INSERT OR IGNORE INTO", "INSERT INTO")
        match = _RETURNING.search(out)
        if match:
            out = out[: match.start()] + " ON CONFLICT DO NOTHING" + out[match.start() :]
        else:
            out = out.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return out


def translate_ddl(script: str) -> str:
    """CREATE TABLE/INDEX statements in PostgreSQL's types (REAL is 4 bytes there: times need DOUBLE PRECISION)."""
    out = re.sub(r"INTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                 script, flags=re.IGNORECASE)
    out = re.sub(r"\bREAL\b", "DOUBLE PRECISION", out)
    return re.sub(r"\bBLOB\b", "BYTEA", out)


class _Cursor:
    """What the stores use of a sqlite3 cursor: fetchone, fetchall, rowcount, iteration."""

    def __init__(self, cursor: Any):
        self._cursor = cursor
        self.rowcount = cursor.rowcount if cursor is not None else -1

    def fetchone(self) -> Row | None:
        return self._cursor.fetchone() if self._cursor is not None and self._cursor.description else None

    def fetchall(self) -> list[Row]:
        return self._cursor.fetchall() if self._cursor is not None and self._cursor.description else []

    def __iter__(self) -> Any:
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection behind the sqlite3 surface the stores were written for."""

    def __init__(self, conn: Any):
        self.raw = conn
        self._in_transaction = False
        # Per `with conn:` block: whether a transaction was already open when it began (a batch's).
        self._entered: list[bool] = []
        # Inside a batch: channels to NOTIFY once at its end, not once per write.
        self._deferred: set[str] | None = None

    def notify(self, channel: str) -> None:
        """NOTIFY `channel` (delivered on commit); inside a batch, once for the whole batch."""
        if self._deferred is not None:
            self._deferred.add(channel)
        else:
            self.execute("SELECT pg_notify(?, '')", (channel,))

    def execute(self, sql: str, params: Iterable[Any] = ()) -> _Cursor:
        statement = translate(sql)
        if statement == "BEGIN":
            if self._in_transaction:
                return _Cursor(None)  # inside a batch's transaction already: one transaction for all
            self._in_transaction = True
        cursor = self.raw.cursor()
        cursor.execute(statement, tuple(params))
        return _Cursor(cursor)

    def executescript(self, script: str) -> None:
        self.raw.execute(translate_ddl(script))

    def __enter__(self) -> PgConnection:
        self._entered.append(self._in_transaction)
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        # Like sqlite3's `with conn:`: commit what the block began, roll back on an exception; a block inside a
        # batch leaves that to the batch.
        began_outside = self._entered.pop() if self._entered else False
        if self._in_transaction and not began_outside:
            self._in_transaction = False
            self.raw.execute("COMMIT" if kind is None else "ROLLBACK")


def _run_batch(conn: PgConnection, batch: list[tuple[Callable[[Any], Any], Any]]) -> list[tuple[bool, Any]]:
    """Every write of a batch in one transaction; if any fails, each again on its own so only it fails."""
    if len(batch) == 1:
        try:
            return [(True, batch[0][0](conn))]
        except Exception as exc:  # noqa: BLE001 - handed to the caller's future
            return [(False, exc)]
    results: list[tuple[bool, Any]] = []
    try:
        with conn:
            conn.execute("BEGIN")
            conn._deferred = set()
            for fn, _ in batch:
                results.append((True, fn(conn)))
            deferred, conn._deferred = conn._deferred, None
            for channel in sorted(deferred):
                conn.notify(channel)
        return results
    except Exception:  # noqa: BLE001 - rolled back: retried one by one below
        conn._deferred = None
        results = []
    for fn, _ in batch:
        try:
            results.append((True, fn(conn)))
        except Exception as exc:  # noqa: BLE001 - handed to the caller's future
            results.append((False, exc))
    return results


class PostgresDatabase(Database):
    """PostgreSQL through psycopg: a few connections, each owned by one thread of a private pool."""

    dialect = POSTGRESQL
    shared = True

    def __init__(self, url: str, schema: str = "", *, connections: int = 4):
        import psycopg  # only needed with a postgresql:// URL

        self._psycopg = psycopg
        self.path = url
        self.url = url
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="postgres")
        self._conn = None
        self._batch: list[tuple[Callable[[Any], Any], asyncio.Future[Any]]] = []
        # Fail fast (bad URL, server down) at start rather than at the first request.
        self.call(lambda conn: conn.execute("SELECT 1"))
        if schema:
            self.schema(schema)

    def connect(self) -> Any:
        """A new autocommit connection (also used for LISTEN and the leadership lock)."""
        conn = self._psycopg.connect(self.url, autocommit=True, row_factory=_row_factory, connect_timeout=10)
        with self._lock:
            self._all.append(conn)
        return conn

    def _connection(self) -> PgConnection:
        conn: PgConnection | None = getattr(self._local, "conn", None)
        if conn is None or conn.raw.closed:
            conn = PgConnection(self.connect())
            self._local.conn = conn
        return conn

    def _in_thread(self, fn: Callable[[Any], T]) -> T:
        conn = self._connection()
        try:
            return fn(conn)
        except self._psycopg.OperationalError:
            # The server went away or restarted: this connection is done; the next call opens a new one.
            conn.raw.close()
            raise
        except BaseException:
            if conn._in_transaction:  # a failure inside `with conn:` already rolled back; anything else:
                conn._in_transaction = False
                conn.raw.execute("ROLLBACK")
            raise

    async def run(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_thread, fn)

    def call(self, fn: Callable[[Any], T]) -> T:
        return self._executor.submit(self._in_thread, fn).result()

    def schema(self, script: str) -> None:
        # Two replicas starting at once would race on CREATE TABLE IF NOT EXISTS (a unique violation in the
        # catalog): one transaction-scoped advisory lock per script serialises them.
        key = zlib.crc32(script.encode())

        def create(conn: PgConnection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(?)", (key,))
                conn.raw.execute(translate_ddl(script))

        self.call(create)

    def add_columns(self, table: str, columns: dict[str, str]) -> None:
        def migrate(conn: PgConnection) -> None:
            for name, kind in columns.items():
                conn.raw.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {translate_ddl(kind)}")

        self.call(migrate)

    async def run_batched(self, fn: Callable[[Any], T]) -> T:
        """run(fn), sharing one transaction and one trip to the database thread with the other writes made in the
        same turn of the event loop (group commit): in a burst of Slack requests each acknowledgement otherwise
        paid for its own BEGIN/COMMIT and thread hand-off, and those, not PostgreSQL, were most of its time."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._batch.append((fn, future))
        if len(self._batch) == 1:
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._batch = self._batch, []
        done = loop.run_in_executor(self._executor, self._in_thread, lambda conn: _run_batch(conn, batch))

        def deliver(outcome: asyncio.Future[list[tuple[bool, Any]]]) -> None:
            if outcome.cancelled() or outcome.exception() is not None:
                error = outcome.exception() if not outcome.cancelled() else asyncio.CancelledError()
                results: list[tuple[bool, Any]] = [(False, error)] * len(batch)
            else:
                results = outcome.result()
            for (_, future), (ok, value) in zip(batch, results, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        done.add_done_callback(deliver)

    def notify_in(self, conn: Any, channel: str) -> None:
        conn.notify(channel)

    async def notify(self, channel: str) -> None:
        """NOTIFY every listening replica (bot.store.wakeup) that `channel` has something new."""
        await self.run(lambda conn: conn.execute("SELECT pg_notify(?, '')", (channel,)))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for conn in self._all:
                # Closing a broken connection may fail; it is gone either way.
                with contextlib.suppress(Exception):
                    conn.close()
            self._all.clear()
