"""Issue 8 end to end: nothing is lost when Slack, Tencent or the bot itself fails.

Every test drives the real app with signed requests (or Socket Mode envelopes) against the loopback Slack and
TRTC stand-ins, breaks one of them with its fault controls, and checks what a user would see afterwards: every
share answered exactly once, in its own thread, without a restart, and nothing cloned twice.

Outages are held open for a few seconds each (about 10-15 s per test in all, instead of the issue's "tens of
seconds") to keep CI time sane: with a short max_backoff the bot retries several times within that, so the
outage is really hit many times over, which is what the tests check before restoring.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.driving import (
    BotProcess,
    assert_one_final_answer,
    read_jobs,
    read_rows,
    standins,
    wait_finals,
    where,
)
from support.harness import BotHarness

from bot.testing.standin_slack import SlackStandIn


@pytest.fixture(scope="module")
def small_wav(media) -> bytes:
    """A cheap valid prompt to convert: 14 s (over 10 s of it speech), already 16 kHz mono."""
    return media.speech(14, ".wav", "-ar", "16000", "-ac", "1").read_bytes()


def _hold(slack: SlackStandIn, seconds: float, proof: Callable[[], Any], what: str) -> None:
    """Keep a fault in place for `seconds`, and until `proof()` shows the bot's traffic really ran into it.

    The one place these tests wait for a duration rather than an event: an outage has to last.
    """
    end = time.monotonic() + seconds
    assert slack.wait_for(proof, seconds + 20), f"no traffic hit the outage: {what}"
    remaining = end - time.monotonic()
    if remaining > 0:
        slack.wait_for(lambda: time.monotonic() >= end, remaining)


def _share(bot: BotHarness, content: bytes, i: int, channel: str) -> dict[str, Any]:
    response, body = bot.share(content, f"memo{i}.wav", "audio/wav", "wav", channel=channel)
    assert response.status_code == 200
    return body


def _until(predicate: Callable[[], Any], timeout: float) -> bool:
    """Poll state that no stand-in event announces (the bot's own attributes, its database)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _sender_went_round(bot: BotHarness, passes: int = 2) -> bool:
    """Wait until everything pending in the outbox is due, then until the sender has begun `passes` passes since
    (woken, rather than left to its idle poll) and has nothing in flight: whatever it was going to send by then has
    reached Slack, as the stand-in records a call before answering it. False on a timeout."""

    def all_due() -> bool:
        [(latest,)] = bot.sql("SELECT MAX(next_at) FROM outbox WHERE state = 'pending'")
        return latest is None or latest <= time.time()

    if not _until(all_due, 10):
        return False
    sender = bot.runtime.sender
    for _ in range(passes):
        mark = sender.heartbeat  # set as each pass begins
        bot._loop.call_soon_threadsafe(sender.wake)
        if not _until(lambda mark=mark: sender.heartbeat > mark, 10):
            return False
    return _until(lambda: not sender._in_flight, 10)


def _outbox_ts(database: Path | str, key: str) -> str | None:
    """The ts the bot stored for an outbox record (None until the post's answer is stored)."""
    rows = read_rows(database, "SELECT ts FROM outbox WHERE key = ?", "SELECT ts FROM outbox WHERE key = %s", (key,))
    return rows[0]["ts"] if rows else None


def _file_outage_hits(slack: SlackStandIn) -> int:
    return sum(1 for r in slack.outage_requests if r.path.startswith("/files-pri/"))


# -- 1. a Slack outage ------------------------------------------------------------------------------------


def test_slack_outage_loses_nothing_and_needs_no_restart(tmp_path: Path, small_wav: bytes):
    with BotHarness(tmp_path, extra_env={"WORKERS": "2"}, max_backoff=1.0) as bot:
        slack, trtc = bot.slack, bot.trtc
        runtime = bot.runtime
        started = time.monotonic()
        # Connections cut: three shares (more than the two workers) arrive while Slack resets every connection.
        slack.outage("refuse")
        bodies = [_share(bot, small_wav, i, f"C0OUT{i % 3}") for i in range(3)]
        _hold(
            slack, 6, lambda: _file_outage_hits(slack) >= 3 and slack.outage_api_calls() >= 3,
            "downloads and Web API calls while connections are cut",
        )
        refused = (_file_outage_hits(slack), slack.outage_api_calls())
        # Then Slack's edge answers 503 HTML pages, and three more shares arrive.
        slack.outage("html")
        bodies += [_share(bot, small_wav, i, f"C0OUT{i % 3}") for i in range(3, 6)]
        html_hits = lambda: sum(1 for r in slack.outage_requests if r.status == 503)  # noqa: E731
        _hold(slack, 6, lambda: html_hits() >= 6, "503 pages for downloads and Web API calls")
        outage = time.monotonic() - started
        assert trtc.requests == []  # nothing could be downloaded, so nothing was cloned
        assert not any(slack.reactions(*where(b)) for b in bodies)  # nothing reached Slack either
        restored = time.monotonic()
        slack.restore()

        wait_finals(slack, bodies, timeout=60)
        recovery = time.monotonic() - restored
        bot.drain()
        assert bot.runtime is runtime and runtime.health() is None  # the same runtime, never restarted

    for body in bodies:
        assert assert_one_final_answer(slack, body)["text"].startswith("Voice cloned")
    # Each share cloned exactly once.
    assert len(trtc.requests) == len(bodies) and {r.outcome for r in trtc.requests} == {"ok"}
    assert slack.outage_api_calls() > 0 and _file_outage_hits(slack) > 0
    print(f"Slack outage {outage:.1f} s (refused {refused}, html {html_hits()}); all answered {recovery:.1f} s after")


# -- 2. a TRTC outage -------------------------------------------------------------------------------------


def test_trtc_outage_answers_everything_after_it_within_the_request_cap(tmp_path: Path, small_wav: bytes):
    cap = 4  # low, so that eight jobs retrying at once would go over it without the bot's limiter
    harness = BotHarness(
        tmp_path, extra_env={"WORKERS": "8", "TRTC_MAX_RPS": str(cap)}, max_backoff=1.0, tencent_wait=120
    )
    harness.trtc.max_rps = cap
    with harness as bot:
        slack, trtc = bot.slack, bot.trtc
        started = time.monotonic()
        trtc.outage("refuse")
        bodies = [_share(bot, small_wav, i, f"C0TC{i % 3}") for i in range(8)]
        outcomes = lambda kind: sum(1 for r in trtc.requests if r.outcome == kind)  # noqa: E731
        _hold(slack, 4, lambda: outcomes("reset") >= 8, "VoiceClone calls while connections are cut")
        trtc.outage("html", 502)
        _hold(slack, 2.5, lambda: outcomes("HTTP 502") >= 4, "VoiceClone calls answered 502")
        trtc.outage("html", 503)
        _hold(slack, 2.5, lambda: outcomes("HTTP 503") >= 4, "VoiceClone calls answered 503")
        outage = time.monotonic() - started
        # Waiting, not failing: no share has its final answer yet.
        assert not any(r in ("white_check_mark", "x") for b in bodies for r in slack.reactions(*where(b)))
        restored = time.monotonic()
        trtc.restore()

        wait_finals(slack, bodies, timeout=60)
        recovery = time.monotonic() - restored
        bot.drain()
        assert bot.runtime.health() is None

    voices = []
    for body in bodies:
        text = assert_one_final_answer(slack, body)["text"]
        assert re.fullmatch(r"Voice cloned: memo\d_[0-9a-f]{8}", text), text
        voices.append(text.split(": ", 1)[1])
    ok = [r for r in trtc.requests if r.outcome == "ok"]
    assert len(ok) == len(bodies) == len(set(voices))  # every share cloned once, after the outage
    assert trtc.refusals == 0
    assert trtc.max_requests_per_second() <= cap
    print(
        f"TRTC outage {outage:.1f} s, {len(trtc.requests) - len(ok)} calls turned away, busiest second "
        f"{trtc.max_requests_per_second()}/{cap}; all answered {recovery:.1f} s after"
    )


# -- 3. one channel, many shares --------------------------------------------------------------------------

ONE_CHANNEL_SHARES = 40
# Slack allows about 1 post a second in a channel; here the stand-in allows 2 and the bot paces to 1.9, so the
# scenario takes 20 s instead of minutes while the property stays the same (scripts/bench runs it at 1/s). Alone
# on the machine cloning ran at 17/s; under the whole suite on 2 cores it has dipped to 6/s.
POSTS_PER_SECOND = 2.0


def test_one_channel_clones_at_the_api_pace_while_answers_go_at_slacks(tmp_path: Path, small_wav: bytes):
    # The bundled static ffmpeg (nothing else on PATH) converts fast enough on 2 cores to keep up with the API.
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    pace = str(POSTS_PER_SECOND * 0.95)
    with (
        standins(max_rps=20) as (slack, trtc),
        BotProcess(slack, trtc, tmp_path, PATH=str(empty_bin), TRTC_MAX_RPS="20", SLACK_POSTS_PER_SECOND=pace) as bot,
    ):
        # Slack's own limit on posts in one channel, which the bot's pacing (burst 3) matches.
        slack.limit_posts(POSTS_PER_SECOND, burst=3)
        bot.start()
        with ThreadPoolExecutor(8) as pool:
            results = list(
                pool.map(
                    lambda i: bot.share(small_wav, f"v{i}.wav", "audio/wav", "wav", channel="C0ONE"),
                    range(ONE_CHANNEL_SHARES),
                )
            )
        assert all(response.status_code == 200 for response, _ in results)
        bodies = [body for _, body in results]
        assert trtc.wait_for_requests(ONE_CHANNEL_SHARES, 60)
        answers_started = time.monotonic()
        wait_finals(slack, bodies, timeout=ONE_CHANNEL_SHARES * 2 / POSTS_PER_SECOND + 30)
        answering = time.monotonic() - answers_started
        assert bot.terminate() == 0

    ok = sorted(r.time for r in trtc.requests if r.outcome == "ok")
    assert len(ok) == len(trtc.requests) == ONE_CHANNEL_SHARES  # each cloned once, none refused or retried
    assert trtc.refusals == 0
    rate = (len(ok) - 1) / (ok[-1] - ok[0])
    # Gated on the channel's post pace, the shares would clone at about POSTS_PER_SECOND. The speed target
    # (>= 19/s at the 20/s cap) is measured by scripts/bench on a quiet machine; here, with the rest of the suite
    # sharing 2 cores, the test asserts the property: cloning runs well ahead of what the channel lets out.
    assert rate >= 2 * POSTS_PER_SECOND, f"{rate:.1f} clones/s"
    threads = set()
    for body in bodies:
        message = assert_one_final_answer(slack, body)
        assert message["text"].startswith("Voice cloned") and message["thread_ts"] == body["event"]["ts"]
        threads.add(message["thread_ts"])
    assert len(threads) == ONE_CHANNEL_SHARES
    # The bot kept to the channel's pace: hardly ever refused, and a refusal's Retry-After was waited out, not lost.
    assert slack.post_refusals <= 3, slack.post_refusals
    print(
        f"{ONE_CHANNEL_SHARES} shares in one channel: {rate:.1f} clones/s over {ok[-1] - ok[0]:.2f} s, "
        f"refusals {trtc.refusals}; answers done {answering:.0f} s after the last clone, "
        f"{slack.post_refusals} posts refused by Slack"
    )


# -- 4. permanent Slack errors ----------------------------------------------------------------------------


# The module's bot (tests/conftest.py), for these tests: retries at most 1 s apart.
BOT_OPTIONS = {"max_backoff": 1.0}


# The module's bot (tests/conftest.py) for the tests below that take `bot`.


def _status_message(bot: BotHarness, body: dict[str, Any], starts: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def posted() -> bool:
        found[:] = [m for m in bot.replies(*where(body)) if m.get("text", "").startswith(starts)]
        return bool(found)

    assert bot.wait(posted, 20), bot.replies(*where(body))
    return found[0]


def test_a_deleted_status_message_is_posted_again_with_the_answer(bot: BotHarness, small_wav: bytes):
    bot.trtc.delay_next(2.0)  # holds the clone while the status message is deleted
    body = _share(bot, small_wav, 0, "C0DELETED")
    assert bot.trtc.wait_for_requests(1, 20)
    status = _status_message(bot, body, "Cloning")
    bot.slack.delete_message(*where(body)[:1], status["ts"])
    assert bot.wait_final(*where(body)) == "white_check_mark"
    bot.drain()
    message = assert_one_final_answer(bot.slack, body)
    assert message["text"].startswith("Voice cloned") and message["ts"] != status["ts"]
    # The edit of the deleted message was refused, then the answer went out as a new post in the thread.
    assert [c["ts"] for c in bot.slack.calls_to("chat.update")][-1] == status["ts"]
    assert len(bot.slack.calls_to("chat.postMessage")) == 2
    assert len(bot.trtc.requests) == 1


def test_a_channel_the_bot_left_gets_the_answer_in_the_users_dm(bot: BotHarness, small_wav: bytes):
    bot.slack.remove_bot_from("C0LEFT")
    body = _share(bot, small_wav, 0, "C0LEFT")
    dm = bot.slack.dm_channel("U0USER")
    answered = lambda: [m for m in bot.slack.messages(dm) if "Voice cloned" in m.get("text", "")]  # noqa: E731
    assert bot.wait(answered, 30), bot.slack.messages(dm)
    bot.drain()
    [message] = bot.slack.messages(dm)  # one message in the DM: the answer, with why it is there
    assert "Voice cloned" in message["text"] and "/invite" in message["text"]
    assert bot.slack.messages("C0LEFT") == [m for m in bot.slack.messages("C0LEFT") if m["ts"] == body["event"]["ts"]]
    assert len(bot.trtc.requests) == 1


def test_a_revoked_token_stops_sending_and_logs_once(tmp_path: Path, small_wav: bytes, caplog):
    # A short grace: at shutdown the sender would otherwise wait out the whole grace on answers it may not send.
    with BotHarness(tmp_path, extra_env={"SHUTDOWN_GRACE_SECONDS": "2"}, max_backoff=1.0) as bot:
        slack = bot.slack
        first = _share(bot, small_wav, 0, "C0TOKEN")
        assert bot.wait_final(*where(first)) == "white_check_mark"
        bot.drain()
        slack.revoke_token()
        before = len(slack.calls)
        sent = lambda: [c.method for c in slack.calls[before:] if c.method.startswith(("chat.", "reactions."))]  # noqa: E731
        with caplog.at_level("ERROR"):
            bodies = [_share(bot, small_wav, i, "C0TOKEN") for i in (1, 2)]
            assert slack.wait_for(sent, 20)
            # The sender learns of the refusal from the answer: polled, as nothing signals it to the test.
            assert _until(lambda: slack.team_id in bot.runtime.sender.stopped_teams, 10)
            refused = sent()
            # Both jobs run to their end (the file host refuses the dead token too); their answers stay stored.
            asyncio.run_coroutine_threadsafe(bot.runtime.runner.drain(), bot._loop).result(30)
            # Proving an absence at the moment it would show: every stored answer has fallen due again, and the
            # sender has gone over them since and finished whatever it started. Nothing more went to Slack.
            assert _sender_went_round(bot), "the outbox sender did not go round its due records"
            assert sent() == refused, sent()
        # The first refusal and whatever was already in flight with it (the hourglass and the status post are
        # sent concurrently), and nothing after it.
        assert 1 <= len(refused) <= 2, refused
        errors = [r for r in caplog.records if r.levelname == "ERROR" and "TOKEN REFUSED" in r.getMessage()]
        assert len(errors) == 1, [r.getMessage() for r in caplog.records]
        assert bot.runtime.sender.stopped_teams == {slack.team_id}
        # Otherwise healthy: serving, and still taking shares.
        assert bot.http.get(f"http://127.0.0.1:{bot.port}/healthz").status_code == 200
        assert _share(bot, small_wav, 3, "C0TOKEN")
        assert not any(slack.reactions(*where(b)) for b in bodies)


# -- 5. a poison job ----------------------------------------------------------------------------------------


def test_a_job_that_kills_the_bot_three_times_is_answered_could_not_process(tmp_path: Path, small_wav: bytes):
    # On PostgreSQL a killed worker's lease is taken over only once it runs out (SQLite, one process per file,
    # releases every lease at start-up): a short lease keeps the three restarts quick on both.
    with standins() as (slack, trtc), BotProcess(slack, trtc, tmp_path, LEASE_SECONDS="2") as bot:
        file = slack.add_file(small_wav, "poison.wav", "audio/wav", "wav")
        slack.stall_file(file["id"], after_bytes=64 * 1024)  # every download of it hangs part-way
        body = slack.user_message("C0POISON", "U0USER", [file])
        for run in range(1, 4):
            bot.start()
            if run == 1:
                assert bot.deliver(body).status_code == 200
            # The job is running (its download hangs) when the process is killed, and its status message is
            # posted and stored. (A kill between Slack accepting a post and the bot storing the post's ts would
            # post that message again at the next start: closing that gap needs a lookup such as
            # conversations.replies with message metadata, which the Slack stand-in does not serve.)
            assert slack.wait_for(lambda: len(slack.stalled) >= run, 20), slack.stalled  # noqa: B023
            assert _until(lambda: _outbox_ts(bot.database, "job:1:status"), 10)
            bot.kill()
        assert [j["attempts"] for j in read_jobs(bot.database)] == [3]
        bot.start()
        wait_finals(slack, [body], timeout=30)
        message = assert_one_final_answer(slack, body)
        assert "I could not process this file: three attempts at it failed" in message["text"]
        assert slack.reactions(*where(body)) == ["x"]
        assert len(slack.stalled) == 3  # not downloaded a fourth time
        assert bot.proc is not None and bot.proc.poll() is None  # the bot stays up
        assert httpx.get(f"http://127.0.0.1:{bot.port}/healthz", timeout=5).status_code == 200
        assert bot.terminate() == 0
        assert [j["status"] for j in read_jobs(bot.database)] == ["failed"]
    assert trtc.requests == []


def test_a_job_that_times_out_three_times_is_answered_without_a_restart(tmp_path: Path, small_wav: bytes):
    with BotHarness(tmp_path, extra_env={"JOB_TIMEOUT_SECONDS": "2"}, max_backoff=0.5) as bot:
        slack = bot.slack
        file = slack.add_file(small_wav, "hangs.wav", "audio/wav", "wav")
        slack.stall_file(file["id"], after_bytes=64 * 1024)
        body = slack.user_message("C0HANG", "U0USER", [file])
        started = time.monotonic()
        assert bot.deliver(body).status_code == 200
        wait_finals(slack, [body], timeout=40)
        took = time.monotonic() - started
        message = assert_one_final_answer(slack, body)
        assert "could not process this file" in message["text"]
        assert len(slack.stalled) == 3  # three attempts, each cut off at the time limit
        assert took >= 3 * 2
        assert len(bot.runtime.runner._tasks) == bot.runtime.runner.workers and bot.runtime.health() is None
        slack.release_stalls()
    print(f"timed out 3 times, answered after {took:.1f} s")


# -- 6. the acknowledgement path ----------------------------------------------------------------------------


def test_clone_command_is_acked_in_time_when_views_open_is_slow(bot: BotHarness):
    slack = bot.slack
    slack.delay_next("views.open", 5)
    command = slack.slash_command(text="", channel_id="C0SLOWFORM")
    started = time.monotonic()
    response = bot.deliver(command, kind="form")
    acked = time.monotonic() - started
    assert response.status_code == 200
    assert acked < 3.0, f"acked after {acked:.2f} s"
    assert slack.delayed_calls and slack.delayed_calls[0].method == "views.open"
    # The user hears that the form could not be opened (an ephemeral message, through the outbox).
    assert slack.wait_for(lambda: slack.ephemerals("C0SLOWFORM"), 10)
    [told] = slack.ephemerals("C0SLOWFORM")
    assert "couldn't open the form" in told["text"] and told["user"] == command["user_id"]
    assert slack.views == {}
    print(f"/clone acked in {acked:.2f} s with views.open held 5 s")


def test_clone_command_opens_the_form(bot: BotHarness):
    command = bot.slack.slash_command(text="", channel_id="C0FORM")
    assert bot.deliver(command, kind="form").status_code == 200
    assert bot.slack.wait_for(lambda: bot.slack.views, 10)
    assert len(bot.slack.calls_to("views.open")) == 1 and bot.slack.responses == []


# -- 7. health and metrics ----------------------------------------------------------------------------------


def _on_loop(bot: BotHarness, fn: Callable[[], Any]) -> Any:
    """Run `fn` on the bot's event loop (its tasks belong there) and return its result."""

    async def call() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), bot._loop).result(10)


