"""The prompt is made of the recording's best speech, and the report card says what was found.

Real recordings made here with espeak-ng and ffmpeg: long pauses, speech after 100 s of hum, quiet, clipped,
noisy, mostly noise, too little speech, clean. Expected values come from how each recording was built and
from the sent WAV measured here (frame levels with the array module), never from bot.voice.analysis itself.
"""

from __future__ import annotations

import array
import json
import math
import re
from pathlib import Path

import pytest
from support.harness import BotHarness
from support.media import MediaCache, add_noise, make_speech_with, read_wav, run_ffmpeg, set_peak

import bot.testing.standin_trtc as trtc_standin
from bot.ui.job_blocks import build_report_card, build_success
from bot.ui.texts import describe
from bot.voice.analysis import AudioReport, NotEnoughSpeechError, TooNoisyError
from bot.voice.audio import prepare_audio
from bot.voice.pipeline import CloneResult
from bot.voice.report_card import report_lines

FRAME = 480  # 30 ms at 16 kHz


def frame_levels(wav: bytes) -> list[float]:
    """RMS of each 30 ms frame of a 16 kHz s16 WAV, in dBFS."""
    samples = array.array("h", wav[44:])
    levels = []
    for start in range(0, len(samples) - FRAME + 1, FRAME):
        energy = sum(v * v for v in samples[start : start + FRAME]) / FRAME
        levels.append(10 * math.log10(max(energy, 1e-3) / 32768**2))
    return levels


def longest_run_below(levels: list[float], dbfs: float) -> float:
    """Seconds of the longest run of frames quieter than `dbfs`."""
    best = run = 0
    for level in levels:
        run = run + 1 if level < dbfs else 0
        best = max(best, run)
    return best * FRAME / 16000


def peak_dbfs(wav: bytes) -> float:
    samples = array.array("h", wav[44:])
    peak = max(max(samples), -min(samples))
    return 20 * math.log10(peak / 32768)


def source(media: MediaCache) -> Path:
    return media.speech(300)  # the shipped speech (its own pauses are short), looped: enough for every recording


def recording(media: MediaCache, name: str, parts: list[tuple[str, float]]) -> Path:
    return media.get(name, lambda p: make_speech_with(p, source(media), parts, "-c:a", "pcm_s16le"))


async def test_long_pauses_are_shortened_and_every_word_kept(media: MediaCache) -> None:
    parts = [("silence", 4), ("speech", 10), ("silence", 5), ("speech", 10), ("silence", 6), ("speech", 10)]
    path = recording(media, "pauses.wav", parts)  # 45 s, 30 s of it talk
    result = await prepare_audio(path)
    seconds = read_wav(result.wav).seconds
    assert 27 <= seconds <= 31.5  # the 30 s of talk plus three short pauses at most
    assert longest_run_below(frame_levels(result.wav), -70) <= 0.8  # no long pause is left
    assert not result.trimmed and result.report.dropped_speech_seconds == 0
    assert result.report.silence_removed >= 13
    assert re.fullmatch(r"Sent (2[7-9]|3[01]) s of the 45 s recording · silence and long pauses cut.*",
                        report_lines(result.report)[0])  # fmt: skip


async def test_speech_after_room_hum_is_found(media: MediaCache) -> None:
    # 100 s of hum, then 150 s of talk: the first 180 s would be mostly hum.
    path = recording(media, "late-start.wav", [("hum", 100), ("speech", 150)])
    result = await prepare_audio(path)
    report = result.report
    assert report.window_start == pytest.approx(100, abs=1.0)
    assert 140 <= read_wav(result.wav).seconds <= 151
    levels = frame_levels(result.wav)
    # The hum (steady at about -30 dBFS before levelling) is not what starts the prompt: speech does.
    assert max(levels[: round(1.0 / 0.03)]) > -30
    assert not result.trimmed


async def test_quiet_speech_is_brought_to_a_steady_level(media: MediaCache) -> None:
    clean = recording(media, "clean.wav", [("speech", 30)])
    quiet = media.get("quiet-30s.wav", lambda p: set_peak(clean, p, -40.0))
    result = await prepare_audio(quiet)
    assert result.gain_db > 15
    peak = peak_dbfs(result.wav)
    assert peak <= -0.95  # never clipped by the gain
    speech = [level for level in frame_levels(result.wav) if level > peak - 40]
    rms = 10 * math.log10(sum(10 ** (level / 10) for level in speech) / len(speech))
    assert rms == pytest.approx(-20, abs=1.5) or peak == pytest.approx(-1, abs=0.3)
    assert any("level raised" in line for line in report_lines(result.report))


async def test_clipping_is_named(media: MediaCache) -> None:
    clean = recording(media, "clean.wav", [("speech", 30)])
    clipped = media.get("clipped.wav", lambda p: run_ffmpeg("-i", clean, "-af", "volume=15dB", "-c:a", "pcm_s16le", p))
    result = await prepare_audio(clipped)
    assert result.report.clipped_share > 0.05
    lines = report_lines(result.report)
    assert any(line.startswith("Clipping in") for line in lines[1:])
    assert peak_dbfs(result.wav) <= -0.95


def noisy(media: MediaCache) -> Path:
    clean = recording(media, "clean.wav", [("speech", 30)])
    return media.get("noisy.wav", lambda p: add_noise(clean, p, 0.06, "-c:a", "pcm_s16le"))


