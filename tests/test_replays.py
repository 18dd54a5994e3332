"""Replays run once: the same signed command or interaction delivered again within Slack's 5-minute window is
acknowledged (200, empty) and does nothing. The keys live in the bot's database (SQLite here; PostgreSQL in
scripts/test's second pass, TEST_DATABASE=postgresql), so every replica sharing it knows them."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from support.driving import where
from support.harness import SIGNING_SECRET, BotHarness

from bot.store.replays import Replays
from bot.testing.standin_slack import sign

CHANNEL = "C0REPLAY"


@pytest.fixture(autouse=True)
def _drained(bot):
    yield
    bot.drain()


@pytest.fixture(scope="module")
def speech_wav(media) -> bytes:
    return media.speech(15, ".wav").read_bytes()


def signed_once(form: dict[str, str] | None = None, payload: dict[str, Any] | None = None) -> tuple[bytes, dict]:
    """One request as Slack signs it (a command's form, or an interaction's payload), to be sent as often as wanted:
    the very same bytes and headers each time, as someone replaying a captured request sends them."""
    fields = form if form is not None else {"payload": json.dumps(payload)}
    content = urlencode(fields).encode()
    return content, {"Content-Type": "application/x-www-form-urlencoded", **sign(content, SIGNING_SECRET)}


def send(bot: BotHarness, request: tuple[bytes, dict]) -> httpx.Response:
    content, headers = request
    return httpx.post(bot.url, content=content, headers=headers, timeout=10)


def clone_a_voice(bot: BotHarness, wav: bytes) -> str:
    response, body = bot.share(wav, "alice.wav", "audio/wav", "wav", channel=CHANNEL)
    assert response.status_code == 200
    assert bot.wait_final(*where(body)) == "white_check_mark"
    answer = next(m for m in bot.replies(*where(body)) if (m.get("text") or "").startswith("Voice cloned: "))
    bot.drain()
    bot.trtc.reset()
    return answer["text"].removeprefix("Voice cloned: ")


def test_a_clone_say_command_sent_three_times_speaks_once(bot, speech_wav):
    voice_id = clone_a_voice(bot, speech_wav)
    request = signed_once(form=bot.slack.slash_command("/clone", f"say {voice_id} Good morning", channel_id=CHANNEL))
    first, again, third = send(bot, request), send(bot, request), send(bot, request)
    assert first.status_code == 200 and "is on it" in first.text
    assert (again.status_code, again.content, third.status_code, third.content) == (200, b"", 200, b"")
    bot.drain()
    assert [(r.action, r.text) for r in bot.trtc.requests] == [("TextToSpeech", "Good morning")]
    said = bot.sql("SELECT status FROM jobs WHERE kind = 'say' AND channel = ?", (CHANNEL,))
    assert [row[0] for row in said] == ["done"]


def test_the_same_words_in_a_new_command_run_again(bot, speech_wav):
    # A new command (a new trigger_id) is no replay, however alike its text.
    voice_id = clone_a_voice(bot, speech_wav)
    for _ in range(2):
        command = bot.slack.slash_command("/clone", f"say {voice_id} Twice", channel_id=CHANNEL)
        assert "is on it" in send(bot, signed_once(form=command)).text
    bot.drain()
    assert [(r.action, r.text) for r in bot.trtc.requests] == [("TextToSpeech", "Twice"), ("TextToSpeech", "Twice")]


def test_a_bare_clone_sent_three_times_opens_one_form(bot):
    request = signed_once(form=bot.slack.slash_command("/clone", "", channel_id=CHANNEL))
    answers = [send(bot, request) for _ in range(3)]
    assert [(a.status_code, a.content) for a in answers] == [(200, b""), (200, b""), (200, b"")]
    assert len(bot.slack.calls_to("views.open")) == 1


def test_a_form_submitted_three_times_is_answered_once(bot):
    # The /clone form submitted without consent: the first submission gets its errors, the replays an empty 200.
    assert send(bot, signed_once(form=bot.slack.slash_command("/clone", "", channel_id=CHANNEL))).status_code == 200
    view_id = next(iter(bot.slack.views))
    values = {"consent": {"consent": {"type": "checkboxes", "selected_options": []}}}
    request = signed_once(payload=bot.slack.view_submission(view_id, values=values))
    first, again, third = send(bot, request), send(bot, request), send(bot, request)
    assert first.json()["response_action"] == "errors"
    assert [(r.status_code, r.content) for r in (again, third)] == [(200, b""), (200, b"")]


def test_a_key_is_kept_ten_minutes_then_swept(bot):
    # On the bot's own database (SQLite, or PostgreSQL in the second pass), at chosen times.
    replays = Replays(bot.runtime.db)

    def first(key: str, now: float) -> bool:
        return bot.submit(replays.first(key, now)).result(10)

    assert first("test:sweep", 1000.0) is True
    assert first("test:sweep", 1000.0 + 299) is False
    assert first("test:sweep", 1000.0 + 599) is False  # within Slack's window either way of a skewed clock
    assert first("test:sweep", 1000.0 + 601) is True  # expired, though not swept yet: new again
    assert bot.submit(replays.sweep(1000.0 + 1202)).result(10) == 1
    assert bot.sql("SELECT key FROM replays WHERE key = ?", ("test:sweep",)) == []
