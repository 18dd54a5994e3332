"""The voice lifecycle through signed requests to the real app and the stand-ins: a preview in the thread, Say
something, the library (/clone list, App Home), rename, forget and forget-me, and nobody reaching others' voices."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.driving import where
from support.harness import BotHarness
from support.media import ffmpeg_exe

from bot.testing.standin_slack import block_actions
from bot.ui.voice_blocks import (
    EX_MODEL,
    FORGET_ACTION,
    FORGET_CONFIRM_ACTION,
    FORGET_ME_ACTION,
    NO_DELETE_API,
    SAY_ACTION,
    SAY_CALLBACK,
)

OWNER = "U0USER"  # the stand-in's default uploader
OTHER = "U0OTHER"
ADMIN = "U0ADMIN"
SCOPED_ADMIN = "U0SCOPED"  # an admin of this workspace (T0TEST, the stand-in's), named as T...:U...
FAR_ADMIN = "U0FARADMIN"  # an admin of another workspace only


# The module's bot (tests/conftest.py): every clone is previewed. One workspace: a bare U... is allowed too.
BOT_ENV = {"ADMIN_USERS": f"{ADMIN},T0TEST:{SCOPED_ADMIN},T0ELSEWHERE:{FAR_ADMIN}", "PREVIEW": "on"}


@pytest.fixture(autouse=True)
def _clean(bot):
    bot.trtc.tts_refused_models.clear()


@pytest.fixture(scope="module")
def speech_wav(media) -> bytes:
    return media.speech(15, ".wav").read_bytes()


# -- helpers ---------------------------------------------------------------------------------------------------


def clone(bot: BotHarness, wav: bytes, text: str = "", channel: str = "C0VOICES") -> tuple[dict[str, Any], str]:
    """Drop a recording; return the share and the VoiceId of the answer."""
    response, body = bot.share(wav, "alice.wav", "audio/wav", "wav", text=text, channel=channel)
    assert response.status_code == 200
    assert bot.wait_final(*where(body)) == "white_check_mark"
    answer = next(m for m in bot.replies(*where(body)) if (m.get("text") or "").startswith("Voice cloned: "))
    return body, answer["text"].removeprefix("Voice cloned: ")


def uploads_in(bot: BotHarness, channel: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
    """Messages in `channel` (in the thread of `thread_ts` when given) that share a file."""
    found = []
    for message in bot.slack.messages(channel):
        in_thread = thread_ts is None or message.get("thread_ts") == thread_ts
        if message.get("files") and message.get("bot_id") and in_thread:
            found.append(message)
    return found


def wait_upload(bot: BotHarness, channel: str, thread_ts: str | None = None, count: int = 1) -> list[dict[str, Any]]:
    assert bot.wait(lambda: len(uploads_in(bot, channel, thread_ts)) >= count), [c[0] for c in bot.slack.calls]
    return uploads_in(bot, channel, thread_ts)


def probe(audio: bytes, tmp: Path) -> tuple[str, float, int]:
    """(codec, seconds, sample rate) of `audio`, by decoding all of it with ffmpeg."""
    path = tmp / "clip.mp3"
    path.write_bytes(audio)
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-f", "s16le", "-ac", "1", "-"],
                          capture_output=True, check=True)
    info = done.stderr.decode()
    assert "Audio: mp3" in info, info
    rate = int(info.split(" Hz")[0].rsplit(" ", 1)[1])
    return "mp3", len(done.stdout) / 2 / rate, rate


def command(bot: BotHarness, text: str, user: str = OWNER, channel: str = "C0VOICES") -> dict[str, Any]:
    """Run `/clone <text>`; return the acknowledgement's JSON (ephemeral answers come back in it)."""
    response = bot.deliver(bot.slack.slash_command("/clone", text, user_id=user, channel_id=channel), kind="form")
    assert response.status_code == 200, response.text
    # Bolt sends a text-only acknowledgement as the bare text, and one with blocks as JSON.
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else {
        "text": response.text}


def tts_requests(bot: BotHarness) -> list[Any]:
    return [r for r in bot.trtc.requests if r.action == "TextToSpeech"]


def open_home(bot: BotHarness, user: str) -> dict[str, Any]:
    before = (bot.slack.home_views.get(user) or {}).get("hash")
    assert bot.deliver(bot.slack.app_home_opened(user)).status_code == 200
    assert bot.wait(lambda: (bot.slack.home_views.get(user) or {}).get("hash") not in (None, before))
    return bot.slack.home_views[user]


