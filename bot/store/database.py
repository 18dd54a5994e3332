"""The database behind every store: embedded SQLite (default, one process) or PostgreSQL (several replicas).

A store hands a function of a `Connection` to `db.run()` (or `db.call()` outside the event loop); it runs on the
database's own threads, so the loop never waits on a socket or the disk. The connection runs its dialect's named
statements (`conn.sql`, see bot.store.sql): `one`, `all`, `run`, inside `transaction()` when several must commit
together, and `notify()` for other processes. Whatever differs between the two databases is behind those two
interfaces (bot.store.connection); the rest of the bot asks for behaviour (`db.listener()`, `db.leader_lock()`,
`JobStore.recover()`) and never checks which database it has.

Here: SQLite on one connection owned by one thread (sqlite3 connections are not shared across threads), rows as
dicts; and open_database(), which picks SQLite or PostgreSQL (bot.store.postgres) from DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bot.settings import is_postgres_url, sqlite_path
from bot.store.connection import (
    NO_PARAMS,
    Connection,
    Database,
    DatabaseUnavailable,
    GroupCommit,
    LeaderLock,
    Listener,
)
from bot.store.private import FOLDER_MODE, create_private_file
from bot.store.sql import Command, Params, Query, Table
from bot.store.sql import sqlite as sqlite_sql

T = TypeVar("T")
R = TypeVar("R")


# -- SQLite ------------------------------------------------------------------------------------------------


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip([column[0] for column in cursor.description], values, strict=True))


class SqliteConnection(Connection):
    """A sqlite3 connection in autocommit mode: each statement commits on its own unless in `transaction()`."""

    sql = sqlite_sql.DIALECT

    def __init__(self, raw: sqlite3.Connection):
        self.raw = raw
        self._cache: dict[Any, Any] = {}

    def one(self, query: Query[R], params: Params = NO_PARAMS) -> R | None:
        cursor = self.raw.execute(query.text, params)
        try:
            row: R | None = cursor.fetchone()
            return row
        finally:
            # An UPDATE ... RETURNING not stepped to its end would keep its write transaction open.
            cursor.close()

    def all(self, query: Query[R], params: Params = NO_PARAMS) -> list[R]:
        rows: list[R] = self.raw.execute(query.text, params).fetchall()
        return rows

    def run(self, command: Command, params: Params = NO_PARAMS) -> int:
        return self.raw.execute(command.text, params).rowcount

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self.raw.in_transaction:
            yield
            return
        self.raw.execute(sqlite_sql.BEGIN)
        try:
            yield
            self._cache.clear()
            self.raw.execute(sqlite_sql.COMMIT)
        except BaseException:
            self._cache.clear()
            if self.raw.in_transaction:
                self.raw.execute(sqlite_sql.ROLLBACK)
            raise

    def cache(self) -> dict[Any, Any]:
        return self._cache if self.raw.in_transaction else {}

    def notify(self, channel: str) -> None:
        pass  # one process: its own wake-ups are direct calls (Outbox.on_change, the job queue's)

    def hold_lock(self, key: int) -> None:
        pass  # BEGIN IMMEDIATE already lets one writer in at a time, whatever the key


class SqliteDatabase(Database):
    """A SQLite file (or ':memory:') on one connection used only from its own thread."""

    sql = sqlite_sql.DIALECT
    # One process per file: the only holder of the leadership (outbox sender, housekeeping) is this one.
    shared = False

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database")
        self._group = GroupCommit(self._executor, lambda fn: fn(self._conn))
        self._closed = False
        try:
            self._conn = self._executor.submit(self._open).result()
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            raise self._unavailable(exc) from exc

    def _open(self) -> SqliteConnection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            # Mode 0600 from the start; SQLite gives its -wal and -shm files the database file's mode.
            create_private_file(self.path)
        raw = sqlite3.connect(self.path, isolation_level=None)
        raw.row_factory = _dict_row
        for pragma in sqlite_sql.PRAGMAS:
            raw.execute(pragma)
        return SqliteConnection(raw)

    def _unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"Cannot open the job store {self.path!r} (DATABASE_URL): {exc}. Make sure its folder exists and is "
            "writable by this user, or set DATABASE_URL=sqlite:////absolute/path/voiceclone.db."
        )

    async def run(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    def call(self, fn: Callable[[Connection], T]) -> T:
        return self._executor.submit(fn, self._conn).result()

    async def run_batched(self, fn: Callable[[Connection], T]) -> T:
        return await self._group.run(fn)

    def create(self, table: Table) -> None:
        def create() -> None:
            conn = self._conn
            conn.raw.executescript(table.create)
            if table.added:
                # SQLite has no ADD COLUMN IF NOT EXISTS.
                have = {row["name"] for row in conn.all(sqlite_sql.COLUMNS, {"table": table.name})}
                for column, kind in table.added.items():
                    if column not in have:
                        conn.raw.execute(sqlite_sql.add_column(table.name, column, kind))
            if table.after:
                conn.raw.executescript(table.after)

        try:
            self._executor.submit(create).result()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    async def notify(self, channel: str) -> None:
        pass  # no other process to tell

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._executor.submit(self._conn.raw.close).result()
            self._executor.shutdown(wait=True)


# -- choosing one ----------------------------------------------------------------------------------------


def open_database(url_or_path: str | Path, *, connections: int = 4) -> Database:
    """A Database for `postgresql://...`, else a SQLite URL (`sqlite:///file.db`) or file path (or ':memory:').

    Raises DatabaseUnavailable (one line for the operator) when it cannot be opened.
    """
    text = str(url_or_path)
    if is_postgres_url(text):
        from bot.store.postgres import PostgresDatabase

        return PostgresDatabase(text, connections=connections)
    if text.startswith("sqlite:"):
        text = sqlite_path(text)
    return SqliteDatabase(text)


def serves_many_processes(url: str) -> bool:
    """Whether several processes (--role web and worker, replicas) may share the database `url` names."""
    return is_postgres_url(url)


def missing_database(url: str) -> str | None:
    """The file `url` names when it does not exist yet (a tool that only reads must not create an empty one);
    None when there is a database to open (a server's is there, or the connection says why not)."""
    if is_postgres_url(url):
        return None
    path = sqlite_path(url)
    return None if path == ":memory:" or Path(path).is_file() else path


__all__ = [
    "Connection",
    "Database",
    "DatabaseUnavailable",
    "LeaderLock",
    "Listener",
    "SqliteConnection",
    "SqliteDatabase",
    "missing_database",
    "open_database",
    "serves_many_processes",
]
