"""TextToSpeech: the client and the stand-in (validation, real audio of each format), long texts (cut into parts,
spoken, joined into one mp3), the CLI (`say`, `voices`), the TTS error sentences and the voice Block Kit against
Slack's limits."""

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
from bot.tencent.tts import (
    MAX_LONG_TEXT,
    Speech,
    SpeechParamError,
    TextToSpeechClient,
    Voice,
    check_long_text,
    split_text,
)
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
from bot.voice.joining import PAUSE_MS, join_speech, speak_long


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


# -- long texts: cut into parts of at most 255 characters, spoken, joined into one mp3 ------------------------------


def test_a_short_text_is_one_part_with_its_whitespace_evened():
    assert split_text("  Good morning,\n\n   team!  ") == ["Good morning, team!"]
    assert split_text("x" * 255) == ["x" * 255]
    assert split_text("") == [] and split_text(" \n ") == []


def test_sentences_are_packed_into_parts_and_cut_only_at_their_ends():
    sentence = "The quick brown fox jumps over the lazy dog. "  # 45 characters with its space
    parts = split_text(sentence * 12)
    assert parts == [(sentence * 5).strip(), (sentence * 5).strip(), (sentence * 2).strip()]
    assert [len(p) for p in parts] == [224, 224, 89]
    # ! ? … and a closing quote end sentences too; a full stop inside a number or a name does not.
    text = "Is it 3.5 m long? " * 10 + "He said “it is!” " * 8 + "Wait… " * 3
    assert split_text(text) == [("Is it 3.5 m long? " * 10 + "He said “it is!” " * 4).strip(),
                                ("He said “it is!” " * 4 + "Wait… " * 3).strip()]


def test_a_sentence_longer_than_a_request_is_cut_at_its_commas_then_its_spaces():
    clauses = ", ".join(f"item number {n:02d} is on the list" for n in range(12)) + "."  # 371 characters
    parts = split_text(clauses)
    assert [len(p) for p in parts] == [247, 123]
    assert parts[0].endswith("item number 07 is on the list,") and parts[1].startswith("item number 08")
    words = " ".join(["abcdefghij"] * 60)  # one 659-character sentence without a comma
    assert [len(p) for p in split_text(words)] == [252, 252, 153]
    assert [len(p) for p in split_text("x" * 600)] == [255, 255, 90]  # no space at all: cut at 255
    assert " ".join(split_text(clauses)) == clauses and " ".join(split_text(words)) == words


def test_cjk_text_is_cut_at_its_own_full_stops_and_joined_without_spaces():
    parts = split_text("你好。" * 100)
    assert parts == ["你好。" * 85, "你好。" * 15]


@pytest.mark.parametrize("seed", range(20))
def test_no_part_is_ever_over_255_characters_and_nothing_is_lost(seed):
    import random

    rng = random.Random(seed)
    alphabet = ["word", "a", "sentence.", "comma,", "why?", "x" * rng.randint(1, 400), "\n", "  ", "你好。", "—"]
    text = " ".join(rng.choice(alphabet) for _ in range(rng.randint(1, 700)))
    parts = split_text(text)
    assert all(1 <= len(p) <= 255 for p in parts)
    assert "".join("".join(parts).split()) == "".join(text.split())


def test_texts_over_3000_characters_are_refused():
    assert MAX_LONG_TEXT == 3000
    assert check_long_text(" y" * 1500) == "y " * 1499 + "y"  # 2,999 characters once evened
    with pytest.raises(SpeechParamError) as caught:
        check_long_text("z" * 3001)
    assert (caught.value.field, caught.value.value, caught.value.allowed) == ("text", 3001, "1 to 3000 characters")


