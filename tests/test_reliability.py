"""Nothing lost, nothing duplicated: durable jobs across kill -9 and SIGTERM, deduplicated Slack retries,
bounded work off the acknowledgement path, the TRTC request cap, and Slack's own rate limits.

The bot runs either as a real subprocess (`python -m bot run`, for kills, signals and timing) or in-process
through tests/support/harness.py, always against the loopback Slack and TRTC stand-ins.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.driving import (
    WORKING,
    BotProcess,
    assert_one_final_answer,
    jobs_by_key,
    max_in_window,
    modal_values,
    read_jobs,
    replies,
    share_key,
    standins,
    wait_finals,
    wait_jobs,
    where,
)
from support.harness import BotHarness

from bot.ui.texts import API_MESSAGES


@pytest.fixture(scope="module")
def speech_wav(media) -> bytes:
    return media.speech(15, ".wav").read_bytes()


@pytest.fixture(scope="module")
def small_wav(media) -> bytes:
    """A cheap valid prompt to convert: 14 s (over 10 s of it speech once silence is cut), 16 kHz mono."""
    return media.speech(14, ".wav", "-ar", "16000", "-ac", "1").read_bytes()


# The tests below that take `bot` share the module's bot (tests/conftest.py).


def _open_modal(slack, deliver, channel: str) -> str:
    """Run `/clone` with no text in `channel`; return the id of the form the bot opened."""
    before = set(slack.views)
    assert deliver(slack.slash_command(text="", channel_id=channel), kind="form").status_code == 200
    assert slack.wait_for(lambda: set(slack.views) - before, 10)
    return next(iter(set(slack.views) - before))


# -- 1. durable jobs ----------------------------------------------------------------------------------


def test_kill_9_mid_job_then_restart_answers_every_job_exactly_once(tmp_path: Path, speech_wav: bytes):
    with standins() as (slack, trtc), BotProcess(slack, trtc, tmp_path, WORKERS="2") as bot:
        bot.start()
        # Both workers' clone calls hang at TRTC; everything shared after them waits in the queue.
        trtc.delay_next(60, times=2)
        shares = []
        for i in range(3):
            response, body = bot.share(speech_wav, f"memo{i}.wav", "audio/wav", "wav", channel=f"C0KILL{i}")
            assert response.status_code == 200
            # Stored before the acknowledgement returned.
            assert share_key(body) in jobs_by_key(bot.db_path)
            shares.append(body)
        view_id = _open_modal(slack, bot.deliver, "C0MODAL")
        form = slack.add_file(speech_wav, "form.wav", "audio/wav", "wav")
        submission = slack.view_submission(view_id, values=modal_values(form, name="Form_Voice"))
        assert bot.deliver(submission, kind="interactive").status_code == 200
        assert f"modal:{view_id}:{form['id']}" in jobs_by_key(bot.db_path)
        assert trtc.wait_for_requests(2, 20)
        # One more share, killed the moment its acknowledgement arrives.
        response, last = bot.share(speech_wav, "memo3.wav", "audio/wav", "wav", channel="C0KILL3")
        assert response.status_code == 200
        bot.kill()
        shares.append(last)

        before = read_jobs(bot.db_path)
        assert len(before) == 5
        assert sorted(j["status"] for j in before) == ["queued"] * 3 + ["running"] * 2

        bot.start()
        wait_finals(slack, shares, timeout=60)
        assert wait_jobs(bot.db_path, {"done"}, count=5)
        assert bot.terminate() == 0

    for body in shares:
        message = assert_one_final_answer(slack, body)
        assert message["text"].startswith("Voice cloned: ")
        assert "edited" in message  # the status message itself became the answer
        assert slack.reactions(*where(body)) == ["white_check_mark"]
    parents = [m for m in slack.messages("C0MODAL") if "thread_ts" not in m or m["thread_ts"] == m["ts"]]
    assert len(parents) == 1
    [answer] = replies(slack, "C0MODAL", parents[0]["ts"])
    assert answer["text"].startswith("Voice cloned: Form_Voice_")
    jobs = read_jobs(bot.db_path)
    assert len(jobs) == 5 and {j["status"] for j in jobs} == {"done"}
    # Two clones were cut off by the kill; each job then cloned once more.
    assert sum(r.outcome == "ok" for r in trtc.requests) == 7


# -- 2. no duplicates ---------------------------------------------------------------------------------


def test_slack_http_retries_never_clone_or_answer_twice(bot: BotHarness, speech_wav: bytes):
    bot.trtc.delay_next(1.0)
    # The first delivery and a retry racing it, then a retry while the job runs, then one after the answer.
    file = bot.slack.add_file(speech_wav, "memo.wav", "audio/wav", "wav")
    body = bot.slack.user_message("C0RETRY", "U0USER", [file])
    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(lambda n: bot.deliver(body, retry_num=n).status_code, [None, 1]))
    assert statuses == [200, 200]
    assert bot.trtc.wait_for_requests(1, 10)
    assert bot.deliver(body, retry_num=2).status_code == 200
    bot.wait_final(*where(body))
    assert bot.deliver(body, retry_num=3).status_code == 200
    bot.drain()

    assert len(bot.trtc.requests) == 1
    assert len(bot.slack.calls_to("chat.postMessage")) == 1
    assert assert_one_final_answer(bot.slack, body)["text"].startswith("Voice cloned")
    hourglasses = [c for c in bot.slack.calls_to("reactions.add") if c["name"] == WORKING]
    assert len(hourglasses) == 1


def test_socket_mode_redelivery_never_clones_or_answers_twice(tmp_path: Path, speech_wav: bytes):
    with standins() as (slack, trtc), BotProcess(slack, trtc, tmp_path, socket_mode=True) as bot:
        bot.start()
        trtc.delay_next(1.0)
        file = slack.add_file(speech_wav, "memo.wav", "audio/wav", "wav")
        body = slack.user_message("C0SOCKET", "U0USER", [file])
        first = slack.send_envelope("events_api", body)
        assert slack.wait_for_ack(first, 10)
        assert trtc.wait_for_requests(1, 10)
        assert slack.wait_for_ack(slack.redeliver(first), 10)  # while the job runs

        command = slack.send_envelope("slash_commands", slack.slash_command(text="", channel_id="C0SOCKFORM"))
        assert slack.wait_for_ack(command, 10) and slack.wait_for(lambda: slack.views, 10)
        view_id = next(iter(slack.views))
        form = slack.add_file(speech_wav, "form.wav", "audio/wav", "wav")
        submitted = slack.send_envelope(
            "interactive", slack.view_submission(view_id, values=modal_values(form))
        )
        assert slack.wait_for_ack(submitted, 10)
        assert slack.wait_for_ack(slack.redeliver(submitted), 10)

        wait_finals(slack, [body])
        assert wait_jobs(bot.db_path, {"done"}, count=2)
        assert slack.wait_for_ack(slack.redeliver(first), 10)  # after the answer
        assert slack.wait_for_ack(slack.redeliver(submitted), 10)
        assert bot.terminate() == 0

    assert len(trtc.requests) == 2
    assert assert_one_final_answer(slack, body)["text"].startswith("Voice cloned")
    parent, answer = slack.messages("C0SOCKFORM")  # the form's parent message and its one answer
    assert answer["thread_ts"] == parent["ts"] and answer["text"].startswith("Voice cloned")
    assert len(read_jobs(bot.db_path)) == 2


# -- 3. bounded work off the acknowledgement path -----------------------------------------------------


def _decoders(pid: int) -> list[int]:
    """The bot's processes that decode: its decoder processes (bot.voice.preparers) and any ffmpeg below it."""
    import psutil

    found = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for child in children:
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "bot.voice.preparers" in command or child.name().startswith("ffmpeg"):
            found.append(child.pid)
    return found


