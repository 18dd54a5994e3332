"""Metrics: the exact names, types and labels the dashboards and alerts use, read back from render() with
prometheus_client's own parser, so a renamed metric or label fails here before it silently breaks a panel."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics

# name -> (type, label names); histograms' buckets add "le" on their _bucket samples.
EXPECTED = {
    "voiceclone_jobs": ("counter", {"outcome"}),
    "voiceclone_queue_depth": ("gauge", set()),
    "voiceclone_outbox_depth": ("gauge", set()),
    "voiceclone_trtc_seconds": ("histogram", {"action"}),
    "voiceclone_trtc_errors": ("counter", {"code"}),
    "voiceclone_slack_retries": ("counter", {"method", "reason"}),
    "voiceclone_job_stage_seconds": ("histogram", {"stage"}),
}


def _scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample render() exposes, keyed by sample name and labels."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_every_metric_is_exposed_with_its_name_type_and_labels():
    # Touch each labelled metric once so that it has a sample to show.
    metrics.TRTC_SECONDS.labels(action="VoiceClone").observe(0.01)
    metrics.TRTC_ERRORS.labels(code="InternalError").inc(0)
    metrics.SLACK_RETRIES.labels(method="chat.postMessage", reason="ratelimited").inc(0)
    metrics.JOB_STAGE_SECONDS.labels(stage="download").observe(0.01)
    body, _ = metrics.render()
    families = {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}
    assert set(families) >= set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        family = families[name]
        assert family.type == kind, name
        main = [s for s in family.samples if not s.name.endswith("_created")]
        assert main, name
        for sample in main:
            assert set(sample.labels) - {"le"} == labels, sample
    samples = {s.name for f in families.values() for s in f.samples}
    assert {"voiceclone_jobs_total", "voiceclone_trtc_errors_total", "voiceclone_slack_retries_total"} <= samples
    assert {"voiceclone_trtc_seconds_bucket", "voiceclone_job_stage_seconds_count"} <= samples


def test_every_job_outcome_is_exposed_before_any_job_ends():
    families = {f.name: f for f in text_string_to_metric_families(metrics.render()[0].decode("utf-8"))}
    outcomes = {s.labels["outcome"] for s in families["voiceclone_jobs"].samples if s.name == "voiceclone_jobs_total"}
    assert outcomes >= {"done", "failed", "given_up"}


def test_counters_count():
    before = _scrape()
    metrics.JOBS.labels(outcome="done").inc()
    metrics.JOBS.labels(outcome="done").inc()
    metrics.JOBS.labels(outcome="given_up").inc()
    metrics.TRTC_ERRORS.labels(code="LimitExceeded").inc()
    metrics.SLACK_RETRIES.labels(method="reactions.add", reason="server_error").inc(3)
    after = _scrape()

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("voiceclone_jobs_total", outcome="done") == 2
    assert delta("voiceclone_jobs_total", outcome="given_up") == 1
    assert delta("voiceclone_jobs_total", outcome="failed") == 0
    assert delta("voiceclone_trtc_errors_total", code="LimitExceeded") == 1
    assert delta("voiceclone_slack_retries_total", method="reactions.add", reason="server_error") == 3


def test_gauges_show_the_last_value_set():
    metrics.QUEUE_DEPTH.set(7)
    metrics.OUTBOX_DEPTH.set(2)
    metrics.OUTBOX_DEPTH.dec()
    samples = _scrape()
    assert _value(samples, "voiceclone_queue_depth") == 7
    assert _value(samples, "voiceclone_outbox_depth") == 1
    metrics.QUEUE_DEPTH.set(0)
    metrics.OUTBOX_DEPTH.set(0)


@pytest.mark.parametrize(
    ("histogram", "name", "labels"),
    [
        (metrics.TRTC_SECONDS, "voiceclone_trtc_seconds", {"action": "TextToSpeech"}),
        (metrics.JOB_STAGE_SECONDS, "voiceclone_job_stage_seconds", {"stage": "clone"}),
    ],
)
def test_histograms_bucket_seconds(histogram: prometheus_client.Histogram, name: str, labels: dict[str, str]):
    before = _scrape()
    histogram.labels(**labels).observe(3.0)  # a slow-ish TRTC call: between the 2.5 s and 5 s bounds
    histogram.labels(**labels).observe(45.0)  # a clone that took most of a minute
    after = _scrape()

    def delta(suffix: str, **extra: str) -> float:
        return _value(after, name + suffix, **labels, **extra) - _value(before, name + suffix, **labels, **extra)

    assert delta("_count") == 2
    assert delta("_sum") == pytest.approx(48.0)
    assert delta("_bucket", le="2.5") == 0
    assert delta("_bucket", le="5.0") == 1
    assert delta("_bucket", le="60.0") == 2  # seconds-scale buckets: the default ones stop at 10 s
    assert delta("_bucket", le="+Inf") == 2


def test_metrics_live_in_their_own_registry_not_the_global_default():
    assert metrics.REGISTRY is not prometheus_client.REGISTRY
    assert b"voiceclone_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


def test_render_returns_the_exposition_format_and_its_content_type():
    body, content_type = metrics.render()
    assert isinstance(body, bytes) and content_type == prometheus_client.CONTENT_TYPE_LATEST
    assert b"# TYPE voiceclone_queue_depth gauge\n" in body
