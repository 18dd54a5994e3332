"""The durable job store."""

from __future__ import annotations

import contextlib
import sqlite3
import time

import pytest

from bot.store.database import DatabaseUnavailable, open_database
from bot.store.jobs import DONE, QUEUED, RUNNING, JobStore, NewJob
from bot.store.sql import sqlite as sqlite_sql


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


async def test_the_queue_on_sqlite_claims_leases_and_gives_back_what_a_dead_run_left(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    try:
        first, second = await store.add([_job("a"), _job("b")])
        claimed = await store.claim_next("run-1", 30.0)
        assert claimed is not None and claimed.id == first and claimed.status == RUNNING and claimed.attempts == 1
        assert await store.claim(first, "run-2", 30.0) is None  # leased
        assert await store.renew("run-1", [first, second], 30.0) == 1  # only what it holds
        assert await store.renew("run-2", [first], 30.0) == 0 and await store.renew("run-1", [], 30.0) == 0
        assert await store.holds(first, "run-1") and not await store.holds(first, "run-2")
        # A new process on the same file: the run that held the lease is gone, whatever the lease says.
        assert await store.recover() == 1
        again = await store.claim_next("run-2", 30.0)
        assert again is not None and again.id == first and again.attempts == 2
        await store.update(first, status=DONE, finished_at=time.time() - 10, result={"voice_id": "v"})
        assert await store.counts() == {DONE: 1, QUEUED: 1}
        assert await store.pending() == 1 and await store.unfinished() == [second]
        assert await store.purge(time.time()) == [first]
        with pytest.raises(ValueError, match="unknown job columns"):
            await store.update(second, id=5)
    finally:
        store.close()


async def test_a_database_from_an_older_release_gets_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        # The jobs table as the first release made it, with one job in it.
        conn.executescript(sqlite_sql.JOBS.table.create)
        conn.execute(
            "INSERT INTO jobs (dedupe_key, kind, file_json, options, created_at, updated_at)"
            " VALUES ('old', 'share', '{}', '{}', 1.0, 1.0)"
        )
    store = JobStore(path)
    try:
        job = await store.claim_next("me", 30.0)
        assert job is not None and job.dedupe_key == "old" and job.waits == 0 and job.finished_at is None
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(jobs)")}
    assert set(sqlite_sql.JOBS.table.added) <= columns and "jobs_due" in indexes


def test_a_database_that_cannot_be_opened_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseUnavailable) as caught:
        open_database(f"sqlite:///{blocker / 'jobs.db'}")
    message = str(caught.value)
    assert str(blocker / "jobs.db") in message and "DATABASE_URL" in message and "\n" not in message


async def test_claims_are_fair_between_workspaces_and_users(tmp_path):
    store = JobStore(tmp_path / "jobs.db")

    def job(key: str, team: str, user: str) -> NewJob:
        return NewJob(dedupe_key=key, kind="say", file={}, options={}, channel="C1", user_id=user, team_id=team)

    # Alice (T1) has five waiting before anyone else asks; then Carol (T1) and Dan (T2) one each.
    await store.add([job(f"alice{n}", "T1", "U0ALICE") for n in range(5)])
    await store.add([job("carol", "T1", "U0CAROL"), job("dan", "T2", "U0DAN")])
    claimed = []
    for _ in range(4):  # four workers claim in turn; nothing finishes meanwhile
        found = await store.claim_next("w", 60)
        assert found is not None
        claimed.append(found.dedupe_key)
    # Alice's oldest first; then T2 (no job running) before T1; then Carol (none running) before Alice's second.
    assert claimed == ["alice0", "dan", "carol", "alice1"]
    store.close()


async def test_writes_made_in_one_loop_turn_share_one_sqlite_transaction_and_a_failure_stays_its_own(tmp_path):
    # Group commit on SQLite too: a burst's acknowledgements made one transaction and one trip to the database
    # thread each, and the thread hand-offs, while the event loop parsed the rest of the burst, were most of the wait.
    import asyncio

    db = open_database(tmp_path / "jobs.db")
    store = JobStore(db)
    try:

        def in_transaction(conn) -> bool:
            return conn.raw.in_transaction

        def failing(conn) -> None:
            conn.raw.execute("INSERT INTO no_such_table VALUES (1)")

        assert await asyncio.gather(*(db.run_batched(in_transaction) for _ in range(5))) == [True] * 5
        # Alone, a write is not wrapped in a transaction of the batch's.
        assert await db.run_batched(in_transaction) is False
        added = await asyncio.gather(
            store.add([_job("a")]), db.run_batched(failing), store.add([_job("b")]), return_exceptions=True
        )
        assert isinstance(added[1], sqlite3.OperationalError)
        assert len(added[0]) == 1 and len(added[2]) == 1
        assert await store.counts() == {QUEUED: 2}
    finally:
        db.close()


async def test_a_batched_write_after_the_database_closed_fails_at_once(tmp_path):
    import asyncio

    db = open_database(tmp_path / "jobs.db")
    db.close()
    # Not a batch waiting for ever on a thread that is gone (every later write on this loop would wait behind it).
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(db.run_batched(lambda conn: conn.raw.in_transaction), 5)
