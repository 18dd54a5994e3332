"""The consent buttons' effects: "Clone this voice" queues the prepared prompt at once, "Cancel" deletes it.

Called on the acknowledgement path, so database and outbox writes only. Both are idempotent: a double press, a
press after Cancel or after expiry, and Slack's retries change nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from bot import metrics
from bot.slack.replies import Replies, file_name, refresh_share
from bot.store.audit import BUTTON
from bot.store.jobs import AWAITING, CANCELLED, Job, JobStore
from bot.store.prepared import PreparedAudio
from bot.ui.consent_blocks import build_consent_cancelled, build_only_uploader

log = logging.getLogger(__name__)

Where = tuple[str | None, str | None]  # (channel, thread) of the pressed message


class Workers(Protocol):
    """The workers of this process (bot.work.runner.JobRunner)."""

    def run_now(self, job_id: int) -> None:
        """Start the job at once, past the queue; a process that runs no jobs leaves it queued for one that does."""


class ConsentButtons:
    """Confirm and Cancel for jobs waiting for their uploader; `workers` start a confirmed clone."""

    def __init__(self, store: JobStore, replies: Replies, prepared: PreparedAudio, workers: Workers):
        self.store = store
        self.replies = replies
        self.prepared = prepared
        self.workers = workers

    async def confirm(self, job_id: int, user_id: str | None, where: Where) -> bool:
        """The speaker (the recording's uploader) pressed "Clone this voice": record it and clone now; anyone
        else, the person who asked included, is told no."""
        job = await self.store.get(job_id)
        if job is None or job.status != AWAITING:
            return False  # already confirmed (a double press), cancelled or expired: nothing to do
        if user_id != (job.speaker or job.user_id):
            await self._not_yours(job, user_id, where)
            return False
        at = time.time()
        if not await self.store.give_consent(job_id, {"how": BUTTON, "user": user_id, "at": at}):
            return False
        log.info("job %s: consent given by %s", job_id, user_id)
        await self.replies.consent_given(job, str(user_id), at)
        await refresh_share(self.replies, self.store, job)
        # Not through the queue: the prompt is ready, so the request leaves now whatever the workers are doing.
        self.workers.run_now(job_id)
        return True

    async def cancel(self, job_id: int, user_id: str | None, where: Where) -> bool:
        """The speaker declined, or the person who asked withdrew: delete the prepared audio and say so."""
        job = await self.store.get(job_id)
        if job is None or job.status != AWAITING:
            return False
        if user_id not in (job.speaker or job.user_id, job.user_id):
            await self._not_yours(job, user_id, where)
            return False
        if not await self.store.end_waiting(job_id, CANCELLED, {"type": "cancelled", "by": user_id}):
            return False
        self.prepared.delete(job_id)
        text, blocks = build_consent_cancelled(str(user_id), file_name(job))
        await self.replies.final(job, text, blocks)
        await refresh_share(self.replies, self.store, job)
        metrics.JOBS.labels(outcome="failed").inc()
        return True

    async def _not_yours(self, job: Job, user_id: str | None, where: Where) -> None:
        channel, thread_ts = where
        if channel and user_id:
            await self.replies.ephemeral(
                f"notyours:{job.id}:{user_id}:{time.time():.3f}", channel, user_id,
                build_only_uploader(job.speaker or job.user_id), thread_ts, job.team_id,
            )
