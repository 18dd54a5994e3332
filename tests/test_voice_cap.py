"""The Tencent account's voice cap (ACCOUNT_VOICE_CAP): voices cannot be deleted, so the operator is warned (a log
line and a metric) as the account nears it, and new clones are refused at it, with a plain answer."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
from support.driving import where

# A cap of 10 voices for the account; everything else as users get it (CONSENT=attested: drops clone at once).
BOT_ENV = {"ACCOUNT_VOICE_CAP": "10", "CONSENT": "attested"}
CHANNEL = "C0CAP"


@pytest.fixture(scope="module")
def speech_wav(media) -> bytes:
    return media.speech(15, ".wav").read_bytes()


def metric(bot, name: str) -> float:
    page = httpx.get(bot.metrics_url, timeout=5).text
    [line] = [line for line in page.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def test_the_operator_is_warned_near_the_cap_and_clones_stop_at_it(bot, speech_wav, caplog):
    # Nine voices made earlier (the audit is append-only: rows are only ever added).
    for n in range(9):
        bot.sql(
            "INSERT INTO audit (at, team_id, user_id, consent, voice_id, outcome) VALUES (?, ?, ?, 'button', ?,"
            " 'cloned')",
            (time.time(), bot.slack.team_id, "U0EARLIER", f"earlier_{n}"),
        )
    caplog.set_level(logging.WARNING, logger="bot.work.quotas")
    _, body = bot.share(speech_wav, "tenth.wav", "audio/wav", "wav", channel=CHANNEL)
    assert bot.wait_final(*where(body)) == "white_check_mark"  # the tenth voice is still allowed
    warnings = [r.getMessage() for r in caplog.records if r.name == "bot.work.quotas"]
    assert warnings == [
        "the Tencent account has 9 cloned voices of ACCOUNT_VOICE_CAP=10; new clones are refused at the cap"
    ]
    assert metric(bot, "voiceclone_account_voice_cap") == 10.0

    # At the cap, the next drop is refused as it arrives: only its sharer sees why, and nothing is stored.
    _, body = bot.share(speech_wav, "eleventh.wav", "audio/wav", "wav", channel=CHANNEL)
    assert bot.wait(lambda: bot.slack.ephemerals(CHANNEL), 10)
    [told] = bot.slack.ephemerals(CHANNEL)
    assert told["text"] == (
        "The bot's Tencent Cloud account has made all the voices it may. Ask your Slack admin to contact the bot's "
        "operator."
    )
    assert bot.sql("SELECT COUNT(*) FROM jobs WHERE share_ts = ?", (body["event"]["ts"],))[0][0] == 0
    assert len(bot.trtc.requests_of("VoiceClone")) == 1  # the eleventh never reached Tencent
    assert metric(bot, "voiceclone_account_voices") == 10.0

    # A request taken before its speaker was known (`/clone <file>`) is checked again just before VoiceClone.
    file = bot.slack.add_file(speech_wav, "twelfth.wav", "audio/wav", "wav")
    command = bot.slack.slash_command(text=file["id"], channel_id=CHANNEL)
    assert bot.deliver(command, kind="form").status_code == 200
    refusal = "The bot's Tencent Cloud account has made all the voices it may."
    assert bot.wait(lambda: any(refusal in (m.get("text") or "") for m in bot.slack.messages(CHANNEL)), 30)
    bot.drain()
    assert len(bot.trtc.requests_of("VoiceClone")) == 1
    assert metric(bot, 'voiceclone_refused_total{limit="ACCOUNT_VOICE_CAP"}') == 2.0
