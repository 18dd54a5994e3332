"""`python -m bench.store`: what the stores cost on their own, on SQLite and on PostgreSQL (no Slack, no TRTC).

Each phase times N operations through the stores' public API, the way the bot makes them:
- jobs: one at a time, add -> claim_next -> update(status=done) (a worker's path for one request);
- burst: N adds started in the same loop turn (a burst of acknowledgements: group commit);
- outbox: N put_message, then due() pages of 100 each marked delivered (the sender's path).
PostgreSQL gets a database of its own on BENCH_POSTGRES_URL's server, dropped afterwards. Each phase reports its
wall-clock time and this process's CPU time (every thread): on a shared machine the CPU time is the steadier
measure of what the store code itself costs (the PostgreSQL server's own work is not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bot.store.database import open_database
from bot.store.jobs import DONE, JobStore, NewJob
from bot.store.outbox import Outbox

POSTGRES_SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _job(i: int, tag: str) -> NewJob:
    return NewJob(dedupe_key=f"bench:{tag}:{i}", kind="share", file={"id": f"F{i}", "name": "a.m4a"},
                  options={"name": None}, channel="C1", share_ts=f"1.{i}", user_id="U1", team_id="T1")


class _Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self, out: dict[str, float], phase: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        out[phase], out[phase + " cpu"] = wall - self.wall, cpu - self.cpu
        self.wall, self.cpu = wall, cpu


async def _phases(url: str, n: int) -> dict[str, float]:
    db = open_database(url)
    try:
        store, outbox = JobStore(db), Outbox(db, ttl_seconds=3600)
        out: dict[str, float] = {}
        clock = _Clock()
        for i in range(n):
            await store.add([_job(i, "seq")])
            job = await store.claim_next("bench", 30.0)
            assert job is not None
            await store.update(job.id, status=DONE, finished_at=time.time())
        clock.lap(out, "jobs")

        clock = _Clock()
        added = await asyncio.gather(*(store.add([_job(i, "burst")]) for i in range(n)))
        clock.lap(out, "burst")
        assert sum(len(ids) for ids in added) == n

        clock = _Clock()
        for i in range(n):
            await outbox.put_message(f"m{i}", channel="C1", text=f"message {i}")
        sent = 0
        while records := await outbox.due(time.time() + 1, limit=100):
            for record in records:
                await outbox.delivered(record, ts=f"1.{record.id}")
            sent += len(records)
        clock.lap(out, "outbox")
        assert sent == n
        return out
    finally:
        db.close()


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    import psycopg

    name = f"bench_store_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_SERVER.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_SERVER, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="operations per phase (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per database; the best is shown (default 3)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"), help="one database only")
    args = parser.parse_args()
    for dialect in ("sqlite", "postgresql"):
        if args.only and dialect != args.only:
            continue
        runs = []
        for _ in range(args.repeat):
            if dialect == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    runs.append(asyncio.run(_phases(str(Path(tmp) / "bench.db"), args.n)))
            else:
                with _postgres() as url:
                    runs.append(asyncio.run(_phases(url, args.n)))
        best = {phase: min(run[phase] for run in runs) for phase in runs[0]}
        print(f"{dialect:<10} n={args.n}: " + "  ".join(
            f"{phase} {best[phase]:.3f} s ({best[phase] / args.n * 1e6:.0f} us/op, cpu {best[phase + ' cpu']:.3f} s)"
            for phase in ("jobs", "burst", "outbox")
        ))


if __name__ == "__main__":
    main()
