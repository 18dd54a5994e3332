"""TextToSpeech: the client and the stand-in (validation, real audio of each format), the CLI (`say`, `voices`),
the TTS error sentences and the voice Block Kit against Slack's limits."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View
from support.harness import APP_ID, SECRET_ID, SECRET_KEY
from support.media import ffmpeg_exe
from tencentcloud.trtc.v20190722 import models

from bot.__main__ import main
from bot.errors import ApiError
from bot.settings import load_settings
from bot.store.database import SqliteDatabase
from bot.store.library import VoiceLibrary, VoiceRecord
from bot.tencent.tts import SpeechParamError, TextToSpeechClient, Voice
from bot.testing.standin_trtc import TrtcStandIn
from bot.ui.voice_blocks import (
    EX_MODEL,
    TTS_MESSAGES,
    build_forget_confirm,
    build_forget_me_confirm,
    build_home,
    build_preview_failed,
    build_rename_modal,
    build_say_modal,
    build_voice_list,
    describe_tts_error,
    read_say_form,
)


@pytest.fixture(scope="module")
def trtc():
    with TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID) as standin:
        yield standin


@pytest.fixture
def env(trtc, monkeypatch, tmp_path):
    trtc.reset()
    monkeypatch.chdir(tmp_path)
    values = {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
              "TRTC_SDK_APP_ID": str(APP_ID), "TRTC_ENDPOINT": trtc.url, "TRTC_TIMEOUT": "5",
              "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.store.database'}"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def speak(env, text: str, voice: Voice, **kw):
    async def go():
        client = TextToSpeechClient(load_settings(environ=env))
        try:
            return await client.speak(text, voice, **kw)
        finally:
            await client.aclose()

    return asyncio.run(go())


def decode(data: bytes, tmp_path, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, text=True, check=True).stderr


@pytest.mark.parametrize(("fmt", "rate", "codec"), [("mp3", 24000, "mp3"), ("wav", 16000, "pcm_s16le")])
def test_real_audio_of_the_asked_format(env, trtc, tmp_path, fmt, rate, codec):
    trtc.voices["v_fmt"] = "flow_01_turbo"
    speech = speak(env, "Testing one two three.", Voice("v_fmt"), fmt=fmt, sample_rate=rate)
    info = decode(speech.audio, tmp_path, f"a.{fmt}")
    assert f"Audio: {codec}" in info and f"{rate} Hz" in info and speech.duration_ms > 500
    assert trtc.requests[-1].audio_format == {"Format": fmt, "SampleRate": rate}


def test_pcm_is_raw_16_bit_at_the_rate(env, trtc):
    trtc.voices["v_pcm"] = "flow_01_turbo"
    speech = speak(env, "Raw samples.", Voice("v_pcm"), fmt="pcm", sample_rate=16000)
    assert abs(len(speech.audio) / 2 / 16000 * 1000 - speech.duration_ms) < 5


@pytest.mark.parametrize(("text", "voice", "field"), [
    ("", Voice("v"), "text"), ("x" * 256, Voice("v"), "text"), ("hi", Voice("v", speed=2.1), "speed"),
    ("hi", Voice("v", volume=0), "volume"), ("hi", Voice("v", volume=10.5), "volume"),
    ("hi", Voice("v", pitch=13), "pitch"),
])
def test_out_of_range_is_refused_before_any_request(env, trtc, text, voice, field):
    with pytest.raises(SpeechParamError) as caught:
        speak(env, text, voice)
    assert caught.value.field == field and trtc.requests == []


def test_stand_in_refuses_unknown_voices_and_bad_sample_rates(env, trtc):
    with pytest.raises(ApiError) as unknown:
        speak(env, "hello", Voice("nobody_1234"))
    assert unknown.value.code == "InvalidParameter.VoiceId" and unknown.value.request_id
    trtc.voices["v_rate"] = "flow_01_turbo"
    with pytest.raises(SpeechParamError):  # the client refuses it before asking
        speak(env, "hello", Voice("v_rate"), sample_rate=8000)

    async def raw(rate: int, text: str) -> str:
        client = TextToSpeechClient(load_settings(environ=env))
        request = models.TextToSpeechRequest()
        request.from_json_string(json.dumps({"SdkAppId": APP_ID, "Text": text, "Voice": {"VoiceId": "v_rate"},
                                             "AudioFormat": {"Format": "mp3", "SampleRate": rate}}))
        try:
            await client._attempt(request)
        except ApiError as exc:
            return exc.code
        finally:
            await client.aclose()
        return "ok"

    assert asyncio.run(raw(8000, "hello")) == "InvalidParameter.SampleRate"
    assert asyncio.run(raw(16000, "x" * 256)) == "InvalidParameter.TextLength"
    assert asyncio.run(raw(16000, "fine")) == "ok"


def test_transient_errors_are_retried_and_the_limiter_paces_them(env, trtc):
    trtc.voices["v_retry"] = "flow_01_turbo"
    trtc.fail_next("InternalError", action="TextToSpeech")
    speech = speak(env, "After one failure.", Voice("v_retry"))
    assert [r.outcome for r in trtc.requests] == ["InternalError", "ok"] and speech.audio


def test_cli_say_writes_playable_mp3(env, trtc, tmp_path, capsys):
    trtc.voices["alice_cli"] = "flow_01_turbo"
    assert main(["say", "alice_cli", "Hello from the command line", "-o", str(tmp_path / "out.mp3")]) == 0
    assert "RequestId" in capsys.readouterr().out
    assert "Audio: mp3" in decode((tmp_path / "out.mp3").read_bytes(), tmp_path, "copy.mp3")
    assert trtc.requests[-1].text == "Hello from the command line"
    assert main(["say", "nobody", "hi", "-o", str(tmp_path / "no.mp3")]) == 1
    assert "voice" in capsys.readouterr().err.lower()
    assert main(["say", "alice_cli", "hi", "--pitch", "20"]) == 2


def test_cli_voices_lists_the_library_by_user(env, tmp_path, capsys):
    db = SqliteDatabase(tmp_path / "bot.store.database")
    library = VoiceLibrary(db)
    for owner, voice_id in (("U1", "a_1"), ("U2", "b_2")):
        asyncio.run(library.add(VoiceRecord("T1", voice_id, voice_id[0], owner, time.time(), "f.m4a", 12.0)))
    db.close()
    assert main(["voices"]) == 0
    out = capsys.readouterr().out
    assert "a_1" in out and "b_2" in out
    assert main(["voices", "--user", "U2", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [v["voice_id"] for v in lines] == ["b_2"]


# -- messages and blocks -----------------------------------------------------------------------------------------

TTS_CODES = ["InvalidParameter.Pitch", "InvalidParameter.Speed", "InvalidParameter.Volume",
             "InvalidParameter.TextLength", "InvalidParameter.VoiceId", "InvalidParameter.SampleRate",
             "MissingParameter.APIKey"]


def test_every_tts_code_has_its_own_sentence():
    sentences = {describe_tts_error(ApiError(code, "x", "rid"), "flow_01_turbo") for code in TTS_CODES}
    assert len(sentences) == len(TTS_CODES) and all(code in TTS_MESSAGES for code in TTS_CODES)
    assert describe_tts_error(ApiError("InvalidParameter.VoiceId", "x"), "flow_01_ex") == EX_MODEL


def voice(n: int, **kw) -> VoiceRecord:
    return VoiceRecord("T1", f"voice_{n:04d}", f"voice_{n}", "U1", time.time(), "memo.m4a", 30.5, "flow_01_turbo",
                       "en", "C1", "1700000000.000100", "rid", **kw)


@pytest.mark.parametrize("count", [0, 1, 200])
def test_voice_blocks_are_within_slacks_limits(count):
    voices = [voice(n, label="L" * 80 if n % 2 else None) for n in range(count)]
    View(**build_home(voices)).validate_json()
    _, blocks = build_voice_list(voices)
    assert len(blocks) <= 50
    for block in blocks:
        Block.parse(block).validate_json()
    if voices:
        View(**build_say_modal(voices[0], "C1", "1.2")).validate_json()
        View(**build_rename_modal(voices[0])).validate_json()
        for block in build_forget_confirm(voices[0])[1] + build_forget_me_confirm(voices)[1]:
            Block.parse(block).validate_json()
    for block in build_preview_failed("x" * 4000, "Code", "rid")[1]:
        Block.parse(block).validate_json()


def test_say_form_reads_and_validates_values():
    view = build_say_modal(voice(1), "C1", "1.2")
    view["state"] = {"values": {"text": {"text": {"value": "hi"}}, "speed": {"speed": {"value": "2.5"}},
                                "pitch": {"pitch": {"value": "-3"}}}}
    values, errors = read_say_form(view)
    assert errors == {"speed": "Between 0.5 and 2.0."} and values["pitch"] == -3 and values["volume"] == 1.0
    assert values["voice_id"] == "voice_0001" and values["channel"] == "C1"