def home_text(view: dict[str, Any]) -> str:
    return json.dumps(view["blocks"])


# -- preview -----------------------------------------------------------------------------------------------------


def test_preview_is_playable_mp3_in_the_thread_after_the_answer(bot, speech_wav, tmp_path):
    started = time.monotonic()
    body, voice_id = clone(bot, speech_wav)
    channel, ts = where(body)
    answered = time.monotonic()
    (upload,) = wait_upload(bot, channel, ts)
    preview_seconds = time.monotonic() - answered
    file = upload["files"][0]
    assert file["name"].endswith("-preview.mp3")
    codec, seconds, rate = probe(bot.slack.file_content(file["id"]), tmp_path)
    assert codec == "mp3" and rate == 24000 and 1.0 < seconds < 15
    # The preview was spoken in the new voice, after the answer that holds the VoiceId.
    (tts,) = tts_requests(bot)
    assert tts.voice["VoiceId"] == voice_id and tts.audio_format == {"Format": "mp3", "SampleRate": 24000}
    order = [m for m in bot.replies(channel, ts)]
    assert order.index(upload) > next(i for i, m in enumerate(order) if voice_id in (m.get("text") or ""))
    # One per-action limiter shared by both clients: each action counts in its own window of TRTC_MAX_RPS.
    assert bot.runtime.voices.tts.limiter is bot.runtime.trtc.limiter
    # Its bytes were kept privately until the upload and then deleted.
    assert not list((Path(bot.settings.data_path) / "speech").iterdir())
    print(f"\nclone answer -> preview in thread: {preview_seconds:.2f} s (drop -> answer {answered - started:.2f} s)")


def test_failed_preview_leaves_the_voice_id_and_explains(bot, speech_wav):
    bot.trtc.fail_next("UnsupportedOperation.InternalError", action="TextToSpeech")
    body, voice_id = clone(bot, speech_wav)
    channel, ts = where(body)
    assert bot.wait(lambda: any("couldn't make a preview" in (m.get("text") or "") for m in bot.replies(channel, ts)))
    bot.drain()
    note = next(m for m in bot.replies(channel, ts) if "couldn't make a preview" in (m.get("text") or ""))
    (tts,) = tts_requests(bot)
    blocks = json.dumps(note["blocks"])
    assert "UnsupportedOperation.InternalError" in blocks and tts.request_id in blocks
    assert "could not speak the text" in blocks and "The voice ID above still works" in blocks
    assert any(voice_id in (m.get("text") or "") for m in bot.replies(channel, ts))
    assert not uploads_in(bot, channel, ts)


def test_flow_01_ex_voice_refused_by_tts_gets_a_clear_sentence(bot, speech_wav):
    bot.trtc.tts_refused_models.add("flow_01_ex")
    body, voice_id = clone(bot, speech_wav, text="model=flow_01_ex")
    channel, ts = where(body)
    assert bot.wait(lambda: any("couldn't make a preview" in (m.get("text") or "") for m in bot.replies(channel, ts)))
    note = next(m for m in bot.replies(channel, ts) if "couldn't make a preview" in (m.get("text") or ""))
    assert "flow_01_turbo" in note["text"] and EX_MODEL.split(",")[0] in note["text"]


# -- say ---------------------------------------------------------------------------------------------------------


def test_clone_say_speaks_the_text_in_that_voice_with_the_options(bot, speech_wav, tmp_path):
    _, voice_id = clone(bot, speech_wav)
    bot.drain()
    bot.trtc.reset()
    ack = command(bot, f'say {voice_id} "Good morning, team" speed=1.5 volume=3 pitch=-2', channel="C0SAY")
    assert "is on it" in ack["text"]
    (upload,) = wait_upload(bot, "C0SAY")
    (tts,) = tts_requests(bot)
    assert tts.text == "Good morning, team"
    assert tts.voice == {"VoiceId": voice_id, "Speed": 1.5, "Volume": 3.0, "Pitch": -2}
    assert "Good morning, team" in upload["text"] and f"<@{OWNER}>" in upload["text"]
    codec, seconds, _ = probe(bot.slack.file_content(upload["files"][0]["id"]), tmp_path)
    assert codec == "mp3" and seconds > 0.5
    # The request was a stored job (a stop cannot lose it; a web replica hands it to a worker), now done.
    bot.drain()
    said = bot.sql("SELECT status, options FROM jobs WHERE kind = 'say' AND channel = ?", ("C0SAY",))
    assert [(row[0], json.loads(row[1])["text"]) for row in said] == [("done", "Good morning, team")]


