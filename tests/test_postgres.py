"""The stores on a real PostgreSQL: the same behaviour as on SQLite, plus what several processes need
(atomic claims, leases taken over, wake-ups between processes, one leader)."""

from __future__ import annotations

import asyncio
import re
import time

import psycopg
import pytest

from bot.store.audit import Audit, AuditEntry
from bot.store.database import DatabaseUnavailable, open_database
from bot.store.jobs import DONE, QUEUED, RUNNING, JobStore, NewJob
from bot.store.leader import Leadership
from bot.store.library import VoiceLibrary, VoiceRecord
from bot.store.outbox import Outbox
from bot.store.postgres import PostgresDatabase
from bot.store.sql import Command, Query, Table
from bot.store.sql import postgresql as pg_sql
from bot.store.sql import sqlite as sqlite_sql


def new_job(i: int, **extra) -> NewJob:
    return NewJob(dedupe_key=f"share:C{i}:1.{i}:F{i}", kind="share", file={"id": f"F{i}"}, options={},
                  channel=f"C{i}", share_ts=f"1.{i}", user_id="U1", team_id="T1", **extra)


def _statements(dialect) -> dict[str, str]:
    found = {}
    for store in ("jobs", "outbox", "voices", "audit"):
        for name, value in vars(getattr(dialect, store)).items():
            if isinstance(value, Query | Command):
                found[f"{store}.{name}"] = value.text
            elif isinstance(value, Table):
                found[f"{store}.{name}"] = value.create + value.after + "".join(value.added)
    found["jobs.update"] = dialect.jobs.update(("status", "result")).text
    return found


def test_each_dialect_writes_every_statement_with_the_same_parameters():
    sqlite, postgres = _statements(sqlite_sql.DIALECT), _statements(pg_sql.DIALECT)
    assert sqlite.keys() == postgres.keys()
    for name, text in sqlite.items():
        # Each in its own placeholder style only: nothing converts one into the other.
        assert "%(" not in text and "?" not in text, name
        assert not re.search(r"(?<![:\w]):\w", postgres[name]) and "?" not in postgres[name], name
        assert set(re.findall(r"(?<![:\w]):(\w+)", text)) == set(re.findall(r"%\((\w+)\)s", postgres[name])), name
    # Where the dialects really differ, each says so in its own words.
    assert "SKIP LOCKED" in postgres["jobs.claim_next"] and "SKIP LOCKED" not in sqlite["jobs.claim_next"]
    assert "REAL" not in postgres["jobs.table"] and "DOUBLE PRECISION" in postgres["jobs.table"]
    assert "audit_no_truncate" in postgres["audit.table"] and "RAISE(ABORT" in sqlite["audit.table"]
    with pytest.raises(ValueError, match="not settable"):
        pg_sql.DIALECT.jobs.update(("id",))


def test_an_unreachable_server_is_one_line_without_the_password():
    with pytest.raises(DatabaseUnavailable) as caught:
        open_database("postgresql://bot:hunter2secret@127.0.0.1:1/voiceclone")
    message = str(caught.value)
    assert "hunter2secret" not in message and "127.0.0.1:1/voiceclone" in message and "\n" not in message
    assert message.startswith("Cannot use the PostgreSQL database postgresql://bot:**********@127.0.0.1:1/voiceclone")


