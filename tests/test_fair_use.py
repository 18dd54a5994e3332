"""Fair use (issue 19 item 2): per-user and per-workspace limits with the defaults users get, and a heavy user who
cannot delay a light one: not in the job queue, not at Tencent, not in Slack's posting pace. Signed requests to the
real app; the Slack stand-in's real posting pace (1 post a second per channel); the TRTC stand-in."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support.harness import BotHarness

from bot.testing.standin_slack import block_actions
from bot.ui.consent_blocks import CONFIRM_ACTION

CHANNEL = "C0FAIR"
ALICE, BOB, CAROL, DAVE = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"

# The defaults users get (bot/settings.py), written out: the harness turns the limits off for other modules.
BOT_ENV = {
    "CONSENT": "ask",
    "PREVIEW": "off",
    "MAX_JOBS_PER_USER": "10",
    "MAX_JOBS_PER_WORKSPACE": "500",
    "SAYS_PER_MINUTE_PER_USER": "10",
    "SAYS_PER_MINUTE_PER_WORKSPACE": "120",
    "MAX_VOICES_PER_USER": "10",
    "MAX_VOICES_PER_WORKSPACE": "1000",
}
# Slack's real posting pace: a channel's posts (uploads included) leave about one a second.
BOT_OPTIONS = {"pace_interval": 1.0}

SAYS_REFUSAL = re.compile(
    r"You've asked for 10 clips in the last minute, the most one person may\. "
    r"The next one can be asked for in (\d+) s\."
)


@pytest.fixture(scope="module")
def speech_wav(media) -> bytes:
    return media.speech(15, ".wav").read_bytes()


def command(bot: BotHarness, text: str, user: str) -> str:
    response = bot.deliver(bot.slack.slash_command("/clone", text, user_id=user, channel_id=CHANNEL), kind="form")
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return str(response.json().get("text"))
    return response.text


def press(bot: BotHarness, message: dict[str, Any], user: str) -> None:
    payload = block_actions(
        message, CHANNEL, CONFIRM_ACTION, user, trigger_id=bot.slack.issue_trigger_id(),
        response_url=bot.slack.issue_response_url(), team_id=bot.slack.team_id, api_app_id=bot.slack.app_id,
    )
    assert bot.deliver(payload, kind="interactive").status_code == 200


def drop(bot: BotHarness, wav: bytes, user: str, name: str) -> dict[str, Any]:
    file = bot.slack.add_file(wav, name, "audio/wav", "wav", user=user)
    body = bot.slack.user_message(CHANNEL, user, [file])
    assert bot.deliver(body).status_code == 200
    return body


def question(bot: BotHarness, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """The consent question in the share's thread, once it has been posted."""
    ts = body["event"]["ts"]
    if not bot.wait(lambda: _asked(bot, ts) is not None, timeout):
        return None
    return _asked(bot, ts)


def _asked(bot: BotHarness, ts: str) -> dict[str, Any] | None:
    for message in bot.slack.thread(CHANNEL, ts):
        if CONFIRM_ACTION in json.dumps(message.get("blocks") or []):
            return message
    return None


def own_voice(bot: BotHarness, wav: bytes, user: str) -> str:
    """`user` drops a recording and confirms it; their new VoiceId."""
    body = drop(bot, wav, user, f"{user.lower()}.wav")
    asked = question(bot, body, 30)
    assert asked is not None
    press(bot, asked, user)
    bot.drain()
    [voice_id] = [r[0] for r in bot.sql("SELECT voice_id FROM voices WHERE owner = ?", (user,))]
    return voice_id