def test_acks_stay_fast_while_slow_jobs_run_and_decoding_is_capped(tmp_path: Path, speech_wav: bytes):
    # Conversions run in the bot's decoder processes (bot.voice.preparers): at most one per core, whatever the
    # number of workers; they decode with FFmpeg's libraries, so a clean WAV starts no ffmpeg at all.
    acks: list[float] = []
    bodies = []
    seen: set[int] = set()
    most = 0
    stop = threading.Event()

    def timed_share(bot: BotProcess, i: int) -> None:
        started = time.monotonic()
        response, body = bot.share(speech_wav, f"m{i}.wav", "audio/wav", "wav", channel=f"C0ACK{i}")
        acks.append(time.monotonic() - started)
        assert response.status_code == 200
        bodies.append(body)

    def watch(pid: int) -> None:
        nonlocal most
        while not stop.wait(0.01):
            decoding = _decoders(pid)
            seen.update(decoding)
            most = max(most, len(decoding))

    with standins() as (slack, trtc), BotProcess(slack, trtc, tmp_path, WORKERS="8") as bot:
        bot.start()
        assert bot.proc is not None
        watcher = threading.Thread(target=watch, args=(bot.proc.pid,), daemon=True)
        watcher.start()
        trtc.delay_next(2.5, times=8)
        for i in range(8):
            timed_share(bot, i)
        assert trtc.wait_for_requests(8, 20)  # every worker is now waiting on a slow TRTC
        for i in range(8, 24):
            timed_share(bot, i)
        # The workers come free together and fetch and convert the queued jobs: share more while they convert. (Their
        # downloads, not their "Converting" edits: a progress edit waits for a newer state, and a quick conversion's
        # never goes out.)
        fetched = lambda: sum(r.status == 200 for r in slack.file_requests)  # noqa: E731
        assert slack.wait_for(lambda: fetched() > 9, 20)
        for i in range(24, 30):
            timed_share(bot, i)
        wait_finals(slack, bodies, timeout=60)
        stop.set()
        watcher.join()
        assert bot.terminate() == 0

    assert max(acks) < 1.0, sorted(acks)[-5:]
    assert all(slack.reactions(*where(b)) == ["white_check_mark"] for b in bodies)
    assert seen, "no decoder process seen"
    assert most <= (os.cpu_count() or 1), f"{most} decoding processes at once"


