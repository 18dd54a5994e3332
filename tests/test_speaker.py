"""The speaker consents and owns the voice: a recording is its uploader's voice, whoever asks for the clone
(issue 19 item 4). Signed requests to the real app, the Slack and TRTC stand-ins, CONSENT=ask."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.harness import BotHarness

from bot.store.audit import Audit
from bot.testing.standin_slack import block_actions
from bot.ui.consent_blocks import CONFIRM_ACTION
from bot.ui.voice_blocks import FORGET_ME_ACTION

CHANNEL = "C0SPEAKER"
ALICE = "U0ALICE"  # asks for clones
CAROL = "U0CAROL"  # the speaker of the recordings

BOT_ENV = {"CONSENT": "ask", "PREVIEW": "off"}


@pytest.fixture(scope="module")
def speech_wav(media) -> bytes:
    return media.speech(15, ".wav").read_bytes()


def press(bot: BotHarness, message: dict[str, Any], action: str, user: str) -> None:
    payload = block_actions(
        message, CHANNEL, action, user, trigger_id=bot.slack.issue_trigger_id(),
        response_url=bot.slack.issue_response_url(), team_id=bot.slack.team_id, api_app_id=bot.slack.app_id,
    )
    assert bot.deliver(payload, kind="interactive").status_code == 200


def command(bot: BotHarness, text: str, user: str) -> dict[str, Any]:
    response = bot.deliver(bot.slack.slash_command("/clone", text, user_id=user, channel_id=CHANNEL), kind="form")
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return {"text": response.text}


def find(bot: BotHarness, needle: str) -> dict[str, Any] | None:
    """The first message in the channel (threads included) whose blocks or text hold `needle`."""
    for message in bot.slack.messages(CHANNEL):
        if needle in json.dumps(message.get("blocks") or []) or needle in (message.get("text") or ""):
            return message
    return None


def wait_message(bot: BotHarness, needle: str, timeout: float = 30) -> dict[str, Any]:
    assert bot.wait(lambda: find(bot, needle) is not None, timeout), [m.get("text") for m in bot.slack.messages(
        CHANNEL)]
    message = find(bot, needle)
    assert message is not None
    return message


def test_carols_memo_is_cloned_at_alices_request_only_on_carols_press_and_is_carols(bot, speech_wav):
    memo = bot.slack.add_file(speech_wav, "carol-memo.wav", "audio/wav", "wav", user=CAROL)
    bot.slack.user_message(CHANNEL, CAROL, [memo])  # Carol shared it in the channel
    command(bot, memo["id"], ALICE)

    asked = wait_message(bot, CONFIRM_ACTION)
    question = json.dumps(asked["blocks"])
    assert "<@U0ALICE> asked to clone the voice in this recording. It is yours to give or refuse." in question
    assert "<@U0CAROL>, please confirm" in question
    assert "Only <@U0CAROL> can confirm." in question

    press(bot, asked, CONFIRM_ACTION, ALICE)  # the person who asked cannot say yes for Carol
    assert bot.wait(lambda: bot.slack.ephemerals(CHANNEL), 10)
    [told] = bot.slack.ephemerals(CHANNEL)
    assert told["user"] == ALICE
    assert told["text"] == "Only <@U0CAROL> can confirm cloning this voice: it is theirs to give."
    assert bot.trtc.requests_of("VoiceClone") == []

    press(bot, asked, CONFIRM_ACTION, CAROL)
    assert bot.trtc.wait_for_requests(1, 15, action="VoiceClone")
    wait_message(bot, "Voice cloned: ")
    bot.drain()

    [(owner, voice_id)] = [tuple(r) for r in bot.sql("SELECT owner, voice_id FROM voices")]
    assert owner == CAROL
    assert voice_id in json.dumps(command(bot, "list", CAROL))
    assert voice_id not in json.dumps(command(bot, "list", ALICE))
    refused = command(bot, f"say {voice_id} hello", ALICE)["text"]
    assert refused == f"You have no voice `{voice_id}`. `/clone list` shows yours."
    [entry] = [e for e in Audit(bot.runtime.db).entries() if e.voice_id == voice_id]
    assert (entry.user_id, entry.requester, entry.consent, entry.outcome) == (CAROL, ALICE, "button", "cloned")


def test_forget_me_while_the_clone_is_at_tencent_keeps_no_voice(bot, speech_wav):
    memo = bot.slack.add_file(speech_wav, "carol-late.wav", "audio/wav", "wav", user=CAROL)
    assert bot.deliver(bot.slack.user_message(CHANNEL, CAROL, [memo])).status_code == 200
    asked = wait_message(bot, CONFIRM_ACTION)
    # Tencent takes 4 s to answer this clone: Carol asks to be forgotten meanwhile.
    bot.trtc.delay_next(4, action="VoiceClone")
    press(bot, asked, CONFIRM_ACTION, CAROL)
    assert bot.trtc.wait_for_requests(1, 15, action="VoiceClone")
    ack = command(bot, "forget-me", CAROL)
    press(bot, {"blocks": ack["blocks"], "ts": "1.0"}, FORGET_ME_ACTION, CAROL)
    assert bot.wait(lambda: any(e["user"] == CAROL for e in bot.slack.ephemerals(CHANNEL)), 10)

    told = wait_message(bot, "so the bot kept no voice")
    bot.drain()
    assert "(`/clone forget-me`), so the bot kept no voice: nobody can list, use or rename it here." in json.dumps(
        told["blocks"])
    assert bot.sql("SELECT COUNT(*) FROM voices WHERE owner = ?", (CAROL,))[0][0] == 0
    assert bot.sql("SELECT COUNT(*) FROM jobs WHERE speaker = ? OR user_id = ?", (CAROL, CAROL))[0][0] == 0
    assert "no cloned voices" in command(bot, "list", CAROL)["text"]
    # Tencent keeps the voice: its VoiceId stays in the operator's audit.
    cloned = [e for e in Audit(bot.runtime.db).entries() if e.file_name == "carol-late.wav" and e.voice_id]
    assert len(cloned) == 1 and cloned[0].voice_id in json.dumps(told["blocks"])
