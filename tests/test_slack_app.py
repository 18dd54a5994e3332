"""The Slack app, driven over HTTP exactly as Slack drives it, against the Slack and TRTC stand-ins."""

from __future__ import annotations

import json
import time

import pytest
from support.expected_text import is_slack_sentence
from support.harness import SIGNING_SECRET, BotHarness
from support.media import make_video

from bot.testing.standin_slack import post_signed
from bot.ui.texts import API_MESSAGES

CHANNEL = "C0GENERAL"





@pytest.fixture(scope="module")
def speech_wav(media):
    return media.speech(15, ".wav").read_bytes()


def _reply_text(bot: BotHarness, ts: str) -> str:
    replies = bot.replies(CHANNEL, ts)
    assert len(replies) == 1, replies
    message = replies[0]
    return message["text"] + "\n" + json.dumps(message.get("blocks", []))


FORMATS = [
    ("Voice Memo 12.m4a", "audio/x-m4a", "m4a", (".m4a", "-c:a", "aac", "-b:a", "48k")),
    ("song.mp3", "audio/mpeg", "mp3", (".mp3", "-c:a", "libmp3lame", "-b:a", "64k")),
    ("clip.ogg", "audio/ogg", "ogg", (".ogg", "-c:a", "libopus", "-b:a", "24k")),
    ("audio_message.webm", "audio/webm", "webm", (".webm", "-c:a", "libopus", "-b:a", "24k")),
    ("take.flac", "audio/flac", "flac", (".flac", "-sample_fmt", "s32", "-ar", "96000")),
    ("raw.wav", "audio/wav", "wav", (".wav", "-ar", "44100", "-ac", "2")),
    # Slack's mobile voice clips arrive labelled video/mp4 with no video track.
    ("audio_message.mp4", "video/mp4", "mp4", (".mp4", "-c:a", "aac", "-b:a", "48k")),
]


@pytest.mark.parametrize(("name", "mimetype", "filetype", "encoding"), FORMATS, ids=[f[0] for f in FORMATS])
def test_share_in_each_format_is_answered_in_its_thread(bot, media, name, mimetype, filetype, encoding):
    content = media.speech(15, *encoding).read_bytes()
    extra = {"subtype": "slack_audio"} if name.startswith("audio_message") else {}
    response, body = bot.share(content, name, mimetype, filetype, file_extra=extra)
    assert response.status_code == 200
    ts = body["event"]["ts"]
    assert bot.wait_final(CHANNEL, ts) == "white_check_mark"
    [request] = bot.trtc.requests
    assert request.sample_rate == 16000 and request.channels == 1
    assert 14.5 < request.audio_seconds < 15.5
    text = _reply_text(bot, ts)
    voice_id = text.split("\n")[0].removeprefix("Voice cloned: ")
    assert voice_id.startswith(request.voice_name + "_")
    assert f"`{voice_id}`" in text
    assert bot.slack.reactions(CHANNEL, ts) == ["white_check_mark"]


def test_video_file_share_uses_its_audio_track(bot, media, tmp_path):
    speech = media.speech(15, ".wav")
    video = make_video(tmp_path / "IMG_0001.MOV", 12, speech)
    _, body = bot.share(video.read_bytes(), "IMG_0001.MOV", "video/quicktime", "mov")
    assert bot.wait_final(CHANNEL, body["event"]["ts"]) == "white_check_mark"
    assert bot.trtc.requests[0].voice_name == "IMG_0001"


def test_share_inside_a_thread_answers_in_that_thread(bot, speech_wav):
    parent = "1700000000.000100"
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", thread_ts=parent)
    share_ts = body["event"]["ts"]
    assert bot.wait_final(CHANNEL, share_ts) == "white_check_mark"
    posts = bot.slack.calls_to("chat.postMessage")
    assert posts and all(p["thread_ts"] == parent for p in posts)


def test_options_in_the_message_reach_the_api(bot, speech_wav):
    text = 'here you go model=flow_01_ex text="Hello, this is me." lang=ja name=Alice_2'
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", text=text)
    assert bot.wait_final(CHANNEL, body["event"]["ts"]) == "white_check_mark"
    [request] = bot.trtc.requests
    assert (request.voice_name, request.model, request.language) == ("Alice_2", "flow_01_ex", "ja")
    assert request.prompt_text == "Hello, this is me."


def test_bad_option_is_explained_without_calling_the_api(bot, speech_wav):
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", text="model=gpt-5")
    ts = body["event"]["ts"]
    assert bot.wait_final(CHANNEL, ts) == "x"
    assert "flow_01_turbo" in _reply_text(bot, ts)
    assert bot.trtc.requests == []


def test_pdf_in_a_channel_is_ignored_silently(bot):
    response, body = bot.share(b"%PDF-1.7\n...", "report.pdf", "application/pdf", "pdf")
    assert response.status_code == 200
    bot.drain()
    assert not bot.slack.calls_to("chat.postMessage")
    assert not bot.slack.calls_to("reactions.add")


def test_pdf_in_a_dm_gets_a_one_line_hint(bot):
    dm = "D0DIRECT"
    _, body = bot.share(b"%PDF-1.7\n", "report.pdf", "application/pdf", "pdf", channel=dm, channel_type="im")
    assert bot.wait(lambda: bot.slack.calls_to("chat.postMessage"), 10)
    [post] = bot.slack.calls_to("chat.postMessage")
    assert post["channel"] == dm and "report.pdf" in post["text"] and "audio" in post["text"]


def test_other_message_events_get_200(bot):
    body = bot.slack.user_message(CHANNEL, text="just chatting", subtype=None)
    assert bot.deliver(body).status_code == 200
    edited = bot.slack.user_message(CHANNEL, text="edit", subtype="message_changed")
    assert bot.deliver(edited).status_code == 200


