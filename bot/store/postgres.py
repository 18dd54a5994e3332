"""PostgreSQL behind the stores' Connection: psycopg 3, a few connections each owned by one thread of a private pool.

What several replicas need lives here: group commit of the web role's small writes, NOTIFY on commit, the
LISTEN connection (bot.store.wakeup), the leader's session advisory lock, and serialised table creation.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row

from bot.settings import masked_url
from bot.store.connection import NO_PARAMS, Connection, Database, DatabaseUnavailable, GroupCommit
from bot.store.sql import Command, Params, Query, Table
from bot.store.sql import postgresql as pg_sql
from bot.store.wakeup import Listener

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)

PgRaw = psycopg.Connection[DictRow]


class PgConnection(Connection):
    """A psycopg connection in autocommit mode: each statement commits on its own unless in `transaction()`."""

    sql = pg_sql.DIALECT

    def __init__(self, raw: PgRaw):
        self.raw = raw
        # Inside a batch: the channels to NOTIFY once at its end, not once per write.
        self._deferred: set[str] | None = None
        # The advisory locks this connection's open transaction holds: in a batch, its first write takes one and the
        # others save a round trip each (a transaction-level lock ends with the transaction).
        self._locks: set[int] = set()
        self._cache: dict[Any, Any] = {}
        # Inside a batch: the run_later writes, sent together (executemany) before it commits.
        self._later: list[tuple[Command, Params]] | None = None

    def one(self, query: Query[R], params: Params = NO_PARAMS) -> R | None:
        # The statement's declared row type: the dict psycopg made has exactly its columns.
        return cast("R | None", self.raw.execute(query.text, params or None).fetchone())

    def all(self, query: Query[R], params: Params = NO_PARAMS) -> list[R]:
        return cast("list[R]", self.raw.execute(query.text, params or None).fetchall())

    def run(self, command: Command, params: Params = NO_PARAMS) -> int:
        return self.raw.execute(command.text, params or None).rowcount

    def run_later(self, command: Command, params: Params = NO_PARAMS) -> None:
        if self._later is None:
            self.run(command, params)
        else:
            self._later.append((command, params))

    def _run_later_writes(self) -> None:
        # executemany pipelines one statement's parameter sets: a 200-share burst's hourglasses cost the batch one
        # round trip instead of 200 (the batch is what every acknowledgement of the burst waits for).
        later, self._later = self._later or [], None
        for command, group in itertools.groupby(later, key=lambda item: item[0]):
            with self.raw.cursor() as cursor:
                cursor.executemany(command.text, [params for _, params in group])

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self.in_transaction:
            yield
            return
        self.raw.execute(pg_sql.BEGIN)
        try:
            yield
            self._ended()
            self.raw.execute(pg_sql.COMMIT)
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        """End a failed transaction (nothing to do when the connection broke: the server ended it)."""
        self._ended()
        if self.in_transaction and not self.raw.closed:
            self.raw.execute(pg_sql.ROLLBACK)

    def notify(self, channel: str) -> None:
        if self._deferred is not None:
            self._deferred.add(channel)
        else:
            self.run(pg_sql.NOTIFY, {"channel": channel})

    def _ended(self) -> None:
        self._locks.clear()
        self._cache.clear()

    def cache(self) -> dict[Any, Any]:
        return self._cache if self.in_transaction else {}

    def hold_lock(self, key: int) -> None:
        # Outside a transaction the lock would end with its own statement: nothing to take (an advisory check such
        # as Quotas.say_refusal reads without storing).
        if key in self._locks or not self.in_transaction:
            return
        self.run(pg_sql.TRANSACTION_LOCK, {"key": key})
        self._locks.add(key)

    def _batch_began(self) -> None:
        self._deferred = set()
        self._later = []

    def _batch_written(self) -> None:
        self._run_later_writes()
        deferred, self._deferred = self._deferred or set(), None
        for channel in sorted(deferred):
            self.notify(channel)

    def _batch_ended(self) -> None:
        self._deferred = None
        self._later = None


class AdvisoryLock:
    """A session advisory lock on a connection of its own, used from one thread (psycopg connections are not for
    concurrent use). The lock lives and dies with the session, so a leader killed with SIGKILL frees it at once."""

    def __init__(self, db: PostgresDatabase, key: int):
        self.db = db
        self.key = key
        self.conn: PgRaw | None = None

    def held(self, leading: bool) -> bool:
        try:
            conn, fresh = self.conn, False
            if conn is None or conn.closed:
                conn, fresh = self.db.connect(), True
                self.conn = conn
            if leading and not fresh:
                # A live session still holds what it took.
                conn.execute(pg_sql.PING.text)
                return True
            row = conn.execute(pg_sql.TRY_LEAD.text, {"key": self.key}).fetchone()
            return bool(row and row["held"])
        except Exception as exc:  # noqa: BLE001 - any database failure: not (or no longer) the leader
            log.warning("leadership connection failed (%s)", type(exc).__name__)
            self.close()
            return False

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # already broken: gone either way
                self.conn.close()
            self.conn = None


class PostgresDatabase(Database):
    """PostgreSQL through psycopg: `connections` connections, each owned by one thread of a private pool."""

    sql = pg_sql.DIALECT
    shared = True

    def __init__(self, url: str, *, connections: int = 4):
        self.url = url
        self._local = threading.local()
        self._all: list[PgRaw] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="postgres")
        # Batches (run_batched) go one at a time through a thread and connection of their own: the next batch gathers
        # while one is written. Concurrent batches on the pool's threads only queued on each other's locks (the
        # admission lock), each paying for a connection opened in the middle of the burst.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-batch")
        self._group = GroupCommit(self._writer, self._in_thread)
        try:
            # Fail fast (bad URL, server down) at start rather than at the first request; the batch connection too.
            self.call(lambda conn: conn.run(pg_sql.PING))
            self._writer.submit(self._in_thread, lambda conn: conn.run(pg_sql.PING)).result()
        except psycopg.Error as exc:
            self.close()
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: psycopg.Error) -> DatabaseUnavailable:
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        shown = masked_url(self.url)
        with contextlib.suppress(psycopg.Error, ValueError):  # a URL libpq cannot parse has nothing to hide
            password = conninfo_to_dict(self.url).get("password")
            if password:
                reason = reason.replace(str(password), "**********")
        return DatabaseUnavailable(
            f"Cannot use the PostgreSQL database {shown} (DATABASE_URL): {reason}. Check that the server is running "
            "and reachable, and the user, password and database name."
        )

    def connect(self) -> PgRaw:
        """A new autocommit connection (also for LISTEN and the leader's lock), closed by close()."""
        conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        with self._lock:
            # Connections dropped by a server restart are replaced, not kept for close().
            self._all = [c for c in self._all if not c.closed]
            self._all.append(conn)
        return conn

    def _connection(self) -> PgConnection:
        conn: PgConnection | None = getattr(self._local, "conn", None)
        if conn is None or conn.raw.closed:
            conn = PgConnection(self.connect())
            self._local.conn = conn
        return conn

    def _in_thread(self, fn: Callable[[PgConnection], T]) -> T:
        conn = self._connection()
        try:
            return fn(conn)
        except psycopg.OperationalError:
            # The server went away or restarted: this connection is done; the next call opens a new one.
            conn.raw.close()
            raise
        except BaseException:
            conn.rollback()  # a failure inside transaction() rolled back already; anything else left open: now
            raise

    async def run(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._in_thread, fn)

    def call(self, fn: Callable[[Connection], T]) -> T:
        return self._executor.submit(self._in_thread, fn).result()

    def create(self, table: Table) -> None:
        key = zlib.crc32(f"voiceclone-bot table {table.name}".encode())

        def create(conn: PgConnection) -> None:
            with conn.transaction():
                # Two replicas starting at once would race on CREATE TABLE IF NOT EXISTS (a unique violation in the
                # catalog): a lock per table serialises them.
                conn.hold_lock(key)
                conn.raw.execute(table.create)
                if table.added:
                    # Only what is missing: ALTER TABLE takes an exclusive lock even when IF NOT EXISTS finds it.
                    have = {row["name"] for row in conn.all(pg_sql.COLUMNS, {"table": table.name})}
                    for column, kind in table.added.items():
                        if column not in have:
                            conn.raw.execute(pg_sql.add_column(table.name, column, kind))
                if table.after:
                    conn.raw.execute(table.after)

        try:
            self._executor.submit(self._in_thread, create).result()
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc

    async def run_batched(self, fn: Callable[[Connection], T]) -> T:
        return await self._group.run(fn)

    async def notify(self, channel: str) -> None:
        """NOTIFY every listening replica (bot.store.wakeup) that `channel` has something new."""
        await self.run(lambda conn: conn.notify(channel))

    def listener(self, callbacks: dict[str, Callable[[], None]]) -> Listener:
        return Listener(self.connect, callbacks)

    def leader_lock(self, key: int) -> AdvisoryLock:
        return AdvisoryLock(self, key)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        with self._lock:
            for conn in self._all:
                # Closing a broken connection may fail; it is gone either way.
                with contextlib.suppress(Exception):
                    conn.close()
            self._all.clear()
