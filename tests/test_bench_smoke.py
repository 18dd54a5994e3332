"""The benchmark still runs: its smallest piece (5 shares at once, real bot process) and the report."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.burst import ack_floor
from bench.cost import run_mixed_burst, run_share_cpu
from bench.recordings import MediaCache
from bench.report import Results, checks, plot_ack, write_markdown
from bench.scenarios import run_burst


def test_a_small_burst_is_measured_and_reported(tmp_path):
    clip = MediaCache(tmp_path / "media").m4a(15)
    burst = run_burst(tmp_path / "burst", clip, shares=5, max_rps=20)

    assert burst.statuses == {200: 5}
    assert len(burst.ack_seconds) == 5 and all(0 < s < 3 for s in burst.ack_seconds)
    assert burst.feedback_missing == 0 and all(s > 0 for s in burst.feedback_seconds)
    assert burst.accepted == 5 and burst.refusals == 0 and burst.outcomes == {"white_check_mark": 5}
    assert burst.clone_rate > 0
    # The defaults users get: each clone previewed in its thread, and the preview never taken for a second answer.
    assert burst.previews and burst.preview_files == 5 and burst.preview_failed == 0 and burst.tts_accepted == 5
    assert burst.answered_once == 5 and burst.odd_threads == {} and burst.stray_messages == 0

    results = Results(command="test", started=datetime.now(UTC), seconds=1.0, bursts=[burst])
    measures = {check.measure for check in checks(results)}
    assert {
        "Ack latency p99",
        "Feedback latency p99",
        "Clones per second (first to last accepted)",
    } <= measures
    report = tmp_path / "benchmarks.md"
    plot_ack([burst], tmp_path / "ack-latency.png")
    write_markdown(results, report, {"Ack latency": "ack-latency.png"})
    assert "| 1 | Ack latency p99 |" in report.read_text()
    assert (tmp_path / "ack-latency.png").read_bytes().startswith(b"\x89PNG")


def test_a_small_burst_through_the_web_role_and_a_worker_is_measured_and_reported(tmp_path):
    """Items 9 and 10 (issue 13): a --role web process and a --role worker on PostgreSQL, one TRTC limit in Redis."""
    clip = MediaCache(tmp_path / "media").m4a(15)
    burst = run_burst(tmp_path / "web", clip, shares=5, max_rps=20, workers=1, redis=True)

    assert burst.statuses == {200: 5} and burst.workers == 1 and burst.redis
    assert burst.accepted == 5 and burst.refusals == 0 and burst.outcomes == {"white_check_mark": 5}
    assert burst.jobs_per_worker == [5.0] and burst.feedback_missing == 0
    assert burst.preview_files == 5 and burst.tts_accepted == 5 and burst.answered_once == 5

    # The floor: the same load generator against uvicorn answering an empty 200, one run after a warm-up.
    floor = ack_floor(5, burst.body_bytes, runs=1)
    assert burst.body_bytes > 1000 and len(floor) == 1 and len(floor[0]) == 5 and all(0 < s < 5 for s in floor[0])

    results = Results(
        command="test", started=datetime.now(UTC), seconds=1.0, web_bursts=[burst], worker_bursts=[burst],
        web_floor=floor,
    )
    measures = {check.measure for check in checks(results)}
    assert {"Web role: ack latency p99", "1 worker process: clones per second (first to last accepted)"} <= measures
    report = tmp_path / "benchmarks.md"
    write_markdown(results, report, {})
    text = report.read_text()
    assert "| 9 | Web role: ack latency p99 |" in text and "--role web" in text
    assert "| 9 | Floor: the same burst to uvicorn answering an empty 200 (no Bolt, no database), ack p99 |" in text


def test_a_preview_is_never_taken_for_the_answer_nor_for_a_second_one():
    from bench.scenarios import _answered_once

    answer = {"ts": "1.000100", "text": "Voice cloned: *memo* (VoiceId memo_1a2b)"}
    preview = {"ts": "1.000200", "subtype": "file_share", "text": ":loud_sound: Preview of *memo*: “Hello”",
               "files": [{"name": "memo-preview.mp3"}]}
    no_preview = {"ts": "1.000300", "text": "I couldn't make a preview: InternalError"}
    failed = {"ts": "1.000100", "text": "Could not clone this recording"}
    assert _answered_once([answer, preview]) is True
    assert _answered_once([answer, no_preview]) is True
    assert _answered_once([failed]) is True
    assert _answered_once([answer]) is False  # the preview missing
    assert _answered_once([preview]) is False  # a preview alone is no answer
    assert _answered_once([answer, preview, preview]) is False
    assert _answered_once([answer, answer, preview]) is False
    assert _answered_once([{**preview, "ts": "1.000000"}, answer]) is False  # a preview before its answer
    assert _answered_once([answer], previews=False) is True
    assert _answered_once([answer, preview], previews=False) is False


def test_cpu_per_share_and_memory_under_a_mixed_burst_are_measured_and_reported(tmp_path):
    """Items 11 and 12 (issue 21), small: two shares of a memo against the command line, then a mixed burst."""
    media = MediaCache(tmp_path / "media")
    memo = media.m4a(15)
    cpu = run_share_cpu(tmp_path / "cpu", [memo], reps=2)
    [item] = cpu.items
    assert len(item.per_share) == 2 and len(item.cli) == 2
    assert item.bot_mean > 0 and all(0 < seconds < 5 for seconds in item.cli) and item.ratio > 0
    # The bot's decoder processes are alive between shares: their CPU is counted all the same.
    assert all(below > 0 for below in item.bot_children)

    mixed = run_mixed_burst(tmp_path / "mixed", memo, media.m4a(20), media.mp3(60), memos=3, longs=1)
    assert mixed.outcomes == {"white_check_mark": 5} and mixed.previews == 5
    assert mixed.bot_peak >= mixed.baseline > 0 and mixed.tree_sampled > mixed.bot_sampled > 0
    assert mixed.children_seen >= 1

    results = Results(command="test", started=datetime.now(UTC), seconds=1.0, cpu=cpu, mixed=mixed)
    measures = {check.measure for check in checks(results)}
    assert {"CPU per share over the command line's, 15 s m4a", "Mixed burst: bot peak RSS"} <= measures
    report = tmp_path / "benchmarks.md"
    write_markdown(results, report, {})
    text = report.read_text()
    assert "| 11 | CPU per share over the command line's, 15 s m4a |" in text and "| 12 | Mixed burst" in text
    assert "**11: CPU per share" in text and "- Mixed burst: bot RSS at rest" in text
