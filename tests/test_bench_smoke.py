"""The benchmark still runs: its smallest piece (5 shares at once, real bot process) and the report."""

from __future__ import annotations

from datetime import UTC, datetime

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

    results = Results(
        command="test", started=datetime.now(UTC), seconds=1.0, web_bursts=[burst], worker_bursts=[burst]
    )
    measures = {check.measure for check in checks(results)}
    assert {"Web role: ack latency p99", "1 worker process: clones per second (first to last accepted)"} <= measures
    report = tmp_path / "benchmarks.md"
    write_markdown(results, report, {})
    text = report.read_text()
    assert "| 9 | Web role: ack latency p99 |" in text and "--role web" in text