def test_out_of_range_options_are_refused_before_any_call(bot, speech_wav):
    _, voice_id = clone(bot, speech_wav)
    bot.drain()
    bot.trtc.reset()
    for options, word in (("speed=3", "speed"), ("volume=0", "volume"), ("pitch=1.5", "pitch"), ("pitch=13", "pitch")):
        ack = command(bot, f"say {voice_id} hello {options}")
        assert word in ack["text"], ack
    assert command(bot, f"say {voice_id} {'a' * 3001}")["text"] == "The text must be 1 to 3000 characters."
    assert tts_requests(bot) == []


# Three sentences of 184, 190 and 190 characters: together too long for one TextToSpeech request (255).
LONG_SAY = [
    "The release notes go out on Tuesday at nine, after the links are checked, and the draft waits on the notes page "
    "until then so that everyone can read it once more before Monday morning.",
    "The support team answers every ticket within a day, and anything urgent goes straight to the person on call, "
    "whose name is pinned in the channel together with the phone number and the steps.",
    "On Friday we meet to look back at what went well, what did not, and what we would change next time, so bring "
    "your notes and your questions along. Thanks, everyone, this will be a great week!",
]


def test_clone_say_and_the_form_speak_a_long_text_in_parts_joined_into_one_clip(bot, speech_wav):
    body, voice_id = clone(bot, speech_wav)
    channel, ts = where(body)
    wait_upload(bot, channel, ts)  # the preview
    bot.drain()
    bot.trtc.reset()
    text = " ".join(LONG_SAY)
    assert [len(part) for part in LONG_SAY] == [184, 190, 190] and len(text) == 566
    ack = command(bot, f'say {voice_id} "{text}"', channel="C0LONG")
    assert "is on it" in ack["text"]
    (upload,) = wait_upload(bot, "C0LONG")
    assert sorted(r.text for r in tts_requests(bot)) == sorted(LONG_SAY)
    assert len(bot.slack.calls_to("files.completeUploadExternal")) == 2  # the preview, then this one clip
    # The Say form takes the same length.
    answer = next(m for m in bot.replies(channel, ts) if voice_id in (m.get("text") or ""))
    press(bot, answer, channel, SAY_ACTION)
    (view_id,) = bot.slack.views
    too_long = bot.deliver(bot.slack.view_submission(view_id, OWNER, say_values("a" * 3001)), kind="interactive")
    assert too_long.json() == {"response_action": "errors", "errors": {"text": "Write 1 to 3,000 characters."}}
    ok = bot.deliver(bot.slack.view_submission(view_id, OWNER, say_values(text)), kind="interactive")
    assert ok.status_code == 200 and not ok.content.strip(b"{} ")
    wait_upload(bot, channel, ts, count=2)
    bot.drain()
    assert sorted(r.text for r in tts_requests(bot)) == sorted(LONG_SAY * 2)


def test_nobody_can_say_with_another_users_voice(bot, speech_wav):
    body, voice_id = clone(bot, speech_wav)
    bot.drain()
    bot.trtc.reset()
    # By command: the same answer as for a voice that does not exist.
    refused = command(bot, f"say {voice_id} hi", user=OTHER)["text"]
    assert refused == command(bot, "say nosuchvoice hi", user=OTHER)["text"].replace("nosuchvoice", voice_id)
    # By the answer's button: no form opens for someone else.
    answer = next(m for m in bot.replies(*where(body)) if voice_id in (m.get("text") or ""))
    press(bot, answer, where(body)[0], SAY_ACTION, OTHER)
    assert bot.wait(lambda: any(e.get("user") == OTHER for e in bot.slack.ephemerals()))
    assert bot.slack.calls_to("views.open") == []
    # By a forged form submission carrying the VoiceId.
    view = {"type": "modal", "callback_id": SAY_CALLBACK, "private_metadata": json.dumps({"voice_id": voice_id}),
            "blocks": []}
    response = bot.deliver(bot.slack.view_submission(view, OTHER, say_values("hi")), kind="interactive")
    assert response.json()["response_action"] == "errors"
    bot.drain()
    assert tts_requests(bot) == []


