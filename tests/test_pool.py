"""The worker pool's wake-ups: a new job wakes one idle worker, not all of them, and a worker that finds a job wakes
the next, so work is still passed to every idle worker for as long as there is some."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.settings import load_settings
from bot.store.jobs import DONE, Job, JobStore, NewJob
from bot.wake import Wakeup
from bot.work.pool import JobQueue, WorkerPool

WORKERS = 8


def _job(key: str) -> NewJob:
    return NewJob(dedupe_key=key, kind="share", file={"id": key, "name": "a.m4a"}, options={"name": None},
                  channel="C1", thread_ts="1.0", share_ts="1.0", user_id="U1", event_id=f"Ev{key}")


class CountingStore(JobStore):
    """The real store on a real SQLite file, counting the idle workers' looks (JobStore.look)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.looks = 0
        self.looked = asyncio.Event()

    async def look(self, owner: str, lease: float) -> tuple[Job | None, float | None]:
        self.looks += 1
        self.looked.set()
        return await super().look(owner, lease)

    async def looks_reach(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.looks < n:
                self.looked.clear()
                await self.looked.wait()


class HoldingPool(WorkerPool):
    """Workers that hold each job until `release` is set, then mark it done."""

    def __init__(self, queue: JobQueue):
        super().__init__(load_settings(environ={}), queue, workers=WORKERS)
        self.started: list[int] = []
        self.changed = asyncio.Event()
        self.release = asyncio.Event()

    async def _attempt(self, job: Job) -> None:
        self.started.append(job.id)
        self.changed.set()
        await self.release.wait()
        await self.store.update(job.id, status=DONE)

    async def started_reach(self, n: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.started) < n:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[HoldingPool]:
    store = CountingStore(tmp_path / "jobs.db")
    pool = HoldingPool(JobQueue(store, Wakeup()))
    await pool.start()
    await store.looks_reach(WORKERS)  # every worker has looked once and sleeps
    try:
        yield pool
    finally:
        pool.release.set()
        await pool.stop(2)
        store.db.close()


async def test_a_new_job_wakes_one_idle_worker_not_all_of_them(pool: HoldingPool):
    store = pool.store
    assert isinstance(store, CountingStore)
    store.looks = 0
    [job_id] = await pool.queue.add([_job("one")])
    await pool.started_reach(1, 5)
    pool.release.set()
    await pool._idle.wait()
    assert (await store.get(job_id)).status == DONE
    # The woken worker's look (the job), the look of the one it woke in turn (nothing), and its own look once the
    # job is done (nothing). Were every idle worker woken, the other seven would have looked too, all at the ring:
    # their looks would be counted before the last of these three.
    await store.looks_reach(3)
    assert store.looks == 3
    assert pool.started == [job_id]


async def test_one_wake_up_gets_every_idle_worker_going_when_many_jobs_wait(pool: HoldingPool):
    # Stored behind the pool's back (as another replica does), then one wake-up (as its NOTIFY gives).
    ids = await pool.store.add([_job(f"j{i}") for i in range(WORKERS + 1)])
    pool.wake()
    # Each worker that finds a job wakes the next: all eight hold a job at once, well before the 5 s idle poll.
    await pool.started_reach(WORKERS, 2.0)
    assert len(set(pool.started)) == WORKERS
    pool.release.set()
    await pool.started_reach(WORKERS + 1, 5)
    await pool._idle.wait()
    assert sorted(pool.started) == sorted(ids)


async def test_a_ring_reaches_the_longest_waiting_and_is_kept_for_a_waiter_still_looking():
    wakeup = Wakeup()
    first, second, third = wakeup.waiter(), wakeup.waiter(), wakeup.waiter()
    wakeup.ring(1)
    assert [first.is_set(), second.is_set(), third.is_set()] == [True, False, False]
    wakeup.forget(second)  # it found work: the next ring passes it over
    wakeup.ring(1)
    assert third.is_set() and not second.is_set()
    late = wakeup.waiter()  # taken before looking; rung while it looks, it looks again instead of sleeping
    wakeup.ring()
    assert late.is_set()
    await wakeup.sleep(late, 5.0)  # returns at once
    gone = wakeup.waiter()
    await wakeup.sleep(gone, 0.01)  # nobody rang: the timer ends it, and it is forgotten
    wakeup.ring(1)
    assert not gone.is_set()
