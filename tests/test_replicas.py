"""Two bot processes on one PostgreSQL and one Redis: the work and the TRTC limit are shared, and a replica
killed with SIGKILL half-way loses nothing: its running jobs are taken over when their leases run out, its
outbox leadership passes to the survivor, and every share is answered exactly once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from support.driving import (
    BotProcess,
    assert_one_final_answer,
    is_final,
    max_in_window,
    replies,
    standins,
    wait_finals,
    where,
)

LEADS = "this replica now sends the Slack outbox"


@pytest.fixture(scope="module")
def speech_wav(media) -> bytes:
    return media.speech(15, ".wav").read_bytes()


def _rows(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def _wait(predicate, timeout: float, what: str, detail=lambda: "") -> None:
    """Poll the database or a log: neither gives an event to wait on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {detail()}"
        time.sleep(0.005)


def test_two_replicas_share_a_burst_and_survive_a_sigkill(tmp_path: Path, postgres_url: str, speech_wav: bytes):
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DATA_DIR": str(tmp_path / "shared-data"),
        "LEASE_SECONDS": "3",
        # Enough workers that every share starts (and posts its status message) before the kill.
        "WORKERS": "24",
        "TRTC_MAX_RPS": "20",
    }
    with (
        standins(max_rps=20) as (slack, trtc),
        BotProcess(slack, trtc, tmp_path / "a", **env) as a,
        BotProcess(slack, trtc, tmp_path / "b", **env) as b,
    ):
        a.start()
        b.start()
        _wait(lambda: LEADS in a.log_text() + b.log_text(), 10, "a leader")
        leader, survivor = (a, b) if LEADS in a.log_text() else (b, a)
        assert LEADS not in survivor.log_text()
        # Each clone takes four seconds at TRTC, so the kill finds the leader with clones in flight.
        trtc.delay_next(4.0, times=1000)
        with ThreadPoolExecutor(8) as pool:
            # Spread over both: odd shares to one replica's URL, even ones to the other's.
            results = list(pool.map(
                lambda i: (a if i % 2 else b).share(
                    speech_wav, f"v{i}.wav", "audio/wav", "wav", channel=f"C0REP{i:02d}"
                ),
                range(40),
            ))
        assert all(response.status_code == 200 for response, _ in results)
        bodies = [body for _, body in results]

        assert leader.proc is not None
        owner = f":{leader.proc.pid}:"
        mine = "SELECT count(*) FROM jobs WHERE status = 'running' AND lease_owner LIKE %s"
        # Half-way: the leader runs clones, every status message is posted and recorded, nothing is in flight to
        # Slack. (A post Slack accepted that the dead process never recorded would be posted again: a known limit,
        # see the README; later edits and reactions are idempotent.)
        _wait(
            lambda: all(len(replies(slack, *where(body))) == 1 for body in bodies)
            and _rows(postgres_url, mine, f"%{owner}%")[0][0] > 0
            and _rows(postgres_url, "SELECT count(*) FROM outbox WHERE state = 'pending'")[0][0] == 0,
            30,
            "the leader running clones with every status posted and an idle outbox",
            lambda: (
                _rows(postgres_url, "SELECT key, kind, state, after_key, thread_key, next_at, last_error FROM outbox"
                      " WHERE state = 'pending'"),
                _rows(postgres_url, "SELECT status, lease_owner, attempts, count(*) FROM jobs GROUP BY 1, 2, 3"),
                [(where(body), [m.get("text") for m in replies(slack, *where(body))]) for body in bodies
                 if len(replies(slack, *where(body))) > 1],
                [c for c in slack.calls_to("chat.postMessage") if c.get("channel") in
                 {where(body)[0] for body in bodies if len(replies(slack, *where(body))) > 1}],
            ),
        )
        assert len(trtc.requests) < 40  # half-way indeed
        leader.kill()
        orphaned = _rows(postgres_url, "SELECT id FROM jobs WHERE status = 'running' AND lease_owner LIKE %s",
                         f"%{owner}%")
        assert orphaned, "the killed replica held running jobs"

        try:
            wait_finals(slack, bodies, timeout=60)
        except AssertionError:
            print(_rows(postgres_url, "SELECT id, status, stage, attempts, lease_owner, lease_until, run_at FROM jobs"
                        " WHERE status != 'done'"))
            print(survivor.log_text()[-4000:])
            raise
        assert LEADS in survivor.log_text()  # the survivor took over the outbox
        assert survivor.terminate() == 0

    for body in bodies:
        message = assert_one_final_answer(slack, body)
        assert message["text"].startswith("Voice cloned"), (where(body), message["text"])
    assert trtc.refusals == 0
    assert max_in_window([r.time for r in trtc.requests], 1.0) <= 20
    jobs = _rows(postgres_url, "SELECT id, status, attempts, lease_owner FROM jobs")
    assert len(jobs) == 40 and {status for _, status, _, _ in jobs} == {"done"}
    # The killed replica's running jobs (it held some: asserted above) were finished by the survivor, each on a
    # second attempt.
    assert all(owner not in owner_id for *_, owner_id in jobs)
    taken_over = {job_id: attempts for job_id, _, attempts, _ in jobs if (job_id,) in orphaned}
    assert taken_over and all(attempts == 2 for attempts in taken_over.values()), taken_over