# -- 4. the TRTC request cap --------------------------------------------------------------------------


def test_sixty_shares_at_once_stay_under_the_trtc_cap(tmp_path: Path, small_wav: bytes):
    # The static ffmpeg bundled with imageio-ffmpeg (the documented fallback) starts in ~20 ms against the
    # system one's ~80 ms: fast enough on 2 cores to convert more than 20 files a second, so without the
    # limiter the stand-in would see more than 20 requests in a second.
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    with (
        standins(max_rps=20) as (slack, trtc),
        BotProcess(slack, trtc, tmp_path, PATH=str(empty_bin), TRTC_MAX_RPS="20") as bot,
    ):
        bot.start()
        with ThreadPoolExecutor(12) as pool:
            results = list(
                pool.map(
                    lambda i: bot.share(small_wav, f"v{i}.wav", "audio/wav", "wav", channel=f"C0CAP{i:02d}"),
                    range(60),
                )
            )
        assert all(response.status_code == 200 for response, _ in results)
        bodies = [body for _, body in results]
        wait_finals(slack, bodies, timeout=60)
        assert bot.terminate() == 0

    assert all(slack.reactions(*where(b)) == ["white_check_mark"] for b in bodies)
    assert trtc.refusals == 0
    assert len(trtc.requests) == 60 and {r.outcome for r in trtc.requests} == {"ok"}
    assert max_in_window([r.time for r in trtc.requests], 1.0) <= 20


def test_request_limit_exceeded_is_retried_quietly(bot: BotHarness, speech_wav: bytes):
    bot.trtc.fail_next("RequestLimitExceeded", times=2)
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav")
    assert bot.wait_final(*where(body)) == "white_check_mark"
    assert [r.outcome for r in bot.trtc.requests] == ["RequestLimitExceeded"] * 2 + ["ok"]
    message = assert_one_final_answer(bot.slack, body)
    assert message["text"].startswith("Voice cloned") and "too many requests" not in message["text"]


def test_request_limit_exceeded_after_every_retry_says_so(bot: BotHarness, speech_wav: bytes):
    bot.trtc.fail_next("RequestLimitExceeded", times=4)
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav")
    assert bot.wait_final(*where(body)) == "x"
    assert len(bot.trtc.requests) == 4
    text = assert_one_final_answer(bot.slack, body)["text"]
    assert API_MESSAGES["RequestLimitExceeded"] in text
    assert bot.trtc.requests[-1].request_id in text


# -- 5. Slack's rate limits ---------------------------------------------------------------------------


def test_slack_429_on_post_message_is_waited_out(bot: BotHarness, speech_wav: bytes):
    bot.slack.rate_limit_next("chat.postMessage", times=1, retry_after=1)
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav")
    assert bot.wait_final(*where(body)) == "white_check_mark"
    message = assert_one_final_answer(bot.slack, body)
    assert message["text"].startswith("Voice cloned")
    posts = [c.time for c in bot.slack.calls if c.method == "chat.postMessage"]
    assert len(posts) == 2 and posts[1] - posts[0] >= 1.0