def _health(bot: BotHarness) -> tuple[int, dict[str, Any]]:
    response = bot.http.get(f"http://127.0.0.1:{bot.port}/healthz")
    return response.status_code, response.json()


def _jobs_done(bot: BotHarness) -> float:
    text = bot.http.get(bot.metrics_url).text
    [line] = [x for x in text.splitlines() if x.startswith('voiceclone_jobs_total{outcome="done"}')]
    return float(line.split()[-1])


def test_healthz_tells_the_truth_and_metrics_count_jobs(bot: BotHarness, small_wav: bytes):
    runtime = bot.runtime
    assert _health(bot) == (200, {"ok": True})

    sender_task = runtime.sender._task
    _on_loop(bot, lambda: sender_task.cancel())
    assert _until(lambda: sender_task.done(), 5)
    assert _health(bot) == (503, {"ok": False, "status": "the Slack outbox sender is not running"})
    _on_loop(bot, runtime.sender.start)
    assert _health(bot)[0] == 200

    worker = next(iter(runtime.runner._tasks))
    _on_loop(bot, lambda: worker.cancel())
    assert _until(lambda: worker.done(), 5)
    assert _health(bot) == (503, {"ok": False, "status": "workers are not running"})
    _on_loop(bot, runtime.runner._spawn)
    assert _health(bot)[0] == 200

    before = _jobs_done(bot)
    body = _share(bot, small_wav, 0, "C0METRICS")
    assert bot.wait_final(*where(body)) == "white_check_mark"
    bot.drain()
    assert _jobs_done(bot) == before + 1
    metrics_page = bot.http.get(bot.metrics_url)
    assert metrics_page.headers["content-type"].startswith("text/plain")