def test_alices_flood_neither_delays_carols_say_nor_bobs_clone(bot, speech_wav):
    alice_voice, carol_voice = own_voice(bot, speech_wav, ALICE), own_voice(bot, speech_wav, CAROL)
    bot.trtc.reset()

    # Alice floods: 120 `say`s as fast as eight connections carry them.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: command(bot, f"say {alice_voice} flood number {n}", ALICE), range(120)))
    accepted = [a for a in answers if "is on it" in a]
    refused = [a for a in answers if SAYS_REFUSAL.fullmatch(a)]
    assert len(accepted) == 10 and len(refused) == 110, set(answers)
    assert all(1 <= int(SAYS_REFUSAL.fullmatch(a).group(1)) <= 60 for a in refused)  # type: ignore[union-attr]

    # Carol's one `say` reaches Tencent within 3 s, behind Alice's accepted ones.
    started = time.monotonic()
    assert "is on it" in command(bot, f"say {carol_voice} just one line", CAROL)
    assert bot.wait(lambda: _tts_of(bot, "just one line") is not None, 10)
    assert _tts_of(bot, "just one line") - started < 3.0  # type: ignore[operator]

    # Bob's drop in the same channel gets its consent question while Alice's ten clips still wait for the
    # channel's posting pace, and once confirmed reaches Tencent within 3 s.
    body = drop(bot, speech_wav, BOB, "bob.wav")
    asked = question(bot, body, 8)
    assert asked is not None, "Bob's question waited behind Alice's uploads"
    pressed = time.monotonic()
    press(bot, asked, BOB)
    assert bot.trtc.wait_for_requests(1, 10, action="VoiceClone")
    [clone] = bot.trtc.requests_of("VoiceClone")
    assert clone.time - pressed < 3.0
    bot.drain()


def _tts_of(bot: BotHarness, text: str) -> float | None:
    """When TextToSpeech was asked to say `text` (the stand-in's clock: time.monotonic in this process)."""
    return next((r.time for r in bot.trtc.requests_of("TextToSpeech") if r.text == text), None)


def test_requests_past_the_jobs_limit_are_refused_with_the_limit(bot, speech_wav):
    # Ten of Alice's requests wait (far in the future, so no worker takes them during the test).
    later = time.time() + 3600
    for n in range(10):
        bot.sql(
            "INSERT INTO jobs (dedupe_key, kind, team_id, user_id, file_json, options, created_at, updated_at,"
            " run_at) VALUES (?, 'share', ?, ?, '{}', '{}', ?, ?, ?)",
            (f"waiting:{n}", bot.slack.team_id, ALICE, time.time(), time.time(), later),
        )
    try:
        answer = command(bot, "F0NOTREAL1", ALICE)
        assert answer == (
            "You already have 10 requests waiting or running, and one person may have at most 10 at once. "
            "Try again when one of them has been answered."
        )
        body = drop(bot, speech_wav, ALICE, "one-more.wav")
        assert bot.wait(lambda: bot.slack.ephemerals(CHANNEL), 10)
        [told] = bot.slack.ephemerals(CHANNEL)
        assert told["user"] == ALICE and told["text"] == answer
        assert bot.sql("SELECT COUNT(*) FROM jobs WHERE share_ts = ?", (body["event"]["ts"],))[0][0] == 0
        # Bob is not Alice: his request is taken.
        taken = command(bot, "F0NOTREAL2", BOB)
        assert taken == "Got it: cloning `F0NOTREAL2`. I'll answer in a thread in this channel."
    finally:
        bot.sql("DELETE FROM jobs WHERE dedupe_key LIKE ?", ("waiting:%",))


def test_a_drop_past_the_voices_limit_is_refused_and_says_how_to_make_room(bot, speech_wav):
    for n in range(10):
        bot.sql(
            "INSERT INTO voices (team_id, voice_id, voice_name, owner, created_at) VALUES (?, ?, 'v', ?, ?)",
            (bot.slack.team_id, f"held_{n}", DAVE, time.time()),
        )
    try:
        body = drop(bot, speech_wav, DAVE, "eleventh.wav")
        assert bot.wait(lambda: bot.slack.ephemerals(CHANNEL), 10)
        [told] = bot.slack.ephemerals(CHANNEL)
        assert told["user"] == DAVE
        assert told["text"] == (
            "You already have 10 voices, the most one person may keep here (10). "
            "Forget one with `/clone forget <voice>` to make room."
        )
        assert bot.sql("SELECT COUNT(*) FROM jobs WHERE share_ts = ?", (body["event"]["ts"],))[0][0] == 0
    finally:
        bot.sql("DELETE FROM voices WHERE voice_id LIKE ?", ("held_%",))