def say_values(text: str, speed: str = "1.0", volume: str = "1", pitch: str = "0") -> dict[str, Any]:
    return {
        "text": {"text": {"type": "plain_text_input", "value": text}},
        "speed": {"speed": {"type": "number_input", "value": speed}},
        "volume": {"volume": {"type": "number_input", "value": volume}},
        "pitch": {"pitch": {"type": "number_input", "value": pitch}},
    }


def press(bot: BotHarness, message: dict[str, Any], channel: str, action: str, user: str = OWNER) -> None:
    payload = block_actions(
        message, channel, action, user, trigger_id=bot.slack.issue_trigger_id(),
        response_url=bot.slack.issue_response_url(), team_id=bot.slack.team_id, api_app_id=bot.slack.app_id,
    )
    assert bot.deliver(payload, kind="interactive").status_code == 200


def test_say_something_button_opens_the_form_and_posts_in_the_thread(bot, speech_wav):
    body, voice_id = clone(bot, speech_wav)
    channel, ts = where(body)
    wait_upload(bot, channel, ts)  # the preview
    answer = next(m for m in bot.replies(channel, ts) if voice_id in (m.get("text") or ""))
    press(bot, answer, channel, SAY_ACTION)
    (view_id,) = bot.slack.views
    # Out-of-range values come back as errors on their fields.
    bad = bot.deliver(bot.slack.view_submission(view_id, OWNER, say_values("x", speed="9", pitch="0.5")),
                      kind="interactive").json()
    assert bad["response_action"] == "errors" and set(bad["errors"]) == {"speed", "pitch"}
    ok = bot.deliver(bot.slack.view_submission(view_id, OWNER, say_values("From the form", "0.8", "2", "3")),
                     kind="interactive")
    assert ok.status_code == 200 and not ok.content.strip(b"{} ")
    uploads = wait_upload(bot, channel, ts, count=2)
    assert "From the form" in uploads[-1]["text"]
    tts = tts_requests(bot)[-1]
    assert tts.text == "From the form" and tts.voice == {"VoiceId": voice_id, "Speed": 0.8, "Volume": 2.0, "Pitch": 3}


@pytest.mark.parametrize("code", [
    "InvalidParameter.Pitch", "InvalidParameter.Speed", "InvalidParameter.Volume", "InvalidParameter.TextLength",
    "InvalidParameter.VoiceId", "InvalidParameter.SampleRate", "MissingParameter.APIKey",
    "UnsupportedOperation.InternalError",
])
def test_every_tts_error_code_gets_its_own_message_with_the_request_id(bot, speech_wav, code):
    from bot.ui.voice_blocks import TTS_MESSAGES

    _, voice_id = clone(bot, speech_wav, channel="C0ERR")
    bot.drain()
    bot.trtc.reset()
    bot.slack.reset()
    bot.trtc.fail_next(code, action="TextToSpeech")
    command(bot, f"say {voice_id} hello", channel="C0ERR")
    assert bot.wait(lambda: bot.slack.ephemerals("C0ERR"))
    (note,) = bot.slack.ephemerals("C0ERR")
    (tts,) = tts_requests(bot)
    assert TTS_MESSAGES[code].split(":")[0] in note["text"] and code in note["text"] and tts.request_id in note["text"]
    assert note.get("user") == OWNER


# -- the library -------------------------------------------------------------------------------------------------


def test_list_and_home_show_the_callers_voices_and_not_another_users(bot, speech_wav):
    _, mine = clone(bot, speech_wav)
    response, body = bot.share(speech_wav, "bob.wav", "audio/wav", "wav", channel="C0VOICES")
    # Someone else's voice: the stand-in's uploader is OWNER, so give this one to OTHER in the library.
    bot.wait_final(*where(body))
    bot.drain()
    theirs = next(m for m in bot.replies(*where(body)) if "Voice cloned" in (m.get("text") or ""))["text"].split()[-1]
    bot.sql("UPDATE voices SET owner = ? WHERE voice_id = ?", (OTHER, theirs))
    listed = json.dumps(command(bot, "list"))
    assert mine in listed and theirs not in listed
    other_list = json.dumps(command(bot, "list", user=OTHER))
    assert theirs in other_list and mine not in other_list
    home = home_text(open_home(bot, OWNER))
    assert mine in home and theirs not in home and "Your voices" in home
    assert theirs in home_text(open_home(bot, OTHER)) and mine not in home_text(bot.slack.home_views[OTHER])


