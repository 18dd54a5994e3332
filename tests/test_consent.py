"""Consent on every path, through signed requests to the real app and the stand-ins (CONSENT=ask)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.driving import BotProcess, standins, where
from support.harness import BotHarness

from bot.store.audit import Audit
from bot.testing.standin_slack import block_actions
from bot.ui.consent_blocks import CANCEL_ACTION, CONFIRM_ACTION, STATEMENT

CHANNEL = "C0CONSENT"
OWNER = "U0USER"  # the stand-in's default uploader
OTHER = "U0OTHER"


# The module's bot (tests/conftest.py): the uploader is asked before anything is cloned.
BOT_ENV = {"CONSENT": "ask", "RETENTION_DAYS": "30", "CONSENT_TTL_HOURS": "24"}





@pytest.fixture(scope="module")
def speech_wav(media) -> bytes:
    return media.speech(15, ".wav").read_bytes()


def prepared_dir(bot: BotHarness) -> Path:
    return Path(bot.settings.data_path) / "prepared"


def question(bot: BotHarness, body: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    """Wait for the consent question in the share's thread; return that message."""

    def find() -> dict[str, Any] | None:
        for message in bot.replies(*where(body)):
            for block in message.get("blocks") or []:
                if any(e.get("action_id") == CONFIRM_ACTION for e in block.get("elements") or []):
                    return message
        return None

    assert bot.slack.wait_for(lambda: find() is not None, timeout), [m.get("text") for m in bot.replies(*where(body))]
    found = find()
    assert found is not None
    return found


def press(bot: BotHarness, message: dict[str, Any], action: str, user: str = OWNER) -> None:
    """Press a button of `message` as seen when it was read (a stale view still carries its buttons)."""
    payload = block_actions(
        message, CHANNEL, action, user, trigger_id=bot.slack.issue_trigger_id(),
        response_url=bot.slack.issue_response_url(), team_id=bot.slack.team_id, api_app_id=bot.slack.app_id,
    )
    assert bot.deliver(payload, kind="interactive").status_code == 200


def job_row(bot: BotHarness, **where_: Any) -> dict[str, Any]:
    rows = [{k: r[k] for k in r.keys()} for r in bot.sql("SELECT * FROM jobs ORDER BY id DESC")]  # noqa: SIM118
    return next(r for r in rows if all(r.get(k) == v for k, v in where_.items()))


def test_a_drop_is_prepared_and_waits_for_the_uploaders_press(bot, speech_wav):
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL)
    message = question(bot, body)
    text = json.dumps(message["blocks"])
    assert STATEMENT in text and "Clone this voice" in text and "Cancel" in text
    assert "speech" in text  # the report card is on the question
    assert bot.trtc.requests == []  # nothing was sent to Tencent
    # The prepared prompt waits privately on disk: folder 0700, file 0600, a WAV of the recording's speech.
    [prompt] = list(prepared_dir(bot).iterdir())
    assert stat.S_IMODE(prepared_dir(bot).stat().st_mode) == 0o700
    assert stat.S_IMODE(prompt.stat().st_mode) == 0o600
    assert prompt.read_bytes()[:4] == b"RIFF"
    assert job_row(bot, share_ts=body["event"]["ts"])["status"] == "awaiting_consent"
    press(bot, message, CANCEL_ACTION)  # leave nothing waiting for the next test
    assert bot.slack.wait_for(lambda: not list(prepared_dir(bot).iterdir()), 10)


def test_someone_elses_press_does_nothing_but_tell_them(bot, speech_wav):
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL)
    message = question(bot, body)
    press(bot, message, CONFIRM_ACTION, user=OTHER)
    press(bot, message, CANCEL_ACTION, user=OTHER)
    assert bot.slack.wait_for(lambda: len(bot.slack.ephemerals(CHANNEL)) == 2, 10)
    for ephemeral in bot.slack.ephemerals(CHANNEL):
        assert ephemeral["user"] == OTHER and f"<@{OWNER}>" in ephemeral["text"]
    bot.drain()
    assert bot.trtc.requests == []
    assert job_row(bot, share_ts=body["event"]["ts"])["status"] == "awaiting_consent"
    assert len(list(prepared_dir(bot).iterdir())) == 1
    press(bot, message, CANCEL_ACTION)