async def test_jobs_outbox_voices_and_audit_on_postgres(postgres_url):
    db = PostgresDatabase(postgres_url)
    try:
        store = JobStore(db)
        first = await store.add([new_job(1), new_job(2)])
        assert len(first) == 2
        [third] = await store.add([new_job(1), new_job(3)])  # the duplicate is ignored
        assert (await store.get(third)).dedupe_key == new_job(3).dedupe_key
        job = await store.get(first[0])
        assert job is not None and job.file == {"id": "F1"} and job.status == QUEUED
        assert isinstance(job.created_at, float) and abs(job.created_at - time.time()) < 60  # 8-byte floats

        claimed = await store.claim_next("me", 30)
        assert claimed is not None and claimed.id == first[0] and claimed.attempts == 1
        await store.update(claimed.id, status=DONE, result={"voice_id": "v"}, finished_at=time.time())
        assert (await store.get(claimed.id)).result == {"voice_id": "v"}
        assert await store.counts() == {DONE: 1, QUEUED: 2}

        outbox = Outbox(db, ttl_seconds=60)
        await outbox.put_message("m1", channel="C1", text="hello")
        await outbox.put_message("m1", channel="C1", text="hello again")
        due = await outbox.due(time.time() + 1)
        assert [(r.key, r.version, r.payload["text"]) for r in due] == [("m1", 2, "hello again")]
        await outbox.delivered(due[0], ts="1.5")
        assert await outbox.depth() == 0 and (await outbox.get("m1")).ts == "1.5"

        voices = VoiceLibrary(db)
        record = VoiceRecord(team_id="T1", voice_id="v1", voice_name="Ann", owner="U1", created_at=time.time())
        await voices.add(record)
        assert [v.voice_id for v in await voices.listed("T1", "U1")] == ["v1"]

        audit = Audit(db)
        await audit.record(AuditEntry(consent="button", outcome="cloned", team_id="T1", voice_id="v1"))
        assert [e.voice_id for e in audit.entries()] == ["v1"]
        # Append-only in PostgreSQL too: UPDATE, DELETE and TRUNCATE are refused by the database itself.
        for statement in ("UPDATE audit SET outcome = 'x'", "DELETE FROM audit", "TRUNCATE audit"):
            with psycopg.connect(postgres_url, autocommit=True) as conn, pytest.raises(psycopg.errors.RaiseException):
                conn.execute(statement)
        assert len(audit.entries()) == 1
    finally:
        db.close()


async def test_two_processes_claiming_at_once_never_take_the_same_job(postgres_url):
    # Two databases = two replicas' connection pools; 16 claimers race over 300 jobs.
    a, b = PostgresDatabase(postgres_url), PostgresDatabase(postgres_url)
    try:
        stores = [JobStore(a), JobStore(b)]
        await stores[0].add(new_job(i) for i in range(300))
        taken: list[tuple[str, int]] = []

        async def claimer(store: JobStore, name: str) -> None:
            while (job := await store.claim_next(name, 30)) is not None:
                taken.append((name, job.id))

        await asyncio.gather(*(claimer(stores[i % 2], f"replica{i % 2}-{i}") for i in range(16)))
        ids = [job_id for _, job_id in taken]
        assert len(ids) == 300 and len(set(ids)) == 300
        assert {name.split("-")[0] for name, _ in taken} == {"replica0", "replica1"}  # both took work
        assert await stores[1].counts() == {RUNNING: 300}
    finally:
        a.close()
        b.close()


async def test_a_dead_owners_job_is_taken_over_once_its_lease_runs_out(postgres_url):
    db = PostgresDatabase(postgres_url)
    try:
        store = JobStore(db)
        [job_id] = await store.add([new_job(1)])
        lease = 1.0
        dead = await store.claim_next("dead-replica", lease)
        claimed_at = time.time()
        assert dead is not None and dead.id == job_id
        assert await store.claim_next("live-replica", lease) is None  # still leased
        assert await store.claim(job_id, "live-replica", lease) is None
        # A live owner renews; the dead one does not: the job falls due when its lease ends (polled: time is the event).
        due = await store.next_due()
        assert due is not None and abs(due - (claimed_at + lease)) < 0.5
        while (taken := await store.claim_next("live-replica", lease)) is None:
            await asyncio.sleep(0.05)
        assert time.time() - claimed_at >= lease * 0.9
        assert taken.id == job_id and taken.attempts == 2
        assert await store.holds(job_id, "live-replica") and not await store.holds(job_id, "dead-replica")
        # The dead owner's renewals (were it only paused) no longer touch the job.
        assert await store.renew("dead-replica", [job_id], lease) == 0
        assert await store.renew("live-replica", [job_id], lease) == 1
        # Stopping gives jobs back at once.
        assert await store.release("live-replica") == 1
        again = await store.claim_next("third", lease)
        assert again is not None and again.id == job_id and again.attempts == 3
    finally:
        db.close()


