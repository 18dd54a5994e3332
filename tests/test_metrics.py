"""Metrics as an operator's Prometheus sees them: the bot is driven through the Slack and TRTC stand-ins (shares,
Tencent refusals, Slack throttling, stuck downloads) and every number is read back from its GET /metrics page,
parsed with prometheus_client's own parser. The exact names, types, labels and buckets are what the dashboards and
alerts use, so a renamed metric or label, or a count that stops moving, fails here before it silently breaks a panel.

The registry lives for the whole test process, so each test compares the page before and after what it drives.
"""

from __future__ import annotations

import threading
import time

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.harness import BotHarness

from bot import metrics

CHANNEL = "C0METRICS"

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
# Seconds-scale bucket bounds, as the page prints them: the default ones stop at 10 s, a clone can take minutes.
TRTC_BUCKETS = ["0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "20.0", "30.0", "60.0", "120.0", "+Inf"]
STAGE_BUCKETS = [
    "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "20.0", "30.0", "60.0", "120.0", "300.0", "+Inf"
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# The module's bot (tests/conftest.py): one worker, so that a stuck job makes the others queue; a preview after
# each clone, so that TextToSpeech is called too; short Slack backoffs, so that a retried call goes out again at once.
BOT_ENV = {"WORKERS": "1", "PREVIEW": "on"}
BOT_OPTIONS = {"max_backoff": 0.2}





@pytest.fixture(scope="module")
def speech_wav(media) -> bytes:
    return media.speech(15, ".wav").read_bytes()


def _page(bot: BotHarness) -> str:
    response = bot.http.get(bot.metrics_url)
    assert response.status_code == 200
    return response.text


def _scrape(bot: BotHarness) -> Samples:
    """Every sample the bot's /metrics page shows, keyed by sample name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(_page(bot))
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _gauge_shows(bot: BotHarness, name: str, wanted: float, timeout: float = 10) -> bool:
    """Scrape until gauge `name` shows `wanted`: the depths are read on a timer (the harness's: every 0.2 s), never
    by the scrape itself. Polled: the page is the only way to see them."""
    deadline = time.monotonic() + timeout
    while _value(_scrape(bot), name) != wanted:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _total(samples: Samples, name: str) -> float:
    """The sum of a counter over all its label values."""
    return sum(value for (sample, _), value in samples.items() if sample == name)


class Delta:
    """How much each sample moved between two scrapes."""

    def __init__(self, before: Samples, after: Samples):
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return _value(self.after, name, **labels) - _value(self.before, name, **labels)

    def total(self, name: str) -> float:
        return _total(self.after, name) - _total(self.before, name)


def _bot_messages(bot: BotHarness, channel: str) -> list[dict]:
    return [m for m in bot.slack.messages(channel) if m.get("bot_id")]


def _share(bot: BotHarness, content: bytes, *, text: str = "", name: str = "memo.wav") -> str:
    response, body = bot.share(content, name, "audio/wav", "wav", text=text, channel=CHANNEL)
    assert response.status_code == 200
    return body["event"]["ts"]


def test_every_metric_is_exposed_with_its_name_type_and_labels(bot, speech_wav):
    # Touch every labelled metric the way production does: a clone with its preview (stages, TRTC latency), a Slack
    # call that fails once (a retry), a clone Tencent refuses (an error code).
    bot.slack.fail_next("reactions.add", "internal_error", status=500)
    assert bot.wait_final(CHANNEL, _share(bot, speech_wav)) == "white_check_mark"
    bot.drain()  # its preview too
    bot.trtc.fail_next("InvalidParameter.AudioPrompt")
    assert bot.wait_final(CHANNEL, _share(bot, speech_wav)) == "x"
    bot.drain()
    families = {f.name: f for f in text_string_to_metric_families(_page(bot))}
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


def test_every_job_outcome_is_exposed_before_any_job_ends(tmp_path):
    # A bot of its own that has run nothing: rate() and alerts must see every outcome from the start.
    with BotHarness(tmp_path) as fresh:
        families = {f.name: f for f in text_string_to_metric_families(_page(fresh))}
    samples = [s for s in families["voiceclone_jobs"].samples if s.name == "voiceclone_jobs_total"]
    assert {s.labels["outcome"] for s in samples} >= {"done", "failed", "given_up"}


def test_a_clone_counts_as_done_with_its_stages_and_both_trtc_calls(bot, speech_wav):
    before = _scrape(bot)
    ts = _share(bot, speech_wav)
    assert bot.wait_final(CHANNEL, ts) == "white_check_mark"
    bot.drain()  # the preview (TextToSpeech, then its upload) runs after the answer
    after = _scrape(bot)
    delta = Delta(before, after)
    assert [r.action for r in bot.trtc.requests] == ["VoiceClone", "TextToSpeech"]
    assert delta("voiceclone_jobs_total", outcome="done") == 1
    assert delta("voiceclone_jobs_total", outcome="failed") == 0
    assert delta("voiceclone_jobs_total", outcome="given_up") == 0
    assert delta("voiceclone_trtc_seconds_count", action="VoiceClone") == 1
    assert delta("voiceclone_trtc_seconds_count", action="TextToSpeech") == 1
    assert delta("voiceclone_job_stage_seconds_count", stage="download") == 1
    assert delta("voiceclone_job_stage_seconds_count", stage="prepare") == 1
    assert delta.total("voiceclone_trtc_errors_total") == 0
    assert delta.total("voiceclone_slack_retries_total") == 0
    # At rest: nothing queued, nothing left to send.
    assert _gauge_shows(bot, "voiceclone_queue_depth", 0)
    assert _gauge_shows(bot, "voiceclone_outbox_depth", 0)


def test_a_tencent_refusal_is_counted_by_its_code_and_the_job_as_failed(bot, speech_wav):
    before = _scrape(bot)
    bot.trtc.fail_next("LimitExceeded.VoiceCloneMaxNumLimit")
    ts = _share(bot, speech_wav)
    assert bot.wait_final(CHANNEL, ts) == "x"
    bot.drain()
    delta = Delta(before, _scrape(bot))
    assert [(r.action, r.outcome) for r in bot.trtc.requests] == [("VoiceClone", "LimitExceeded.VoiceCloneMaxNumLimit")]
    assert delta("voiceclone_trtc_errors_total", code="LimitExceeded.VoiceCloneMaxNumLimit") == 1
    assert delta.total("voiceclone_trtc_errors_total") == 1
    assert delta("voiceclone_jobs_total", outcome="failed") == 1
    assert delta("voiceclone_jobs_total", outcome="done") == 0
    # A refused call is timed too; no voice, so no preview.
    assert delta("voiceclone_trtc_seconds_count", action="VoiceClone") == 1
    assert delta("voiceclone_trtc_seconds_count", action="TextToSpeech") == 0


def test_a_refused_preview_is_counted_by_its_code_and_the_clone_still_as_done(bot, speech_wav):
    bot.trtc.fail_next("InvalidParameter.VoiceId", action="TextToSpeech")
    before = _scrape(bot)
    ts = _share(bot, speech_wav)
    assert bot.wait_final(CHANNEL, ts) == "white_check_mark"
    bot.drain()  # the preview, refused, and its note in the thread
    delta = Delta(before, _scrape(bot))
    assert [(r.action, r.outcome) for r in bot.trtc.requests] == [
        ("VoiceClone", "ok"),
        ("TextToSpeech", "InvalidParameter.VoiceId"),
    ]
    assert delta("voiceclone_trtc_errors_total", code="InvalidParameter.VoiceId") == 1
    assert delta.total("voiceclone_trtc_errors_total") == 1
    assert delta("voiceclone_trtc_seconds_count", action="TextToSpeech") == 1
    assert delta("voiceclone_jobs_total", outcome="done") == 1
    assert delta("voiceclone_jobs_total", outcome="failed") == 0


def test_a_bad_option_counts_as_failed_before_any_stage_or_call(bot, speech_wav):
    before = _scrape(bot)
    ts = _share(bot, speech_wav, text="model=gpt-5")
    assert bot.wait_final(CHANNEL, ts) == "x"
    bot.drain()
    delta = Delta(before, _scrape(bot))
    assert bot.trtc.requests == []
    assert delta("voiceclone_jobs_total", outcome="failed") == 1
    assert delta("voiceclone_jobs_total", outcome="done") == 0
    assert delta("voiceclone_job_stage_seconds_count", stage="download") == 0
    assert delta("voiceclone_trtc_seconds_count", action="VoiceClone") == 0


def test_a_job_that_times_out_three_times_counts_as_given_up(tmp_path, speech_wav):
    # A bot of its own with a short job timeout: its download hangs every time.
    with BotHarness(tmp_path, extra_env={"JOB_TIMEOUT_SECONDS": "0.5"}, max_backoff=0.1) as hung:
        file = hung.slack.add_file(speech_wav, "hangs.wav", "audio/wav", "wav")
        hung.slack.stall_file(file["id"], after_bytes=64 * 1024)
        body = hung.slack.user_message(CHANNEL, "U0USER", [file])
        before = _scrape(hung)
        assert hung.deliver(body).status_code == 200
        assert hung.wait_final(CHANNEL, body["event"]["ts"], timeout=30) == "x"
        hung.drain()
        delta = Delta(before, _scrape(hung))
        hung.slack.release_stalls()
    assert delta("voiceclone_jobs_total", outcome="given_up") == 1
    assert delta("voiceclone_jobs_total", outcome="failed") == 0
    assert delta("voiceclone_jobs_total", outcome="done") == 0
    assert delta("voiceclone_job_stage_seconds_count", stage="download") == 0  # no download ever finished


def test_slack_retries_are_counted_by_method_and_reason_and_the_outbox_shows_the_waiting_post(bot):
    dm = "D0METRICS"
    bot.slack.rate_limit_next("chat.postMessage", retry_after=1)  # then...
    bot.slack.fail_next("chat.postMessage", "internal_error", status=500)  # ...then it goes through
    before = _scrape(bot)
    # A PDF in a DM: a one-line hint, the bot's only Slack call for it.
    _, body = bot.share(b"%PDF-1.7\n", "report.pdf", "application/pdf", "pdf", channel=dm, channel_type="im")
    assert bot.wait(lambda: bot.slack.calls_to("chat.postMessage"), 10)
    # Slack said "wait 1 s": the hint is stored and waiting, and the page says so.
    assert _gauge_shows(bot, "voiceclone_outbox_depth", 1)
    assert bot.wait(lambda: _bot_messages(bot, dm), 10)
    bot.drain()
    after = _scrape(bot)
    delta = Delta(before, after)
    assert len(bot.slack.calls_to("chat.postMessage")) == 3
    [hint] = _bot_messages(bot, dm)
    assert "report.pdf" in hint["text"]
    assert delta("voiceclone_slack_retries_total", method="chat.postMessage", reason="ratelimited") == 1
    assert delta("voiceclone_slack_retries_total", method="chat.postMessage", reason="server_error") == 1
    assert delta.total("voiceclone_slack_retries_total") == 2
    assert _gauge_shows(bot, "voiceclone_outbox_depth", 0)


def test_queue_depth_counts_the_jobs_waiting_for_a_worker(bot, speech_wav):
    # The one worker is held by a download that hangs; two more shares wait for it.
    file = bot.slack.add_file(speech_wav, "stuck.wav", "audio/wav", "wav")
    bot.slack.stall_file(file["id"], after_bytes=64 * 1024)
    stuck = bot.slack.user_message(CHANNEL, "U0USER", [file])
    before = _scrape(bot)
    assert bot.deliver(stuck).status_code == 200
    assert bot.wait(lambda: bot.slack.stalled == [file["id"]], 10)
    waiting = [_share(bot, speech_wav, text="model=gpt-5", name=f"w{i}.wav") for i in range(2)]
    assert _gauge_shows(bot, "voiceclone_queue_depth", 2)
    bot.slack.release_stalls()
    assert bot.wait_final(CHANNEL, stuck["event"]["ts"]) == "white_check_mark"
    assert [bot.wait_final(CHANNEL, ts) for ts in waiting] == ["x", "x"]
    bot.drain()
    assert _gauge_shows(bot, "voiceclone_queue_depth", 0)
    delta = Delta(before, _scrape(bot))
    assert delta("voiceclone_jobs_total", outcome="done") == 1
    assert delta("voiceclone_jobs_total", outcome="failed") == 2


def test_trtc_latency_is_in_seconds_on_seconds_scale_buckets(bot, speech_wav):
    bot.trtc.delay_next(0.3, action="VoiceClone")  # Tencent takes at least 0.3 s to answer this clone
    before = _scrape(bot)
    assert bot.wait_final(CHANNEL, _share(bot, speech_wav)) == "white_check_mark"
    bot.drain()
    after = _scrape(bot)
    delta = Delta(before, after)

    def bounds(name: str, **labels: str) -> list[str]:
        """The bucket bounds of one labelled histogram, in the page's order."""
        return [
            dict(sample_labels)["le"]
            for sample, sample_labels in after
            if sample == name + "_bucket" and {k: v for k, v in sample_labels if k != "le"} == labels
        ]

    def bucket(le: str) -> float:
        return delta("voiceclone_trtc_seconds_bucket", action="VoiceClone", le=le)

    assert bounds("voiceclone_trtc_seconds", action="VoiceClone") == TRTC_BUCKETS
    assert bounds("voiceclone_job_stage_seconds", stage="download") == STAGE_BUCKETS
    assert delta("voiceclone_trtc_seconds_count", action="VoiceClone") == 1
    assert 0.3 <= delta("voiceclone_trtc_seconds_sum", action="VoiceClone") < 60
    assert bucket("0.25") == 0  # not milliseconds, and not the time before the call
    assert bucket("60.0") == 1 and bucket("+Inf") == 1


def test_metrics_live_in_their_own_registry_not_the_global_default():
    assert metrics.REGISTRY is not prometheus_client.REGISTRY
    assert b"voiceclone_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


def test_the_metrics_page_serves_the_prometheus_text_format(bot):
    response = bot.http.get(bot.metrics_url)
    assert response.status_code == 200
    # A text format version Prometheus 3 accepts without a fallback_scrape_protocol.
    media_type, *params = [part.strip() for part in response.headers["content-type"].split(";")]
    assert media_type == "text/plain"
    assert set(params) & {"version=0.0.4", "version=1.0.0"} and "charset=utf-8" in params
    assert "# TYPE voiceclone_queue_depth gauge\n" in response.text


def test_metrics_are_on_their_own_loopback_port_and_not_on_the_slack_port(bot):
    assert bot.metrics_port != bot.port
    assert bot.http.get(f"http://127.0.0.1:{bot.port}/metrics").status_code == 404
    assert bot.http.get(f"http://127.0.0.1:{bot.port}/healthz").status_code == 200
    # METRICS_HOST's default: loopback only.
    assert bot.settings.metrics_host == "127.0.0.1"
    # The metrics server serves nothing else: no Slack endpoint, no health.
    assert bot.http.get(f"http://127.0.0.1:{bot.metrics_port}/healthz").status_code == 404
    assert bot.http.post(f"http://127.0.0.1:{bot.metrics_port}/slack/events").status_code == 404
    # And takes no request body at all.
    assert bot.http.post(f"http://127.0.0.1:{bot.metrics_port}/metrics", content=b"{}").status_code == 413


def test_a_scrape_is_answered_while_the_database_is_busy(bot):
    # The database's thread is held (SQLite: the one the acknowledgements use) until the scrape has been answered:
    # the page is served from memory, so it does not wait for it.
    held, release = threading.Event(), threading.Event()

    def hold(conn: object) -> None:
        held.set()
        release.wait(10)

    busy = bot.submit(bot.runtime.db.run(hold))
    try:
        assert held.wait(5)
        started = time.monotonic()
        response = httpx.get(bot.metrics_url, timeout=5)
        elapsed = time.monotonic() - started
    finally:
        release.set()
        busy.result(10)
    assert response.status_code == 200 and "voiceclone_queue_depth" in response.text
    assert elapsed < 1.0