def test_the_uploaders_press_clones_once_within_a_second(bot, speech_wav):
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL, text="name=consented")
    message = question(bot, body)
    [prompt] = list(prepared_dir(bot).iterdir())
    sent_sha = hashlib.sha256(prompt.read_bytes()).hexdigest()
    pressed_at = time.monotonic()
    # A double press, both at once (and a third after): one clone.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: press(bot, message, CONFIRM_ACTION), range(2)))
    assert bot.trtc.wait_for_requests(1, 10)
    first_request = bot.trtc.requests[0].time
    press(bot, message, CONFIRM_ACTION)
    assert bot.wait_final(*where(body)) == "white_check_mark"
    bot.drain()
    assert len(bot.trtc.requests) == 1
    assert first_request - pressed_at <= 1.0
    [answer] = bot.replies(*where(body))
    assert answer["text"].startswith("Voice cloned: consented_")
    assert f"confirmed by <@{OWNER}>" in json.dumps(answer["blocks"])
    assert list(prepared_dir(bot).iterdir()) == []  # no audio kept after the clone
    row = job_row(bot, share_ts=body["event"]["ts"])
    assert json.loads(row["consent"])["how"] == "button"
    [line] = [e for e in Audit(bot.runtime.db).entries() if e.job_id == row["id"]]
    assert (line.consent, line.user_id, line.outcome) == ("button", OWNER, "cloned")
    assert line.voice_id == answer["text"].removeprefix("Voice cloned: ")
    assert line.audio_sha256 == sent_sha and line.voice_name == "consented"


def test_cancel_deletes_the_prepared_audio_and_says_so(bot, speech_wav):
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL)
    message = question(bot, body)
    press(bot, message, CANCEL_ACTION)
    assert bot.slack.wait_for(lambda: "Cancelled" in bot.replies(*where(body))[0]["text"], 10)
    assert list(prepared_dir(bot).iterdir()) == []
    press(bot, message, CONFIRM_ACTION)  # too late: nothing happens
    bot.drain()
    assert bot.trtc.requests == []
    assert job_row(bot, share_ts=body["event"]["ts"])["status"] == "cancelled"


def test_unconfirmed_drops_expire(bot, speech_wav):
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL)
    question(bot, body)
    housekeeping = bot.runtime.housekeeping
    # Not yet: a housekeeping pass now leaves it waiting.
    asyncio.run_coroutine_threadsafe(housekeeping.maintain(), bot._loop).result(10)
    assert job_row(bot, share_ts=body["event"]["ts"])["status"] == "awaiting_consent"
    # As if CONSENT_TTL_HOURS (24) had passed.
    later = time.time() + 24 * 3600 + 60
    asyncio.run_coroutine_threadsafe(housekeeping.maintain(now=later), bot._loop).result(10)
    assert bot.slack.wait_for(lambda: "Expired" in bot.replies(*where(body))[0]["text"], 10)
    assert list(prepared_dir(bot).iterdir()) == []
    assert job_row(bot, share_ts=body["event"]["ts"])["status"] == "expired"
    assert bot.trtc.requests == []


def test_clone_command_refuses_a_file_from_a_channel_the_caller_is_not_in(bot, speech_wav):
    private = bot.slack.add_file(speech_wav, "secret.wav", "audio/wav", "wav", user="U0BOSS")
    bot.slack.user_message("G0PRIVATE", "U0BOSS", [private])  # shared only in a private channel
    command = bot.slack.slash_command(text=private["id"], user_id=OWNER, channel_id=CHANNEL)
    assert bot.deliver(command, kind="form").status_code == 200
    assert bot.slack.wait_for(lambda: bot.slack.ephemerals(CHANNEL), 10)
    [refusal] = bot.slack.ephemerals(CHANNEL)
    assert refusal["user"] == OWNER and "only clone a file you shared" in refusal["text"]
    bot.drain()
    assert not [r for r in bot.slack.file_requests if private["id"] in r.path]  # never downloaded
    assert bot.trtc.requests == [] and bot.slack.messages(CHANNEL) == []