def test_rename_changes_the_label_for_the_owner_only(bot, speech_wav):
    _, voice_id = clone(bot, speech_wav)
    bot.drain()
    assert "You have no voice" in command(bot, f"rename {voice_id} Stolen", user=OTHER)["text"]
    assert "Renamed" in command(bot, f"rename {voice_id} Morning narrator")["text"]
    assert "Morning narrator" in json.dumps(command(bot, "list"))
    # The label names the voice in later commands too.
    assert "Morning narrator" in home_text(open_home(bot, OWNER))


def test_forget_removes_the_voice_from_list_and_home_and_says_tencent_keeps_it(bot, speech_wav):
    _, voice_id = clone(bot, speech_wav)
    bot.drain()
    assert voice_id in home_text(open_home(bot, OWNER))
    assert "You have no voice" in command(bot, f"forget {voice_id}", user=OTHER)["text"]
    ack = command(bot, f"forget {voice_id}", channel="C0FORGET")
    assert NO_DELETE_API in ack["text"] and voice_id in ack["text"]
    # Nothing is gone until the button is pressed.
    assert voice_id in json.dumps(command(bot, "list"))
    press(bot, {"blocks": ack["blocks"], "ts": "1.0"}, "C0FORGET", FORGET_CONFIRM_ACTION)
    assert bot.wait(lambda: bot.slack.ephemerals("C0FORGET"))
    (said,) = bot.slack.ephemerals("C0FORGET")
    assert NO_DELETE_API in said["text"] and voice_id in said["text"]
    assert voice_id not in json.dumps(command(bot, "list"))
    assert voice_id not in home_text(open_home(bot, OWNER))
    assert "You have no voice" in command(bot, f"say {voice_id} hi")["text"]


def test_forget_from_the_home_tab(bot, speech_wav):
    _, voice_id = clone(bot, speech_wav)
    bot.drain()
    open_home(bot, OWNER)
    before = bot.slack.home_views[OWNER]["hash"]
    assert bot.deliver(bot.slack.press_home(OWNER, FORGET_ACTION, voice_id), kind="interactive").status_code == 200
    assert bot.wait(lambda: bot.slack.home_views[OWNER]["hash"] != before)
    assert voice_id not in home_text(bot.slack.home_views[OWNER])


def test_forget_me_removes_all_voices_jobs_and_transcripts_but_keeps_the_audit(bot, speech_wav):
    _, first = clone(bot, speech_wav, text='text="the words I said"')
    _, second = clone(bot, speech_wav)
    bot.drain()
    assert bot.sql("SELECT COUNT(*) FROM jobs WHERE user_id = ?", (OWNER,))[0][0] >= 2
    audit_before = bot.sql("SELECT COUNT(*) FROM audit")[0][0]
    ack = command(bot, "forget-me", channel="C0FORGET")
    press(bot, {"blocks": ack["blocks"], "ts": "1.0"}, "C0FORGET", FORGET_ME_ACTION)
    assert bot.wait(lambda: bot.slack.ephemerals("C0FORGET"))
    said = bot.slack.ephemerals("C0FORGET")[0]["text"]
    assert first in said and second in said and NO_DELETE_API in said
    assert bot.sql("SELECT COUNT(*) FROM jobs WHERE user_id = ?", (OWNER,))[0][0] == 0
    assert bot.sql("SELECT COUNT(*) FROM voices WHERE owner = ?", (OWNER,))[0][0] == 0
    assert "the words I said" not in json.dumps([list(r) for r in bot.sql("SELECT * FROM jobs")])
    assert bot.sql("SELECT COUNT(*) FROM audit")[0][0] == audit_before
    assert "no cloned voices" in command(bot, "list")["text"]


def test_an_admin_may_speak_with_anyones_voice(bot, speech_wav):
    _, voice_id = clone(bot, speech_wav)
    bot.drain()
    bot.trtc.reset()
    assert "is on it" in command(bot, f"say {voice_id} admin check", user=ADMIN)["text"]
    bot.drain()
    assert [r.text for r in tts_requests(bot)] == ["admin check"]


