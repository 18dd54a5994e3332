"""Housekeeping on a timer: consent requests nobody answered expire, and nothing personal outlives its retention.

- a prompt waiting for consent longer than CONSENT_TTL_HOURS is deleted and its message says so;
- job rows (options, transcripts, Slack file objects with their URLs) and delivered outbox records are deleted
  RETENTION_DAYS after they end (the audit is kept: it is the record of consent);
- prepared audio no job still needs (a crash between steps) is removed;
- the keys of commands and interactions taken (bot.store.replays) are forgotten once their window has passed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot.settings import Settings
from bot.slack.replies import Replies, file_name, refresh_share
from bot.store.jobs import EXPIRED, JobStore
from bot.store.prepared import PreparedAudio
from bot.store.replays import Replays
from bot.ui.consent_blocks import build_consent_expired

log = logging.getLogger(__name__)


class Housekeeping:
    """Runs `maintain()` every `interval` seconds until stopped."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        replies: Replies,
        prepared: PreparedAudio,
        interval: float = 60.0,
        *,
        replays: Replays | None = None,
    ):
        self.settings = settings
        self.store = store
        self.replies = replies
        self.prepared = prepared
        self.interval = interval
        self.replays = replays
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the timer (the first pass runs at once)."""
        self._task = asyncio.create_task(self._loop(), name="housekeeping")

    async def stop(self) -> None:
        """Stop the timer."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.maintain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed; trying again later")
            await asyncio.sleep(self.interval)

    async def maintain(self, now: float | None = None) -> None:
        """One pass: expire, purge, sweep. `now` lets a test stand a day in the future."""
        now = time.time() if now is None else now
        ttl_hours = self.settings.consent_ttl_hours
        for job_id in await self.store.waiting_since(now - ttl_hours * 3600):
            job = await self.store.get(job_id)
            if job is None or not await self.store.end_waiting(job_id, EXPIRED, {"type": "expired"}):
                continue
            self.prepared.delete(job_id)
            text, blocks = build_consent_expired(file_name(job), ttl_hours)
            await self.replies.final(job, text, blocks)
            await refresh_share(self.replies, self.store, job)
            log.info("job %s: nobody confirmed within %g h; prepared audio deleted", job_id, ttl_hours)
        horizon = now - self.settings.retention_days * 86400
        purged = await self.store.purge(horizon)
        records = await self.replies.outbox.purge(horizon)
        if purged or records:
            log.info(
                "retention: deleted %d job(s) and %d Slack record(s) older than %g days",
                len(purged), records, self.settings.retention_days,
            )
        self.prepared.sweep(await self.store.with_prompt())
        if self.replays is not None:
            await self.replays.sweep(now)
