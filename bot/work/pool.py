"""The worker pool: bounded workers that take jobs from the jobs table, for whichever process they run in.

The queue is the table itself: each worker claims the next due job atomically with a lease it renews while the
job runs, so several processes can share one PostgreSQL database and a killed one's jobs are taken over once its
leases run out. A NOTIFY (or, in one process, a local call) wakes idle workers; they also look on a timer. What a
job *does* is the subclass's `_attempt` (bot.work.runner.JobRunner); this module only queues, leases and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from bot.settings import Settings
from bot.store.connection import Connection
from bot.store.jobs import QUEUED, Admission, Job, JobStore, NewJob
from bot.wake import Wakeup

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another process took this job over (our lease ran out): stop without touching it."""


class JobQueue:
    """The jobs table as a queue, and the wake-up its workers sleep on: one object for whoever adds jobs (the Slack
    intake, the voice service) and the workers that take them, so neither side needs the other."""

    def __init__(self, store: JobStore, wakeup: Wakeup):
        self.store = store
        self.wakeup = wakeup

    async def add(
        self, jobs: list[NewJob], *, wake: bool = True, admit: Admission | None = None,
        also: Callable[[Connection], None] | None = None,
    ) -> list[int]:
        """Store jobs (deduplicated on their key); return the ids of the new ones. `wake=False` leaves the ring to
        the caller, for a caller that must write something else before any worker may see the jobs. `admit`: only
        if it says so in the same transaction (bot.work.quotas), else bot.store.jobs.Refused; `also`: another write
        for that transaction when a job is new (JobStore.add)."""
        if not jobs:
            return []
        ids = await self.store.add(jobs, admit, also)
        if ids and wake:
            self.wake(len(ids))
        return ids

    def wake(self, workers: int | None = None) -> None:
        """Something may be due (a new job here, or a NOTIFY from another replica): idle workers look now, all or
        the given number (each that finds a job wakes one more)."""
        self.wakeup.ring(workers)


