"""One replica at a time does the work that must not be doubled: sending the outbox and the housekeeping.

The outbox sender paces posts per channel and waits out each 429 for the whole workspace; two senders would
each allow Slack's rate and post the same record twice. So among the worker replicas one holds a PostgreSQL
session advisory lock and leads; the lock lives and dies with its connection, so a leader killed with SIGKILL
(its socket closed by the kernel) frees it at once and another replica takes over within `interval`.
With SQLite there is one process, which always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot.store.database import Database, PostgresDatabase

log = logging.getLogger(__name__)

# pg_advisory_lock key: any constant the app's other locks do not use ("vcbt").
LOCK_KEY = 0x76636274


class Leadership:
    """Runs `on_elected()` when this process becomes the leader and `on_lost()` when it stops being it."""

    def __init__(
        self,
        db: Database,
        on_elected: Callable[[], Awaitable[None]],
        on_lost: Callable[[], Awaitable[None]],
        *,
        interval: float = 2.0,
    ):
        self.db = db
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.interval = interval
        self.leading = False
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        # The lock's connection is used from one thread only (psycopg connections are not for concurrent use).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadership")

    async def start(self) -> None:
        if not isinstance(self.db, PostgresDatabase):
            self.leading = True
            await self.on_elected()
            return
        await self._try()
        self._task = asyncio.create_task(self._loop(), name="leadership")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._try()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leadership check failed")

    async def _try(self) -> None:
        held = await asyncio.get_running_loop().run_in_executor(self._executor, self._check)
        if held and not self.leading:
            self.leading = True
            log.info("this replica now sends the Slack outbox and does the housekeeping")
            await self.on_elected()
        elif not held and self.leading:
            self.leading = False
            log.warning("lost the outbox leadership (database connection lost); another replica takes over")
            await self.on_lost()

    def _check(self) -> bool:
        """True while this process holds the lock (taking it when free); a broken connection means no."""
        assert isinstance(self.db, PostgresDatabase)
        try:
            fresh = self._conn is None or self._conn.closed
            if fresh:
                self._conn = self.db.connect()
            if self.leading and not fresh:
                # The lock lives as long as this session: a live connection means we still hold it.
                self._conn.execute("SELECT 1")
                return True
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
            return bool(row[0])
        except Exception as exc:  # noqa: BLE001 - any database failure: not (or no longer) the leader
            log.warning("leadership connection failed (%s)", type(exc).__name__)
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leading:
            self.leading = False
            await self.on_lost()

        def close() -> None:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()  # frees the lock at once for the next leader
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)
