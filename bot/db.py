"""The embedded database: one SQLite file (WAL) owned by one private thread, so the event loop never waits on disk."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Database:
    """A SQLite connection used only from its own thread; `run()` awaits a function of the connection there."""

    def __init__(self, path: str | Path, schema: str = ""):
        self.path = str(path)
        # One thread owns the connection: SQLite connections are not shared across threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database")
        self._conn: sqlite3.Connection | None = None
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

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(connection) on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._conn)

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(connection) on the database thread and block for the answer (start-up, tools)."""
        return self._executor.submit(fn, self._conn).result()

    def add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Add columns a database made by an older version lacks (SQLite has no ADD COLUMN IF NOT EXISTS)."""

        def migrate(conn: sqlite3.Connection) -> None:
            have = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

        self.call(migrate)

    def close(self) -> None:
        """Close the connection and its thread."""
        if self._conn is not None:
            self.call(lambda conn: conn.close())
            self._conn = None
        self._executor.shutdown(wait=True)