async def test_a_new_job_wakes_a_listener_in_another_process(postgres_url):
    writer, reader = PostgresDatabase(postgres_url), PostgresDatabase(postgres_url)
    calls: list[float] = []
    changed = asyncio.Event()

    def woken() -> None:
        calls.append(time.monotonic())
        changed.set()

    listener = reader.listener({"voiceclone_jobs": woken})
    try:
        store = JobStore(writer)
        listener.start()
        # On connecting, the listener makes one look of its own (anything may have happened before it listened).
        async with asyncio.timeout(10):
            await changed.wait()
        assert len(calls) == 1
        changed.clear()
        # Then only a NOTIFY wakes it: the insert made by the other pool.
        await store.add([new_job(1)])
        async with asyncio.timeout(5):
            await changed.wait()
        assert len(calls) == 2
    finally:
        listener.stop()
        writer.close()
        reader.close()


async def test_one_leader_at_a_time_and_a_successor_when_it_dies(postgres_url):
    events: list[str] = []

    def leadership(name: str, db: PostgresDatabase) -> Leadership:
        async def elected() -> None:
            events.append(f"{name} leads")

        async def lost() -> None:
            events.append(f"{name} stops")

        return Leadership(db, elected, lost, interval=0.1)

    a_db, b_db = PostgresDatabase(postgres_url), PostgresDatabase(postgres_url)
    a, b = leadership("a", a_db), leadership("b", b_db)
    try:
        await a.start()
        await b.start()
        assert a.leading and not b.leading and events == ["a leads"]
        # The leader stops (as if paused or killed): its checks stop and its session closes, freeing the lock.
        assert a._task is not None
        a._task.cancel()
        await asyncio.to_thread(lambda: a._lock.conn.close())
        while not b.leading:
            await asyncio.sleep(0.05)
        assert events == ["a leads", "b leads"]
        # The old leader comes back (a paused process resuming): it finds the lock taken and stops leading, so two
        # leaders never overlap for longer than one check.
        a._task = asyncio.create_task(a._loop())
        while a.leading:
            await asyncio.sleep(0.05)
        assert events == ["a leads", "b leads", "a stops"] and b.leading
    finally:
        await a.stop()
        await b.stop()
        a_db.close()
        b_db.close()


async def test_writes_made_in_one_loop_turn_share_one_transaction_and_a_failure_stays_its_own(postgres_url):
    db = PostgresDatabase(postgres_url)
    try:
        store = JobStore(db)

        def transaction_id(conn) -> int:
            return conn.raw.execute("SELECT txid_current() AS tx").fetchone()["tx"]

        def failing(conn) -> None:
            conn.raw.execute("SELECT 1 / 0")

        # Five writes started together: one trip to the database thread, one transaction.
        ids = await asyncio.gather(*(db.run_batched(transaction_id) for _ in range(5)))
        assert len(set(ids)) == 1
        # One of them fails: it alone fails; the others are written (again, each on its own).
        added = await asyncio.gather(
            store.add([new_job(1)]), db.run_batched(failing), store.add([new_job(2)]), return_exceptions=True
        )
        assert isinstance(added[1], psycopg.errors.DivisionByZero)
        assert len(added[0]) == 1 and len(added[2]) == 1
        assert await store.counts() == {QUEUED: 2}
    finally:
        db.close()


async def test_a_batchs_unread_writes_reach_the_server_together_at_its_end(postgres_url):
    # run_later (a share's hourglass): in a batch, sent with the other writes of its statement when the batch ends,
    # not one round trip each; a write that fails there fails alone, as any write of a batch does.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE marks (name TEXT PRIMARY KEY)")
    db = PostgresDatabase(postgres_url)
    try:
        mark = Command("INSERT INTO marks (name) VALUES (%(name)s)")

        def later(name: str):
            def write(conn) -> int:
                conn.run_later(mark, {"name": name})
                # Not sent yet: this batch's own transaction does not see it.
                return conn.raw.execute("SELECT count(*) AS n FROM marks").fetchone()["n"]

            return write

        seen = await asyncio.gather(*(db.run_batched(later(f"m{i}")) for i in range(5)))
        assert seen == [0, 0, 0, 0, 0]
        outcomes = await asyncio.gather(
            db.run_batched(later("m5")), db.run_batched(later("m0")), db.run_batched(later("m6")),
            return_exceptions=True,
        )
        # Retried one by one after the batch failed at its end: each write now runs at once and sees the rows before.
        assert outcomes[0] == 6 and outcomes[2] == 7
        assert isinstance(outcomes[1], psycopg.errors.UniqueViolation)
        with psycopg.connect(postgres_url) as conn:
            names = [row[0] for row in conn.execute("SELECT name FROM marks ORDER BY name")]
        assert names == ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]
    finally:
        db.close()