def long_speech(env, text: str, voice: Voice):
    async def go():
        client = TextToSpeechClient(load_settings(environ=env))
        try:
            return await speak_long(client, text, voice, language="en")
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_speak_long_speaks_each_part_and_joins_them_into_one_mp3(env, trtc, tmp_path):
    trtc.voices["v_long"] = "flow_01_turbo"
    text = "The quick brown fox jumps over the lazy dog. " * 13  # 584 characters: 224 + 224 + 134
    speech = long_speech(env, text, Voice("v_long", speed=1.25, volume=2))
    requests = trtc.requests_of("TextToSpeech")
    assert sorted(len(r.text) for r in requests) == [134, 224, 224]
    assert all(r.audio_format == {"Format": "wav", "SampleRate": 24000} and r.language == "en" for r in requests)
    assert all(r.voice == {"VoiceId": "v_long", "Speed": 1.25, "Volume": 2.0, "Pitch": 0} for r in requests)
    # One mp3 as long as the parts (the stand-in: 0.065 s a character at speed 1, give or take its decoder's frame
    # per part) and two 150 ms pauses.
    expected = sum(0.065 * n / 1.25 for n in (224, 224, 134)) + 0.3
    assert expected == pytest.approx(30.564)
    assert speech.format == "mp3" and speech.sample_rate == 24000
    assert speech.duration_ms == pytest.approx(expected * 1000, abs=60)
    info = decode(speech.audio, tmp_path, "long.mp3")
    assert "Audio: mp3" in info and "24000 Hz" in info and "mono" in info
    assert speech.request_id in {r.request_id for r in requests}


def test_speak_long_of_a_short_text_is_the_one_request_speak_makes(env, trtc):
    trtc.voices["v_short"] = "flow_01_turbo"
    speech = long_speech(env, "Just one line.", Voice("v_short"))
    (request,) = trtc.requests_of("TextToSpeech")
    assert request.text == "Just one line." and request.audio_format == {"Format": "mp3", "SampleRate": 24000}
    assert speech.format == "mp3" and speech.request_id == request.request_id


def test_a_refused_part_stops_the_long_text_with_its_request_id(env, trtc):
    trtc.voices["v_fail"] = "flow_01_turbo"
    trtc.fail_next("InvalidParameter.VoiceId", action="TextToSpeech")
    with pytest.raises(ApiError) as caught:
        long_speech(env, "One sentence here. " * 40, Voice("v_fail"))
    assert caught.value.code == "InvalidParameter.VoiceId"
    assert caught.value.request_id in {r.request_id for r in trtc.requests_of("TextToSpeech")}
    # Checked before any request: a bad knob or an over-long text costs nothing. (Parts of the text above that were
    # on the wire when the refusal came may still reach the stand-in after it: only these texts are looked for.)
    for text, voice in (("Fine. " * 100, Voice("v_fail", speed=3)), ("z" * 3001, Voice("v_fail"))):
        with pytest.raises(SpeechParamError):
            long_speech(env, text, voice)
    asked = [r.text or "" for r in trtc.requests_of("TextToSpeech")]
    assert asked and all(text.startswith("One sentence here.") for text in asked)


def test_parts_of_every_format_join_in_order_with_the_bots_own_ffmpeg(monkeypatch, tmp_path):
    from pydub import AudioSegment

    from bot.testing.speech import synthesize
    from bot.voice.audio import find_ffmpeg

    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg on PATH: pydub must be given the bot's own
    parts = []
    for n, fmt in enumerate(("wav", "pcm", "mp3")):
        audio, millis = synthesize("Part number one." if n == 0 else "The next part!", fmt, 24000)
        parts.append(Speech(audio, fmt, 24000, millis, f"rid-{fmt}"))
    joined = join_speech(parts)
    assert AudioSegment.converter == find_ffmpeg()
    assert joined.format == "mp3" and joined.request_id == "rid-wav" and joined.sample_rate == 24000
    # wav and pcm decode exactly; the mp3 part within its encoder's padding.
    assert joined.duration_ms == pytest.approx(sum(p.duration_ms for p in parts) + 2 * PAUSE_MS, abs=60)
    assert "Audio: mp3" in decode(joined.audio, tmp_path, "joined.mp3")


def test_an_unreadable_part_is_an_unexpected_answer_with_its_request_id():
    good = Speech(b"\0\0" * 2400, "pcm", 24000, 100, "rid-good")
    with pytest.raises(ApiError) as caught:
        join_speech([good, Speech(b"RIFF nonsense", "wav", 24000, 100, "rid-bad")])
    assert caught.value.code == "UnexpectedResponse" and caught.value.request_id == "rid-bad"
