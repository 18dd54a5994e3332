"""The queue and outbox depths, read from the database on a timer so that GET /metrics serves memory only.

A scrape (Prometheus every 15 s, or anyone who can reach the metrics port, as often as they like) then never
touches the database, whose connection the acknowledgement path uses; the depths are at most `interval` old.
Run by every process that runs jobs (roles all and worker): each one's page shows the whole queue's depth.
"""

from __future__ import annotations

import asyncio
import logging

from bot import metrics
from bot.store.jobs import QUEUED, JobStore
from bot.store.outbox import Outbox

log = logging.getLogger(__name__)

INTERVAL = 5.0


class DepthGauges:
    """Sets voiceclone_queue_depth and voiceclone_outbox_depth every `interval` seconds until stopped."""

    def __init__(self, store: JobStore, outbox: Outbox, interval: float = INTERVAL):
        self.store = store
        self.outbox = outbox
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the timer (the first reading is taken at once)."""
        self._task = asyncio.create_task(self._loop(), name="depth-gauges")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def refresh(self) -> None:
        """One reading of both depths."""
        metrics.QUEUE_DEPTH.set((await self.store.counts()).get(QUEUED, 0))
        metrics.OUTBOX_DEPTH.set(await self.outbox.depth())

    async def _loop(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away: the gauges keep their last values
                if not failing:
                    log.warning("could not read the queue and outbox depths (%s); trying again", type(exc).__name__)
                failing = True
            await asyncio.sleep(self.interval)
