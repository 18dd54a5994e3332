"""The durable job store."""

from __future__ import annotations

from bot.store.jobs import DONE, QUEUED, JobStore, NewJob


def _job(key: str) -> NewJob:
    return NewJob(dedupe_key=key, kind="share", file={"id": key, "name": "a.m4a"}, options={"name": None},
                  channel="C1", thread_ts="1.0", share_ts="1.0", user_id="U1", event_id="Ev1")


async def test_add_dedupes_and_survives_reopen(tmp_path):
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    first = await store.add([_job("a"), _job("b")])
    again = await store.add([_job("a"), _job("b"), _job("c")])
    assert len(first) == 2 and len(again) == 1
    await store.update(first[0], status=DONE, result={"voice_id": "v_1"})
    store.close()

    reopened = JobStore(path)
    assert await reopened.unfinished() == [first[1], again[0]]
    job = await reopened.get(first[0])
    assert job is not None and job.status == DONE and job.result == {"voice_id": "v_1"}
    assert (await reopened.get(first[1])).status == QUEUED
    reopened.close()