def test_login_page_is_explained_naming_files_read(bot, speech_wav):
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", file_extra={"visible_to_bot": False})
    ts = body["event"]["ts"]
    assert bot.wait_final(CHANNEL, ts) == "x"
    assert "files:read" in _reply_text(bot, ts)
    assert bot.trtc.requests == []


@pytest.mark.parametrize("code", sorted(API_MESSAGES))
def test_each_api_error_gets_its_own_message_with_request_id(bot, speech_wav, code):
    bot.trtc.fail_next(code, times=10)
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav")
    ts = body["event"]["ts"]
    assert bot.wait_final(CHANNEL, ts) == "x"
    request_id = bot.trtc.requests[-1].request_id
    assert request_id
    [reply] = bot.replies(CHANNEL, ts)
    head, sentence = reply["text"].split(": ", 1)
    assert head == "Could not clone memo.wav"
    sentence, rid = sentence.rsplit(" (RequestId: ", 1)
    assert rid == f"{request_id})"
    assert is_slack_sentence(code, sentence), (code, sentence)
    [section] = reply["blocks"]
    assert section["text"]["text"] == f":x: *Could not clone* `memo.wav`\n{sentence} (RequestId: {request_id})"


def test_clone_help_is_ephemeral_and_fast(bot):
    command = bot.slack.slash_command(text="help")
    started = time.monotonic()
    response = bot.deliver(command, kind="form")
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and elapsed < 3
    answer = response.json()
    assert answer.get("response_type", "ephemeral") == "ephemeral"
    assert "/clone" in json.dumps(answer)


def test_bare_clone_opens_the_modal_and_submitting_it_clones(bot, speech_wav):
    command = bot.slack.slash_command(text="", channel_id=CHANNEL)
    assert bot.deliver(command, kind="form").status_code == 200
    [opened] = bot.slack.calls_to("views.open")
    view_id = next(iter(bot.slack.views))
    view = bot.slack.views[view_id]
    assert view["callback_id"] == "clone_modal"
    assert {b["block_id"] for b in view["blocks"]} >= {"audio", "name", "consent"}
    assert opened["trigger_id"] == command["trigger_id"]

    file = bot.slack.add_file(speech_wav, "interview.wav", "audio/wav", "wav")
    values = {
        "audio": {"audio": {"type": "file_input", "files": [file]}},
        "name": {"name": {"type": "plain_text_input", "value": "Interview_Voice"}},
        "text": {"text": {"type": "plain_text_input", "value": None}},
        "language": {"language": {"type": "static_select", "selected_option": {"value": "en"}}},
        "model": {"model": {"type": "static_select", "selected_option": None}},
        "consent": {"consent": {"type": "checkboxes", "selected_options": [{"value": "yes"}]}},
    }
    submission = bot.slack.view_submission(view_id, values=values)
    response = bot.deliver(submission, kind="interactive")
    assert response.status_code == 200 and not response.content.strip(b"{} ")
    assert bot.wait(lambda: any(r.voice_name == "Interview_Voice" for r in bot.trtc.requests), 30)
    bot.drain()
    parent = bot.slack.calls_to("chat.postMessage")[0]
    assert parent["channel"] == CHANNEL and "thread_ts" not in parent
    messages = bot.slack.messages(CHANNEL)
    final = [m for m in messages if m.get("thread_ts") and "Voice cloned" in m["text"]]
    assert final and "Interview_Voice_" in final[0]["text"]


def test_modal_without_consent_is_refused_inline(bot, speech_wav):
    command = bot.slack.slash_command(text="", channel_id=CHANNEL)
    bot.deliver(command, kind="form")
    view_id = next(iter(bot.slack.views))
    file = bot.slack.add_file(speech_wav, "x.wav", "audio/wav", "wav")
    values = {
        "audio": {"audio": {"type": "file_input", "files": [file]}},
        "name": {"name": {"type": "plain_text_input", "value": "bad name!"}},
        "consent": {"consent": {"type": "checkboxes", "selected_options": []}},
    }
    response = bot.deliver(bot.slack.view_submission(view_id, values=values), kind="interactive")
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert set(answer["errors"]) == {"consent", "name"}
    bot.drain()
    assert bot.trtc.requests == []


def test_clone_with_a_file_link_clones_that_file(bot, speech_wav):
    file = bot.slack.add_file(speech_wav, "old_memo.wav", "audio/wav", "wav")
    command = bot.slack.slash_command(text=f"<{file['permalink']}> name=From_Link", channel_id=CHANNEL)
    response = bot.deliver(command, kind="form")
    assert response.status_code == 200 and file["id"] in response.text
    assert bot.wait(lambda: len(bot.trtc.requests) == 1, 30)
    bot.drain()
    assert bot.trtc.requests[0].voice_name == "From_Link"
    assert bot.slack.calls_to("files.info")


def test_clone_with_nonsense_gets_usage(bot):
    response = bot.deliver(bot.slack.slash_command(text="please do it"), kind="form")
    assert response.status_code == 200
    assert "file link" in response.text and "/clone help" in response.text


def test_bad_signature_is_401(bot):
    body = bot.slack.user_message(CHANNEL, text="hi", subtype=None)
    response = post_signed(bot.url, body, signing_secret="not-the-secret")
    assert response.status_code == 401


def test_stale_timestamp_is_401(bot):
    body = bot.slack.user_message(CHANNEL, text="hi", subtype=None)
    response = post_signed(bot.url, body, signing_secret=SIGNING_SECRET, timestamp=int(time.time()) - 600)
    assert response.status_code == 401


def test_healthz(bot):
    assert bot.http.get(f"http://127.0.0.1:{bot.port}/healthz").json() == {"ok": True}