def test_healthz_in_socket_mode_answers_on_port(tmp_path: Path):
    with standins() as (slack, trtc), BotProcess(slack, trtc, tmp_path, socket_mode=True) as bot:
        bot.start()
        assert _until(lambda: _get_status(f"http://127.0.0.1:{bot.port}/healthz") == 200, 10)
        # /metrics on its own port (METRICS_PORT) in Socket Mode too, not on PORT.
        assert "voiceclone_jobs_total" in httpx.get(bot.metrics_url, timeout=5).text
        assert _get_status(f"http://127.0.0.1:{bot.port}/metrics") == 404
        assert bot.terminate() == 0


def _get_status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


# -- 8. no worker ever dies ---------------------------------------------------------------------------------


def test_failing_progress_writes_never_stop_a_clone_or_a_worker(bot: BotHarness, small_wav: bytes):
    runner = bot.runtime.runner
    workers = _on_loop(bot, lambda: set(runner._tasks))
    assert len(workers) == runner.workers
    original = runner.replies.stage
    broken: list[str] = []

    async def stage(job: Any, name: str) -> None:
        if job.channel == "C0BROKEN":
            broken.append(name)
            raise OSError("disk I/O error (injected)")
        await original(job, name)

    runner.replies.stage = stage  # type: ignore[method-assign]
    try:
        body = _share(bot, small_wav, 0, "C0BROKEN")
        other = _share(bot, small_wav, 1, "C0FINE")
        assert bot.wait_final(*where(body)) == "white_check_mark"
        assert bot.wait_final(*where(other)) == "white_check_mark"
        bot.drain()
    finally:
        runner.replies.stage = original  # type: ignore[method-assign]
    assert broken  # every progress write of that job failed...
    assert assert_one_final_answer(bot.slack, body)["text"].startswith("Voice cloned")  # ...and it still cloned
    assert len(bot.trtc.requests) == 2
    assert _on_loop(bot, lambda: set(runner._tasks)) == workers  # the very same worker tasks, none replaced
