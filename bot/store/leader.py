"""One replica at a time does the work that must not be doubled: sending the outbox and the housekeeping.

The outbox sender paces posts per channel and waits out each 429 for the whole workspace; two senders would
each allow Slack's rate and post the same record twice. So among the processes sharing the database one holds the
database's leader lock (PostgreSQL: a session advisory lock, freed at once when its holder dies, see
bot.store.postgres) and leads; another takes over within `interval`. A database only one process can use
(SQLite) has no such lock: that process always leads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from bot.store.connection import Database, LeaderLock

log = logging.getLogger(__name__)

# The leader lock's key: any constant the app's other locks do not use ("vcbt").
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
        self._lock: LeaderLock | None = None
        # The lock is used from one thread only (its connection is not for concurrent use).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadership")

    async def start(self) -> None:
        self._lock = self.db.leader_lock(LOCK_KEY)
        if self._lock is None:
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
        return self._lock is not None and self._lock.held(self.leading)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leading:
            self.leading = False
            await self.on_lost()
        if self._lock is not None:
            # Frees the lock at once for the next leader.
            await asyncio.get_running_loop().run_in_executor(self._executor, self._lock.close)
        self._executor.shutdown(wait=False)