async def test_an_older_database_gets_only_the_columns_it_lacks(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(pg_sql.JOBS.table.create)
        conn.execute("ALTER TABLE jobs ADD COLUMN waits INTEGER NOT NULL DEFAULT 0")
    db = PostgresDatabase(postgres_url)
    try:
        store = JobStore(db)
        [job_id] = await store.add([new_job(1)])
        job = await store.claim_next("me", 30)
        assert job is not None and job.id == job_id and job.waits == 0
    finally:
        db.close()
    with psycopg.connect(postgres_url) as conn:
        kinds = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'jobs'"
        ).fetchall())
    assert set(pg_sql.JOBS.table.added) <= kinds.keys() and kinds["run_at"] == "double precision"


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
async def test_a_progress_edit_waits_for_a_newer_state_but_a_first_post_and_a_backoff_keep_their_time(
    postgres_url, tmp_path, dialect
):
    db = PostgresDatabase(postgres_url) if dialect == "postgresql" else open_database(tmp_path / "jobs.db")
    try:
        outbox = Outbox(db, ttl_seconds=3600)
        begun = time.time()
        # Never posted: due at once whatever its settle, so the thread shows that a share was taken.
        await outbox.put_message("job:1:status", channel="C1", text="Queued", settle=30)
        await outbox.put_message("job:1:status", channel="C1", text="Downloading", settle=30)
        [first] = await outbox.due(time.time())
        assert (first.payload["text"], first.version) == ("Downloading", 2)
        # An edit stored while that post is on its way, or after it, waits its settle for a newer state...
        await outbox.put_message("job:1:status", channel="C1", text="Converting", settle=30)
        await outbox.delivered(first, ts="1.5")
        assert await outbox.due(time.time()) == []
        waiting = (await outbox.get("job:1:status")).next_at
        assert begun + 30 <= waiting <= time.time() + 30
        # ... a newer progress edit goes out at the older one's time, not a settle later...
        await outbox.put_message("job:1:status", channel="C1", text="Cloning", settle=60)
        assert (await outbox.get("job:1:status")).next_at == waiting
        assert [r.payload["text"] for r in await outbox.due(time.time() + 31)] == ["Cloning"]
        # ... and the answer (no settle) is due at once, in its place.
        await outbox.put_message("job:1:status", channel="C1", text="Voice cloned")
        [answer] = await outbox.due(time.time())
        assert (answer.payload["text"], answer.version) == ("Voice cloned", 5)
        # A record waiting out a backoff (Slack said 429) keeps it, whatever a newer state says.
        await outbox.retry_at(answer, begun + 600, "ratelimited")
        await outbox.put_message("job:1:status", channel="C1", text="Voice cloned, renamed")
        assert await outbox.due(time.time()) == []
        assert (await outbox.get("job:1:status")).next_at == begun + 600
        # So does a message never posted: its first post failed, and it is not due before its retry.
        await outbox.put_message("job:2:status", channel="C1", text="Downloading")
        [unposted] = await outbox.due(time.time())
        await outbox.retry_at(unposted, begun + 900, "HTTP 500")
        await outbox.put_message("job:2:status", channel="C1", text="Converting", settle=30)
        assert await outbox.due(time.time()) == []
        # The sender's pass sleeps until the next record due later, past records blocked behind others: job 2's
        # check mark waits for its answer (in backoff until begun + 900) and is due itself (next_at 0).
        await outbox.put_reactions("share:C1:2.0:reactions", channel="C1", ts="2.0", names=["white_check_mark"],
                                   after_key="job:2:status")
        look = await outbox.look(time.time())
        assert look.due == [] and look.expired == [] and look.next_at == begun + 600
    finally:
        db.close()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