def test_clone_command_for_a_file_shared_in_this_channel_asks_for_consent(bot, speech_wav):
    file = bot.slack.add_file(speech_wav, "team.wav", "audio/wav", "wav", user="U0COLLEAGUE")
    bot.slack.user_message(CHANNEL, "U0COLLEAGUE", [file])
    command = bot.slack.slash_command(text=file["id"], user_id=OWNER, channel_id=CHANNEL)
    assert bot.deliver(command, kind="form").status_code == 200

    def asked() -> dict[str, Any] | None:
        for message in bot.slack.messages(CHANNEL):
            if CONFIRM_ACTION in json.dumps(message.get("blocks") or []):
                return message
        return None

    assert bot.slack.wait_for(lambda: asked() is not None, 30)
    assert bot.trtc.requests == []
    # The recording is the colleague's voice: they confirm, not the caller (tests/test_speaker.py has the rest).
    press(bot, asked(), CONFIRM_ACTION, user="U0COLLEAGUE")
    assert bot.trtc.wait_for_requests(1, 10)


def test_files_posted_by_bots_are_ignored(bot, speech_wav):
    file = bot.slack.add_file(speech_wav, "preview.wav", "audio/wav", "wav")
    body = bot.slack.user_message(CHANNEL, OWNER, [file])
    body["event"]["bot_id"] = "B0OTHERBOT"
    assert bot.deliver(body).status_code == 200
    bot.drain()
    assert bot.slack.calls == [] and bot.trtc.requests == []
    assert bot.sql("SELECT COUNT(*) FROM jobs WHERE share_ts = ?", (body["event"]["ts"],))[0][0] == 0


def test_rows_past_retention_are_deleted_and_the_audit_stays(bot, speech_wav):
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL)
    press(bot, question(bot, body), CONFIRM_ACTION)
    assert bot.wait_final(*where(body)) == "white_check_mark"
    bot.drain()
    job_id = job_row(bot, share_ts=body["event"]["ts"])["id"]
    audit_before = len(Audit(bot.runtime.db).entries())
    bot.sql("UPDATE jobs SET finished_at = ? WHERE id = ?", (time.time() - 31 * 86400, job_id))
    bot.sql("UPDATE outbox SET updated_at = ? WHERE job_id = ?", (time.time() - 31 * 86400, job_id))
    asyncio.run_coroutine_threadsafe(bot.runtime.housekeeping.maintain(), bot._loop).result(10)
    assert bot.sql("SELECT COUNT(*) FROM jobs WHERE id = ?", (job_id,))[0][0] == 0
    assert bot.sql("SELECT COUNT(*) FROM outbox WHERE job_id = ?", (job_id,))[0][0] == 0
    # The audit refuses to be rewritten, by anyone (SQLite and PostgreSQL triggers).
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.RaiseException)):
        bot.sql("DELETE FROM audit")
    assert len(Audit(bot.runtime.db).entries()) == audit_before


def test_prepared_audio_survives_a_restart_and_attested_mode_clones_at_once(tmp_path, speech_wav):
    data = tmp_path / "data"
    with standins() as (slack, trtc):
        with BotProcess(slack, trtc, tmp_path, CONSENT="ask", DATA_DIR=str(data)) as process:
            process.start()
            _, body = process.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL)
            channel, ts = where(body)

            def asked() -> dict[str, Any] | None:
                for message in slack.thread(channel, ts)[1:]:
                    if CONFIRM_ACTION in json.dumps(message.get("blocks") or []):
                        return message
                return None

            assert slack.wait_for(lambda: asked() is not None, 30)
            assert process.terminate() == 0
            assert len(list((data / "prepared").iterdir())) == 1
            process.start()
            payload = slack.press(channel, asked()["ts"], CONFIRM_ACTION, user=OWNER)
            assert process.deliver(payload, kind="interactive").status_code == 200
            assert trtc.wait_for_requests(1, 20)
            assert slack.wait_for(lambda: "white_check_mark" in slack.reactions(channel, ts), 20)
            assert process.terminate() == 0
        assert list((data / "prepared").iterdir()) == []

        with BotProcess(slack, trtc, tmp_path / "attested", CONSENT="attested") as process:
            process.start()
            _, body = process.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL)
            channel, ts = where(body)
            assert slack.wait_for(lambda: "white_check_mark" in slack.reactions(channel, ts), 30)
            [answer] = slack.thread(channel, ts)[1:]
            assert "consent policy" in json.dumps(answer["blocks"])
            assert process.terminate() == 0
            assert "consent: attested" in process.log_text()