def test_slack_429_on_the_hourglass_never_outlives_the_answer(bot: BotHarness, speech_wav: bytes):
    # The hourglass goes through the outbox; rate-limited, it waits, and by then the job is done: only the newest
    # state of the reactions is sent, so the hourglass is never added after the answer.
    bot.slack.rate_limit_next("reactions.add", times=1, retry_after=1)
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav")
    assert bot.wait_final(*where(body)) == "white_check_mark"
    bot.drain()
    assert bot.slack.reactions(*where(body)) == ["white_check_mark"]
    added = [c["name"] for c in bot.slack.calls_to("reactions.add")]
    assert added[0] == "hourglass_flowing_sand" and added[-1] == "white_check_mark"
    assert assert_one_final_answer(bot.slack, body)["text"].startswith("Voice cloned")


def test_a_quick_clone_replaces_its_progress_edits_before_they_go_out(bot: BotHarness, speech_wav: bytes):
    # A progress edit of the posted status message waits half a second for a newer state: a clone that Tencent
    # answers at once is in the thread before its "Cloning" edit would have gone out, so that edit never does.
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav")
    assert bot.wait_final(*where(body)) == "white_check_mark"
    bot.drain()
    message = assert_one_final_answer(bot.slack, body)
    edits = [c["text"] for c in bot.slack.calls_to("chat.update") if c["ts"] == message["ts"]]
    assert edits and edits[-1].startswith("Voice cloned")
    assert not [text for text in edits if text.startswith("Cloning")], edits


def test_slack_429_on_the_final_update_is_waited_out(bot: BotHarness, speech_wav: bytes):
    bot.trtc.delay_next(2.0)
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav")
    assert bot.trtc.wait_for_requests(1, 10)
    # The status message is up and says "cloning": the answer will be an edit of it.
    assert bot.slack.wait_for(lambda: any("Cloning" in m.get("text", "") for m in bot.replies(*where(body))), 10)
    bot.slack.rate_limit_next("chat.update", times=1, retry_after=1)
    assert bot.wait_final(*where(body)) == "white_check_mark"
    message = assert_one_final_answer(bot.slack, body)
    assert message["text"].startswith("Voice cloned")
    updates = [c.time for c in bot.slack.calls if c.method == "chat.update"]
    assert updates[-1] - updates[-2] >= 1.0


# -- 6. graceful shutdown -----------------------------------------------------------------------------


def test_sigterm_finishes_jobs_in_flight_and_keeps_the_queue_for_the_next_start(
    tmp_path: Path, speech_wav: bytes
):
    grace = 3.0
    env = {"WORKERS": "2", "SHUTDOWN_GRACE_SECONDS": str(grace)}
    with standins() as (slack, trtc), BotProcess(slack, trtc, tmp_path, **env) as bot:
        bot.start()
        trtc.delay_next(1.5)
        _, in_flight = bot.share(speech_wav, "a.wav", "audio/wav", "wav", channel="C0TERM0")
        assert trtc.wait_for_requests(1, 10)
        # The second worker is stuck in a download that never ends: the grace period runs out on it.
        stuck_file = slack.add_file(speech_wav, "b.wav", "audio/wav", "wav")
        slack.stall_file(stuck_file["id"], after_bytes=64 * 1024)
        stuck = slack.user_message("C0TERM1", "U0USER", [stuck_file])
        assert bot.deliver(stuck).status_code == 200
        assert slack.wait_for(lambda: slack.stalled, 10)
        queued = [
            bot.share(speech_wav, f"q{i}.wav", "audio/wav", "wav", channel=f"C0TERMQ{i}")[1] for i in range(2)
        ]

        started = time.monotonic()
        assert bot.terminate(timeout=grace + 10) == 0
        took = time.monotonic() - started
        # The job in flight answered before the process left; the stuck one was cut off at the grace period.
        assert assert_one_final_answer(slack, in_flight)["text"].startswith("Voice cloned")
        assert grace - 0.5 <= took <= grace + 3
        jobs = jobs_by_key(bot.db_path)
        assert jobs[share_key(in_flight)]["status"] == "done"
        assert jobs[share_key(stuck)]["status"] == "running"
        assert [jobs[share_key(b)]["status"] for b in queued] == ["queued", "queued"]
        assert list(bot.temp_dir.iterdir()) == []  # the cut-off download left no partial file

        slack.release_stalls()
        bot.start()
        wait_finals(slack, [stuck, *queued], timeout=30)
        assert wait_jobs(bot.db_path, {"done"}, count=4)
        assert bot.terminate() == 0

    for body in (in_flight, stuck, *queued):
        assert assert_one_final_answer(slack, body)["text"].startswith("Voice cloned")
    assert list(bot.temp_dir.iterdir()) == []
    assert "Traceback" not in bot.log_text()