def test_the_web_role_only_stores_and_acks_and_a_worker_does_the_rest(
    tmp_path: Path, postgres_url: str, speech_wav: bytes
):
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DATA_DIR": str(tmp_path / "shared-data"),
        "CONSENT": "ask",
    }
    with (
        standins() as (slack, trtc),
        BotProcess(slack, trtc, tmp_path / "web", role="web", **env) as web,
        BotProcess(slack, trtc, tmp_path / "worker", role="worker", **env) as worker,
    ):
        web.start()
        shares = [web.share(speech_wav, f"w{i}.wav", "audio/wav", "wav", channel=f"C0WEB{i}") for i in range(3)]
        assert all(response.status_code == 200 for response, _ in shares)
        bodies = [body for _, body in shares]
        # Stored before the acknowledgement; nothing else happened: no download, no Slack call but the start-up
        # auth.test, no TRTC request (the hourglass waits in the outbox for a worker to send it).
        assert sorted(status for (status,) in _rows(postgres_url, "SELECT status FROM jobs")) == ["queued"] * 3
        assert [c.method for c in slack.calls if c.method != "auth.test"] == [] and slack.file_requests == []
        assert trtc.requests == []
        # The worker serves no Slack requests at all.
        assert web.deliver(bodies[0]).status_code == 200
        # The Slack stand-in stamps with time.time(), the TRTC stand-in with time.monotonic().
        worker_starting, worker_starting_monotonic = time.time(), time.monotonic()
        worker.start()
        assert httpx.post(worker.url, content=b"{}").status_code == 404
        # The worker's conversions yield the cores to the web replica's acknowledgements.
        ours = psutil.Process().nice()
        assert web.proc is not None and worker.proc is not None
        assert psutil.Process(web.proc.pid).nice() == ours
        assert psutil.Process(worker.proc.pid).nice() == min(ours + 10, 19)

        def questions() -> list[dict]:
            found = []
            for body in bodies:
                for message in replies(slack, *where(body)):
                    if any(e.get("action_id") == "consent_confirm" for b in message.get("blocks") or []
                           for e in b.get("elements") or []):
                        found.append(message)
            return found

        assert slack.wait_for(lambda: len(questions()) == 3, 30)
        assert trtc.requests == []  # nothing is cloned before the uploader's press
        # The press reaches the web process; the worker clones it.
        channel, _ = where(bodies[1])
        asked = next(m for m in questions() if m.get("thread_ts") == where(bodies[1])[1])
        press = slack.press(channel, asked["ts"], "consent_confirm")
        assert web.deliver(press, kind="interactive").status_code == 200
        assert slack.wait_for(lambda: is_final(slack, *where(bodies[1])), 30)
        assert assert_one_final_answer(slack, bodies[1])["text"].startswith("Voice cloned")
        assert len(trtc.requests) == 1
        # Proving the absence over the whole run, not just right after the acknowledgements: every download, Slack
        # call (but auth.test) and TRTC request came after the worker began starting, so none was the web's.
        assert all(c.time >= worker_starting for c in slack.calls if c.method != "auth.test")
        assert all(r.time >= worker_starting for r in slack.file_requests)
        assert all(r.time >= worker_starting_monotonic for r in trtc.requests)
        assert web.terminate() == 0 and worker.terminate() == 0
    statuses = sorted(status for (status,) in _rows(postgres_url, "SELECT status FROM jobs"))
    assert statuses == ["awaiting_consent", "awaiting_consent", "done"]


def test_two_web_replicas_share_the_replay_keys(tmp_path: Path, postgres_url: str):
    """The same signed `/clone` delivered to one web replica and replayed to another runs once: the replay keys live
    in the database they share, not in either process."""
    from urllib.parse import urlencode

    from support.harness import SIGNING_SECRET

    from bot.testing.standin_slack import sign

    env = {"DATABASE_URL": postgres_url}
    with (
        standins() as (slack, trtc),
        BotProcess(slack, trtc, tmp_path / "a", role="web", **env) as first,
        BotProcess(slack, trtc, tmp_path / "b", role="web", **env) as second,
    ):
        first.start()
        second.start()
        content = urlencode(slack.slash_command("/clone", "", channel_id="C0REPLICAS")).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(content, SIGNING_SECRET)}
        answers = [httpx.post(url, content=content, headers=headers, timeout=10)
                   for url in (first.url, second.url, first.url)]
        assert [(a.status_code, a.content) for a in answers] == [(200, b""), (200, b""), (200, b"")]
        assert len(slack.calls_to("views.open")) == 1
        assert _rows(postgres_url, "SELECT COUNT(*) FROM replays") == [(1,)]
