"""What an operator sees of a running bot: JSON log lines per job stage, and /metrics, from the real process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from support.driving import BotProcess, standins, where

from bot.testing.standin_slack import SlackStandIn


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_json_logs_carry_job_team_channel_stage_and_duration(tmp_path: Path, media):
    wav = media.speech(15, ".wav").read_bytes()
    with standins() as (slack, trtc), BotProcess(slack, trtc, tmp_path, LOG_FORMAT="json") as bot:
        bot.start()
        metrics_url = bot.metrics_url
        before = _samples(metrics_url)
        _, body = bot.share(wav, "memo.wav", "audio/wav", "wav", channel="C0LOGS")
        assert slack.wait_for(lambda: "white_check_mark" in slack.reactions(*where(body)), 30)
        assert _wait_metric(slack, metrics_url, before)
        # The depths are read every 5 s (bot.work.gauges), never by a scrape: the outbox at rest shows within that.
        assert _at_rest(metrics_url)
        after = _samples(metrics_url)
        assert bot.terminate() == 0
    lines = [json.loads(line) for line in bot.log_text().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    job_lines = [line for line in lines if line.get("job_id") is not None]
    stages = [line["stage"] for line in job_lines if "stage" in line]
    assert {"downloading", "converting", "cloning", "done"} <= set(stages)
    cloning = next(line for line in job_lines if line.get("stage") == "cloning")
    assert cloning["team"] == slack.team_id and cloning["channel"] == "C0LOGS"
    assert isinstance(cloning["duration"], float | int) and cloning["duration"] >= 0
    # /metrics counted the clone, its TRTC latency and the outbox at rest.
    done = ("voiceclone_jobs_total", (("outcome", "done"),))
    assert after[done] == before.get(done, 0) + 1
    latency = ("voiceclone_trtc_seconds_count", (("action", "VoiceClone"),))
    assert after[latency] == before.get(latency, 0) + 1
    assert after[("voiceclone_outbox_depth", ())] == 0


def _wait_metric(slack: SlackStandIn, url: str, before: dict) -> bool:
    done = ("voiceclone_jobs_total", (("outcome", "done"),))
    return slack.wait_for(lambda: _samples(url).get(done, 0) > before.get(done, 0), 10)


def _at_rest(url: str, timeout: float = 15) -> bool:
    """Scrape until the outbox depth shows 0. Polled: the page is the only way to see it."""
    deadline = time.monotonic() + timeout
    while _samples(url).get(("voiceclone_outbox_depth", ()), -1) != 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