def test_an_admin_of_another_workspace_is_no_admin_here(bot, speech_wav):
    _, voice_id = clone(bot, speech_wav)
    bot.drain()
    bot.trtc.reset()
    assert command(bot, f"say {voice_id} far away", user=FAR_ADMIN)["text"] == (
        f"You have no voice `{voice_id}`. `/clone list` shows yours."
    )
    assert "is on it" in command(bot, f"say {voice_id} scoped check", user=SCOPED_ADMIN)["text"]
    bot.drain()
    assert [r.text for r in tts_requests(bot)] == ["scoped check"]


def test_a_clone_command_without_a_thread_gets_its_preview_under_the_bots_parent_message(bot, speech_wav):
    file = bot.slack.add_file(speech_wav, "memo.wav", "audio/wav", "wav")
    command(bot, f"{file['id']} name=From_command", channel="C0CMD")
    assert bot.wait(lambda: uploads_in(bot, "C0CMD"), 30)
    bot.drain()
    parent = next(m for m in bot.slack.messages("C0CMD") if "asked me to clone" in (m.get("text") or ""))
    (upload,) = uploads_in(bot, "C0CMD")
    assert upload["thread_ts"] == parent["ts"] and upload["files"][0]["name"] == "From_command-preview.mp3"
    # The library knows where that thread is, so Say… from the Home tab speaks there too.
    voice_id = next(m["text"] for m in bot.replies("C0CMD", parent["ts"]) if "Voice cloned" in m["text"]).split()[-1]
    assert bot.deliver(bot.slack.app_home_opened(OWNER)).status_code == 200
    assert bot.wait(lambda: voice_id in json.dumps(bot.slack.home_views.get(OWNER) or {}))
    press_body = bot.slack.press_home(OWNER, SAY_ACTION, voice_id)
    assert bot.deliver(press_body, kind="interactive").status_code == 200
    view_id = next(v for v, view in bot.slack.views.items() if view.get("callback_id") == SAY_CALLBACK)
    bot.deliver(bot.slack.view_submission(view_id, OWNER, say_values("From home")), kind="interactive")
    uploads = wait_upload(bot, "C0CMD", parent["ts"], count=2)
    assert "From home" in uploads[-1]["text"]


def test_a_clip_that_cannot_be_posted_is_deleted_and_orphans_are_swept(bot, speech_wav):
    _, voice_id = clone(bot, speech_wav)
    bot.drain()
    speech_dir = Path(bot.settings.data_path) / "speech"
    bot.slack.remove_bot_from("C0GONE")
    try:
        assert "is on it" in command(bot, f"say {voice_id} nobody hears this", channel="C0GONE")["text"]
        assert bot.wait(lambda: bot.slack.calls_to("files.completeUploadExternal"))
        bot.drain()
    finally:
        bot.slack.add_bot_to("C0GONE")
    assert uploads_in(bot, "C0GONE") == [] and list(speech_dir.iterdir()) == []
    (speech_dir / "left-by-a-crash.mp3").write_bytes(b"ID3")
    assert bot.runtime.voices.sweep() == 1 and list(speech_dir.iterdir()) == []


def test_a_preview_cut_off_by_a_kill_is_made_after_the_restart(tmp_path, speech_wav):
    from support.driving import BotProcess, standins

    with standins() as (slack, trtc), BotProcess(slack, trtc, tmp_path, PREVIEW="on") as process:
        process.start()
        trtc.delay_next(60, action="TextToSpeech")  # the preview's speech is held at Tencent...
        _, body = process.share(speech_wav, "memo.wav", "audio/wav", "wav", channel="C0PREVIEW")
        channel, ts = where(body)
        assert slack.wait_for(lambda: "white_check_mark" in slack.reactions(channel, ts), 30)
        assert trtc.wait_for_requests(2, 10) and trtc.requests[-1].action == "TextToSpeech"
        process.kill()  # ...when the bot is killed: no preview was stored anywhere but in the bot's intent
        assert not previews(slack, channel, ts)
        process.start()
        assert slack.wait_for(lambda: previews(slack, channel, ts), 30)
        process.terminate()
    uploads = previews(slack, channel, ts)
    assert len(uploads) == 1 and uploads[0]["files"][0]["name"].endswith("-preview.mp3")
    assert [r.action for r in trtc.requests].count("VoiceClone") == 1  # the voice itself was not cloned again


def previews(slack, channel: str, ts: str) -> list[dict[str, Any]]:
    """Files the bot posted in the thread (not the shared recording itself)."""
    return [m for m in slack.thread(channel, ts) if m.get("files") and m["ts"] != ts]