async def test_a_batch_of_acknowledgements_counts_what_it_stores_before_the_next_check(postgres_url, tmp_path, dialect):
    # Requests stored in the same turn of the event loop share one transaction (group commit, on either database),
    # and the fair-use counts are read once per transaction: each admitted request must count for the checks after it
    # in that batch.
    from bot.settings import load_settings
    from bot.store.jobs import Refused
    from bot.work.quotas import Quotas

    db = PostgresDatabase(postgres_url) if dialect == "postgresql" else open_database(tmp_path / "jobs.db")
    try:
        jobs, library, audit = JobStore(db), VoiceLibrary(db), Audit(db)
        settings = load_settings(environ={"MAX_JOBS_PER_USER": "2", "SAYS_PER_MINUTE_PER_USER": "3"})
        quotas = Quotas(settings, jobs, library, audit)

        def share(i: int, user: str) -> list[NewJob]:
            return [NewJob(dedupe_key=f"share:{user}:{i}", kind="share", file={"id": f"F{i}"}, options={},
                           channel="C1", share_ts=f"1.{i}", user_id=user, team_id="T1")]

        def say(i: int) -> list[NewJob]:
            return [NewJob(dedupe_key=f"say:{i}", kind="say", file={}, options={}, channel="C2", user_id="U9",
                           team_id="T1")]

        async def stored(new: list[NewJob], kind: str, user: str) -> bool:
            try:
                return bool(await jobs.add(new, quotas.admission(kind, "T1", user)))
            except Refused:
                return False

        # U1's five shares in one batch: two admitted, three refused; U2's share beside them is not U1's count.
        outcomes = await asyncio.gather(
            *(stored(share(i, "U1"), Quotas.CLONE, "U1") for i in range(5)), stored(share(9, "U2"), Quotas.CLONE, "U2")
        )
        assert outcomes == [True, True, False, False, False, True]
        # U9's five `say`s in one batch: three in a minute, whatever the jobs limit.
        settings = load_settings(environ={"MAX_JOBS_PER_USER": "0", "SAYS_PER_MINUTE_PER_USER": "3"})
        quotas = Quotas(settings, jobs, library, audit)
        outcomes = await asyncio.gather(*(stored(say(i), Quotas.SAY, "U9") for i in range(5)))
        assert outcomes == [True, True, True, False, False]
        users = [job.user_id for job in [await jobs.get(n) for n in await jobs.unfinished()] if job is not None]
        assert sorted(users) == ["U1", "U1", "U2", "U9", "U9", "U9"]
    finally:
        db.close()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
async def test_a_request_refused_in_a_batch_that_failed_is_counted_once(postgres_url, tmp_path, dialect, caplog):
    # A batch in which one write fails is rolled back and written again one write at a time: the admission checks
    # run twice, and a request refused both times is still one refusal in the metric and the log.
    from bot import metrics
    from bot.settings import load_settings
    from bot.store.jobs import Refused
    from bot.work.quotas import Quotas

    db = PostgresDatabase(postgres_url) if dialect == "postgresql" else open_database(tmp_path / "jobs.db")
    try:
        jobs = JobStore(db)
        settings = load_settings(environ={"MAX_JOBS_PER_USER": "1"})
        quotas = Quotas(settings, jobs, VoiceLibrary(db), Audit(db))
        before = metrics.REGISTRY.get_sample_value("voiceclone_refused_total", {"limit": "MAX_JOBS_PER_USER"}) or 0

        async def stored(i: int) -> bool:
            new = [NewJob(dedupe_key=f"share:{dialect}:{i}", kind="share", file={"id": f"F{i}"}, options={},
                          channel="C1", share_ts=f"1.{i}", user_id="U1", team_id="T1")]
            try:
                return bool(await jobs.add(new, quotas.admission(Quotas.CLONE, "T1", "U1")))
            except Refused:
                return False

        def broken(conn) -> None:
            raise RuntimeError("this write fails, so its batch is rolled back and retried one write at a time")

        caplog.set_level("INFO", logger="bot.work.quotas")
        *outcomes, failure = await asyncio.gather(stored(0), stored(1), stored(2), db.run_batched(broken),
                                                  return_exceptions=True)
        assert outcomes == [True, False, False] and isinstance(failure, RuntimeError)
        after = metrics.REGISTRY.get_sample_value("voiceclone_refused_total", {"limit": "MAX_JOBS_PER_USER"})
        assert after - before == 2
        assert len([r for r in caplog.records if r.getMessage() == "request refused by MAX_JOBS_PER_USER"]) == 2
    finally:
        db.close()