class WorkerPool:
    """`workers` tasks claiming jobs of `queue` for `_attempt()`; `wake()` when something may be due."""

    def __init__(self, settings: Settings, queue: JobQueue, *, workers: int | None = None):
        self.settings = settings
        self.queue = queue
        self.store = queue.store
        self.workers = workers or settings.workers
        self.accepting = False
        self.last_progress = time.monotonic()
        # Who holds a lease: unique per process and start, so a restarted process never mistakes old leases.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.lease = settings.lease_seconds
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[int] = set()
        self._direct: set[asyncio.Task[None]] = set()  # jobs started outside the queue (a confirmed clone)
        self._idle = asyncio.Event()
        self._idle.set()

    # -- life cycle -------------------------------------------------------------------------------------

    async def start(self) -> int:
        """Start the workers; jobs a previous run left unfinished are taken up again. Return how many wait."""
        await self.store.recover()
        pending = await self.store.unfinished()
        self.accepting = True
        for _ in range(self.workers):
            self._spawn()
        self._renewer = asyncio.create_task(self._renew_leases(), name="job-leases")
        if pending:
            log.info("%d unfinished job(s) in the queue", len(pending))
        return len(pending)

    def _spawn(self) -> None:
        task = asyncio.create_task(self._work(), name="job-worker")
        self._tasks.add(task)
        task.add_done_callback(self._worker_ended)

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self.accepting and not task.cancelled():
            # The loop catches everything, so this is a bug; a lost worker would shrink the pool for good.
            log.error("a worker stopped unexpectedly (%r); starting another", task.exception())
            self._spawn()

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking work, let jobs in flight finish within `grace` seconds, leave the rest stored."""
        self.accepting = False
        grace = self.settings.shutdown_grace if grace is None else grace
        # Workers take nothing new: what is queued stays queued in the store (for another replica or the next start).
        self.queue.wake()
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation of the caller.
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            log.warning("%d job(s) still running after %.0f s; they resume at the next start", len(self._in_flight),
                        grace)
        tasks = [*self._tasks, *self._direct, *([self._renewer] if self._renewer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # What was cut short can be taken over by another replica now rather than after the lease.
        with contextlib.suppress(Exception):
            await self.store.release(self.owner)

    async def drain(self) -> None:
        """Wait until no job is queued, waiting for a retry, or running (tests, demo, benchmarks)."""
        while True:
            await self._idle.wait()
            if not self._in_flight and await self.store.pending() == 0:
                return
            await asyncio.sleep(0.02)

    def health(self) -> str | None:
        """What is wrong with the workers, or None."""
        if self.accepting and len(self._tasks) < self.workers:
            return "workers are not running"
        if self._in_flight and time.monotonic() - self.last_progress > self.settings.job_timeout + 60:
            return "the job queue has stopped moving"
        return None

    def wake(self) -> None:
        """Something may be due (a NOTIFY from another replica): an idle worker looks now, and each that finds a job
        wakes one more, so a NOTIFY standing for many jobs still gets every idle worker going."""
        self.queue.wake(1)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            if not self._in_flight:
                continue
            try:
                await self.store.renew(self.owner, self._in_flight, self.lease)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Not renewed: if the database stays away past the lease, another replica may take the jobs over.
                log.exception("could not renew the leases of %d running job(s)", len(self._in_flight))

    async def _requeue(self, job_id: int, delay: float, **values: Any) -> None:
        """Queue the job again, due in `delay` seconds, for whichever worker of whichever replica is free then."""
        await self.store.update(
            job_id, status=QUEUED, run_at=time.time() + delay, lease_owner=None, lease_until=None, **values
        )

    # -- workers ----------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while self.accepting:
            # Taken before looking: a job added while this worker looks wakes it instead of waiting for the timer.
            wake = self.queue.wakeup.waiter()
            try:
                job, due = await self.store.look(self.owner, self.lease)
            except asyncio.CancelledError:
                self.queue.wakeup.forget(wake)
                raise
            except Exception:
                log.exception("could not take a job from the queue; trying again shortly")
                # Not asleep on its waiter: a ring for a new job must go to a worker that can look now.
                self.queue.wakeup.forget(wake)
                await asyncio.sleep(self.store.idle_poll)
                continue
            if job is not None:
                # There may be more: the next idle worker looks (a ring wakes one; see bot.wake.Wakeup).
                self.queue.wakeup.forget(wake)
                self.queue.wake(1)
                await self._guarded(job.id, job)
                continue
            # Nothing due: sleep until woken, or until the next retry or lease end falls due, or the store's poll
            # interval (another replica's jobs and a lost NOTIFY are only seen by looking).
            wait = self.store.idle_poll
            if due is not None:
                wait = min(wait, max(due - time.time(), 0.0) + 0.01)
            await self.queue.wakeup.sleep(wake, wait)

    async def _guarded(self, job_id: int, claimed: Job | None = None) -> None:
        """One attempt at a job, inside the boundary nothing crosses: whatever escapes is logged, never raised."""
        self._in_flight.add(job_id)
        self._idle.clear()
        self.last_progress = time.monotonic()
        try:
            job = claimed or await self.store.claim(job_id, self.owner, self.lease)
            if job is not None:
                await self._attempt(job)
        except asyncio.CancelledError:
            raise
        except BaseException:
            # Whatever escapes (the database, a bug in the failure path), the worker lives.
            log.exception("job %s: unexpected failure outside the job; it is retried after its lease", job_id)
        finally:
            self._in_flight.discard(job_id)
            self.last_progress = time.monotonic()
            if not self._in_flight:
                self._idle.set()

    async def _attempt(self, job: Job) -> None:
        """One attempt at a claimed job (the subclass's work)."""
        raise NotImplementedError

    def run_now(self, job_id: int) -> None:
        """Attempt this job at once on a task of its own, past the queue (a clone its uploader just confirmed), when
        fewer than `workers` such tasks run; else it waits first in line for the next free worker."""
        if not (self.accepting and self.workers):
            return  # the web role: the job is queued first in line, and a worker replica takes it
        if len(self._direct) >= self.workers:
            # Bounded like the workers: each holds a prepared prompt (megabytes) until Tencent answers.
            return
        task = asyncio.create_task(self._guarded(job_id), name=f"job-{job_id}")
        self._direct.add(task)
        task.add_done_callback(self._direct.discard)