async def test_noise_is_named_and_reduced_by_default(media: MediaCache) -> None:
    plain = await prepare_audio(noisy(media), denoise=False)
    cleaned = await prepare_audio(noisy(media))
    assert plain.report.noisy and not plain.report.denoised and plain.report.denoise_suggested
    assert cleaned.report.denoised
    assert any("denoise=on" in line for line in report_lines(plain.report))
    assert any("I reduced it" in line for line in report_lines(cleaned.report))

    # Denoising lowers the noise in the pauses relative to the speech: the quiet frames drop further.
    def spread(wav: bytes) -> float:
        levels = sorted(frame_levels(wav))
        return levels[len(levels) * 9 // 10] - levels[len(levels) // 10]

    assert spread(cleaned.wav) > spread(plain.wav) + 6


async def test_mostly_noise_is_refused_as_noisy_not_silent(media: MediaCache) -> None:
    clean = recording(media, "clean.wav", [("speech", 30)])
    loud = media.get("mostly-noise.wav", lambda p: add_noise(clean, p, 0.9, "-c:a", "pcm_s16le"))
    with pytest.raises(TooNoisyError) as caught:
        await prepare_audio(loud)
    assert caught.value.peak_dbfs > -1  # the loudest moment is full scale: not "too quiet"
    message = describe(caught.value)
    assert "mostly background noise" in message and "silent" not in message


async def test_too_little_speech_says_how_much_was_found(media: MediaCache) -> None:
    path = recording(media, "little.wav", [("speech", 6), ("silence", 20)])
    with pytest.raises(NotEnoughSpeechError) as caught:
        await prepare_audio(path)
    assert 4 <= caught.value.seconds <= 6.2
    message = describe(caught.value)
    assert re.search(r"only [4-6](\.\d)? seconds of speech", message)
    assert "26-second recording" in message
    # The operator's one-line form names both lengths, each for what it is.
    expected = r"[4-6]\.\d s of speech found in a 26\.0 s recording, minimum 10 s of speech"
    assert re.fullmatch(expected, str(caught.value))


async def test_a_clean_recording_gets_no_warning(media: MediaCache) -> None:
    result = await prepare_audio(recording(media, "clean.wav", [("speech", 30)]))
    assert report_lines(result.report)[1:] == []
    card = json.dumps(build_report_card(result.report))
    assert ":warning:" not in card and "Sent all 30 s of the recording" in card


def test_an_old_stored_result_still_loads_and_unknown_keys_are_ignored() -> None:
    old = {
        "voice_id": "v1", "request_id": "r", "name": "a", "seconds": 12.0, "source_seconds": 12.0,
        "trimmed": False, "text_sent": False, "text_dropped": False, "model": None, "language": None,
    }  # fmt: skip
    result = CloneResult.from_dict({**old, "from_the_future": 1})
    assert result.report is None and result.gain_db == 0.0
    _, blocks = build_success(result, "a.wav")
    assert "*Audio sent*\\n12.0 s" in json.dumps(blocks) and "Sent " not in json.dumps(blocks)
    report = AudioReport(recording_seconds=190, used_speech_seconds=42, sent_seconds=45, silence_removed=58)
    again = CloneResult.from_dict(json.loads(json.dumps({**old, "audio": report.to_dict()})))
    assert again.report == report
    shown = json.dumps(build_success(again, "a.wav")[1], ensure_ascii=False)
    # One length, what was sent: the speech counted (42 s, without the gaps between words) is not shown beside it.
    assert "Sent 45 s of the 3:10 recording · silence and long pauses cut" in shown
    assert "Audio sent" not in shown and "42 s" not in shown


@pytest.fixture
def sent_audio(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every PromptAudio the TRTC stand-in receives, decoded."""
    import base64

    seen: list[bytes] = []
    original = trtc_standin._read_audio

    def spy(prompt: object) -> object:
        if isinstance(prompt, str):
            seen.append(base64.b64decode(prompt))
        return original(prompt)

    monkeypatch.setattr(trtc_standin, "_read_audio", spy)
    return seen


def test_the_app_sends_the_best_speech_keeps_the_transcript_and_shows_the_card(
    media: MediaCache, tmp_path: Path, sent_audio: list[bytes]
) -> None:
    path = recording(media, "pauses.wav", [("silence", 4), ("speech", 10), ("silence", 5), ("speech", 10),
                                            ("silence", 6), ("speech", 10)])  # fmt: skip
    with BotHarness(tmp_path) as bot:
        _, body = bot.share(path.read_bytes(), "memo.wav", "audio/wav", "wav", text='text="what I said"')
        assert bot.wait_final("C0GENERAL", body["event"]["ts"]) == "white_check_mark"
        [request] = bot.trtc.requests
        [reply] = bot.replies("C0GENERAL", body["event"]["ts"])
    [wav] = sent_audio
    assert 27 <= read_wav(wav).seconds <= 31.5 and request.audio_seconds == read_wav(wav).seconds
    assert longest_run_below(frame_levels(wav), -70) <= 0.8
    assert request.prompt_text == "what I said"  # silence cut, every word kept: the transcript still matches
    thread = json.dumps(reply.get("blocks", []))
    assert "of the 45 s recording" in thread and "silence and long pauses cut" in thread
