"""Prometheus metrics for the bot, served at GET /metrics via `render()`.

All metrics live in `REGISTRY`, this module's own CollectorRegistry rather than prometheus_client's global one:
tests can read it without seeing other modules' collectors, and importing the module twice cannot fail on a
duplicate name in the default registry.

Label values must stay bounded, since every distinct value is a new time series kept for the life of the process:
callers pass outcomes, API codes, Slack method names, reasons and stage names (fixed sets chosen in code or
returned by an API), never user text, file names, channel or team ids, or exception messages.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

# Job outcomes: "done", "failed" (an answer was given: bad input, an API refusal), "given_up" (retries exhausted).
JOB_OUTCOMES = ("done", "failed", "given_up")
JOBS = Counter("voiceclone_jobs_total", "Jobs finished, by outcome.", ["outcome"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("voiceclone_queue_depth", "Jobs waiting for a worker.", registry=REGISTRY)
OUTBOX_DEPTH = Gauge(
    "voiceclone_outbox_depth", "Slack side effects (replies, reactions) waiting to be sent.", registry=REGISTRY
)
# TRTC calls take seconds (VoiceClone trains on the recording), far beyond the default buckets' 10 s top.
TRTC_SECONDS = Histogram(
    "voiceclone_trtc_seconds",
    "Latency of TRTC API calls (VoiceClone, TextToSpeech), successful or not.",
    ["action"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
    registry=REGISTRY,
)
TRTC_ERRORS = Counter(
    "voiceclone_trtc_errors_total", "TRTC API errors, by error code (e.g. InternalError).", ["code"], registry=REGISTRY
)
# Reasons: "ratelimited" (429), "server_error" (5xx), "connection" (reset, timeout), or another short fixed word.
SLACK_RETRIES = Counter(
    "voiceclone_slack_retries_total",
    "Slack Web API calls retried, by method (e.g. chat.postMessage) and reason.",
    ["method", "reason"],
    registry=REGISTRY,
)
# Stages run from a download under a second to a clone of a minute or two.
JOB_STAGE_SECONDS = Histogram(
    "voiceclone_job_stage_seconds",
    "Time spent in each job stage (e.g. download, convert, clone, reply).",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
    registry=REGISTRY,
)

# Fair use (bot.work.quotas): requests refused by a limit, and the account's voices against ACCOUNT_VOICE_CAP.
REFUSED = Counter(
    "voiceclone_refused_total", "Requests refused by a fair-use limit, by the limit's setting.", ["limit"],
    registry=REGISTRY,
)
ACCOUNT_VOICES = Gauge(
    "voiceclone_account_voices", "Voices the Tencent account has cloned (forgotten ones included).", registry=REGISTRY
)
ACCOUNT_VOICE_CAP = Gauge(
    "voiceclone_account_voice_cap", "ACCOUNT_VOICE_CAP: the account's voice cap (0: not set).", registry=REGISTRY
)

for _outcome in JOB_OUTCOMES:
    JOBS.labels(outcome=_outcome)  # present at 0 from the start, so rate() and alerts see every outcome


def render() -> tuple[bytes, str]:
    """The exposition body of every metric in REGISTRY and its Content-Type, for GET /metrics."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
