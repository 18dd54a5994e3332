"""bot.voice.audio on real files made by real ffmpeg: every format, the limits, every way a file can be wrong."""

from __future__ import annotations

import array
import math
import os
import random
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.media import (
    MediaCache,
    bundled_ffmpeg,
    corrupt,
    encode,
    flac_bits,
    make_image,
    make_signal,
    make_video,
    measured_seconds,
    read_wav,
    set_peak,
    truncate,
    truncate_mp3,
)

from bot.errors import (
    DamagedAudioError,
    NoAudioStreamError,
    NotAudioError,
    NoVoiceError,
    TooLargeError,
    TooShortError,
)
from bot.testing.speech import recording
from bot.voice import audio
from bot.voice.audio import AudioLimits, find_ffmpeg, prepare_audio, prepare_audio_sync

AAC = (".m4a", "-c:a", "aac", "-b:a", "32k")
MP3 = (".mp3", "-c:a", "libmp3lame", "-b:a", "32k")
OPUS = (".ogg", "-c:a", "libopus", "-b:a", "24k")
FLAC = (".flac", "-c:a", "flac")


# FFmpeg's libraries in-process first (bot.voice.libav, the bot's own way: the bundled ffmpeg judges whatever they do
# not vouch for), then the ffmpeg command line alone: the bundled binary always, a system one too where the machine
# has it (a bare machine has none).
FFMPEG_VARIANTS = ["libav", "bundled", *(["system"] if shutil.which("ffmpeg") else [])]


@pytest.fixture(params=FFMPEG_VARIANTS)
def which_ffmpeg(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """Run the test through the libraries (ffmpeg hidden from PATH for what they leave to it), then through the
    command line alone: imageio-ffmpeg's binary (no ffmpeg on PATH), and the system ffmpeg if any."""
    monkeypatch.setattr(audio, "FAST_DECODE", request.param == "libav")
    if request.param in ("libav", "bundled"):
        monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ffmpeg, no ffprobe
        monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    find_ffmpeg.cache_clear()
    yield request.param
    find_ffmpeg.cache_clear()


@pytest.fixture(params=["libav", "ffmpeg"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Decode with FFmpeg's libraries in-process (the bot's way), or with the ffmpeg command line alone."""
    monkeypatch.setattr(audio, "FAST_DECODE", request.param == "libav")
    return str(request.param)


async def fast_path(path: Path) -> float | None:
    """Seconds the libraries decode from `path` when they vouch for it; None when they leave it to ffmpeg."""
    decoded = await audio._decode_fast(str(path), path.read_bytes()[:16], AudioLimits())
    if decoded is None:
        return None
    decoded.pcm.close()
    return decoded.seconds


def speech(media: MediaCache, seconds: float = 15) -> Path:
    return media.speech(seconds)


def check_wav(wav: bytes, seconds: float) -> None:
    """A complete 16 kHz mono s16 WAV whose header sizes match its data, `seconds` long (within 0.1 s)."""
    info = read_wav(wav)
    assert (info.rate, info.channels, info.sample_width) == (16000, 1, 2)
    assert len(wav) == 44 + info.frames * 2
    assert info.seconds == pytest.approx(seconds, abs=0.1)


def active_rms_dbfs(wav: bytes, floor_dbfs: float = -60.0) -> float:
    """RMS of the 30 ms frames louder than floor_dbfs (the speech of a clean recording), in dBFS."""
    samples = array.array("h", wav[44:])
    total, count = 0.0, 0
    for start in range(0, len(samples) - 479, 480):
        energy = sum(v * v for v in samples[start : start + 480]) / 480
        if energy > (32768 * 10 ** (floor_dbfs / 20)) ** 2:
            total, count = total + energy, count + 1
    return 10 * math.log10(total / count / 32768**2) if count else -math.inf


def peak_dbfs(wav: bytes) -> float:
    """Peak of a 16-bit WAV (bytes from its start), in dBFS."""
    samples = array.array("h", wav[44:])
    peak = max(max(samples), -min(samples))
    return 20 * math.log10(peak / 32768) if peak else -math.inf


# --- formats ---------------------------------------------------------------------------------------------

FORMATS = {
    "m4a-aac": AAC,
    "mp3": MP3,
    "ogg-opus": OPUS,
    "webm-opus": (".webm", "-c:a", "libopus", "-b:a", "24k"),
    "flac-24bit-96k": (*FLAC, "-sample_fmt", "s32", "-bits_per_raw_sample", "24", "-ar", "96000"),
    "wav-u8-8k": (".wav", "-c:a", "pcm_u8", "-ar", "8000"),
    "wav-s16-44k-stereo": (".wav", "-c:a", "pcm_s16le", "-ar", "44100", "-ac", "2"),
    "wav-f32-48k": (".wav", "-c:a", "pcm_f32le", "-ar", "48000"),
    "ogg-vorbis": (".ogg", "-c:a", "libvorbis", "-q:a", "0"),
}


@pytest.mark.parametrize("suffix", [".mp3", ".m4a"])
async def test_cover_art_is_ignored(media: MediaCache, suffix: str) -> None:
    # Cover art is a picture "stream": the audio must still decode, and the length check still apply.
    def build(path: Path) -> None:
        encode(
            speech(media), path, "-i", str(media.get("cover.png", make_image)), "-map", "0:a", "-map", "1:v",
            "-c:v", "png", "-disposition:v", "attached_pic", "-b:a", "32k",
        )  # fmt: skip

    result = await prepare_audio(media.get(f"cover-art{suffix}", build))
    check_wav(result.wav, 15.0)


@pytest.mark.parametrize("kind", FORMATS)
async def test_audio_formats_become_16k_mono_s16_wav(media: MediaCache, decoder: str, kind: str) -> None:
    suffix, *args = FORMATS[kind]
    result = await prepare_audio(media.speech(15, suffix, *args))
    check_wav(result.wav, 15.0)
    assert result.duration == read_wav(result.wav).seconds
    assert result.source_duration == pytest.approx(15.0, abs=0.1)
    assert not result.trimmed


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
async def test_video_with_an_audio_track_gives_its_audio(media: MediaCache, suffix: str) -> None:
    video = media.get(f"video{suffix}", lambda p: make_video(p, 15, speech(media)))
    result = await prepare_audio(video)
    check_wav(result.wav, 15.0)


@pytest.mark.parametrize(
    "name, args",
    [
        # A Slack clip: AAC at 48 kHz, index up front.
        ("audio_message.m4a", ("-c:a", "aac", "-ar", "48000", "-b:a", "64k", "-movflags", "+faststart")),
        # Mobile clips labelled video/mp4 with no video in them.
        ("audio_message.mp4", ("-c:a", "aac", "-ar", "44100", "-b:a", "64k")),
    ],
)
async def test_slack_clips(media: MediaCache, name: str, args: tuple[str, ...]) -> None:
    clip = media.get(name, lambda p: encode(speech(media), p, *args))
    result = await prepare_audio(clip)
    check_wav(result.wav, 15.0)


async def test_flac_32bit(media: MediaCache) -> None:
    # ffmpeg 5.1 writes 24 bits when asked for 32 and decodes 32-bit FLAC to nothing, silently; the
    # bundled ffmpeg does both, and prepare_audio falls back to it.
    flac = media.get(
        "speech-32bit.flac",
        lambda p: encode(
            speech(media), p, "-c:a", "flac", "-sample_fmt", "s32", "-bits_per_raw_sample", "32",
            "-strict", "experimental", "-ar", "48000", exe=bundled_ffmpeg(),
        ),
    )  # fmt: skip
    assert flac_bits(flac) == 32  # the bundled ffmpeg writes what it is asked for
    result = await prepare_audio(flac)
    check_wav(result.wav, 15.0)


@pytest.mark.parametrize("kind", ["m4a-aac", "ogg-opus"])
async def test_works_without_ffmpeg_on_path(
    media: MediaCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    suffix, *args = FORMATS[kind]
    source = media.speech(15, suffix, *args)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    find_ffmpeg.cache_clear()
    try:
        assert find_ffmpeg() == bundled_ffmpeg()
        result = await prepare_audio(source)
    finally:
        find_ffmpeg.cache_clear()
    check_wav(result.wav, 15.0)


def test_find_ffmpeg_prefers_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PATH first: the bundled static ffmpeg starts faster but decodes a 180 s m4a or an hour of MP3 slower."""
    on_path = tmp_path / "ffmpeg"
    on_path.symlink_to(bundled_ffmpeg())
    monkeypatch.setenv("PATH", str(tmp_path))
    find_ffmpeg.cache_clear()
    try:
        assert find_ffmpeg() == str(on_path)
    finally:
        find_ffmpeg.cache_clear()


@pytest.mark.parametrize("kind", FORMATS)
async def test_the_libraries_vouch_for_every_format_and_match_the_command_line(
    media: MediaCache, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # Every good format takes the fast path (none falls back to a process start), and what it makes is the
    # command line's prompt: the same libswresample at its defaults, so the same samples but for the very end.
    suffix, *args = FORMATS[kind]
    source = media.speech(15, suffix, *args)
    assert await fast_path(source) == pytest.approx(15.0, abs=0.1)
    fast = await prepare_audio(source)
    monkeypatch.setattr(audio, "FAST_DECODE", False)
    slow = await prepare_audio(source)
    assert fast.duration == pytest.approx(slow.duration, abs=0.05)
    assert fast.gain_db == pytest.approx(slow.gain_db, abs=0.2)
    assert fast.report.speech_seconds == pytest.approx(slow.report.speech_seconds, abs=0.2)
    assert fast.source_duration == pytest.approx(slow.source_duration, abs=0.006)  # ffmpeg prints 2 decimals


async def test_the_libraries_vouch_for_cover_art_video_and_slack_clips(media: MediaCache) -> None:
    art = media.get("cover-art.m4a", lambda p: encode(
        speech(media), p, "-i", str(media.get("cover.png", make_image)), "-map", "0:a", "-map", "1:v",
        "-c:v", "png", "-disposition:v", "attached_pic", "-b:a", "32k",
    ))  # fmt: skip
    video = media.get("video.mp4", lambda p: make_video(p, 15, speech(media)))
    clip = media.get(
        "audio_message.m4a",
        lambda p: encode(speech(media), p, "-c:a", "aac", "-ar", "48000", "-b:a", "64k", "-movflags", "+faststart"),
    )
    for source in (art, video, clip):
        assert await fast_path(source) == pytest.approx(15.0, abs=0.1), source.name


def test_sync_wrapper(media: MediaCache) -> None:
    result = prepare_audio_sync(speech(media))
    check_wav(result.wav, 15.0)


# --- length ----------------------------------------------------------------------------------------------


async def test_long_input_sends_at_most_max_seconds(media: MediaCache) -> None:
    # 200 s of talk with short pauses: more speech than fits, so a 180 s window of it is sent.
    suffix, *args = AAC
    result = await prepare_audio(media.speech(200, suffix, *args))
    assert 175 <= read_wav(result.wav).seconds <= 180.0
    assert result.trimmed and result.report.dropped_speech_seconds > 5
    assert result.source_duration == pytest.approx(200, abs=0.5)


async def test_leading_silence_is_dropped(media: MediaCache) -> None:
    # 20 s of silence, then 180 s of speech: the silence is not sent, the speech is.
    source = media.get(
        "silence-then-speech.wav",
        lambda p: make_signal(p, "anullsrc=r=16000:cl=mono", 20, "-c:a", "pcm_s16le"),
    )
    joined = media.get(
        "silence-then-speech-200s.wav",
        lambda p: encode(
            source,
            p,
            "-i",
            str(media.speech(180)),
            "-filter_complex",
            "[0][1]concat=n=2:v=0:a=1",
            "-ar",
            "16000",
        ),
    )
    result = await prepare_audio(joined)
    assert read_wav(result.wav).seconds <= 180.0
    assert peak_dbfs(result.wav[: 44 + 32000]) > -20  # speech within its first second
    assert result.report.window_start == pytest.approx(20, abs=0.5)


async def test_exactly_max_seconds_is_not_trimmed(media: MediaCache) -> None:
    suffix, *args = AAC
    result = await prepare_audio(media.speech(180, suffix, *args))
    assert 178 <= read_wav(result.wav).seconds <= 180.0  # its trailing fraction of a pause is left out
    assert not result.trimmed


async def test_custom_limits(media: MediaCache) -> None:
    result = await prepare_audio(speech(media), AudioLimits(min_seconds=2, max_seconds=5))
    assert 3.5 <= read_wav(result.wav).seconds <= 5.0  # whole words only
    assert result.trimmed


async def test_too_short(media: MediaCache) -> None:
    suffix, *args = AAC
    with pytest.raises(TooShortError) as caught:
        await prepare_audio(media.speech(5, suffix, *args))
    assert caught.value.seconds == pytest.approx(5.0, abs=0.1)
    assert caught.value.minimum == 10.0


def test_an_hour_costs_what_the_decode_cap_does(media: MediaCache) -> None:
    # At most max_decode_seconds (20 minutes) are decoded: an hour costs what 21 minutes do.
    suffix, *args = MP3
    hour, short = media.speech(3600, suffix, *args), media.speech(1260, suffix, *args)

    def child_cpu(path: Path) -> tuple[float, audio.PreparedAudio]:
        # This process (every thread: the libraries decode on one) and its children (a command-line ffmpeg).
        before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        result = prepare_audio_sync(path)
        after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        used = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before, strict=True))
        return used, result

    hour_cpu, result = child_cpu(hour)
    short_cpu, _ = child_cpu(short)
    # Looping whole MP3 frames does not land on exactly 3600 s: compare with what the file itself measures.
    assert result.trimmed and result.source_duration == pytest.approx(measured_seconds(hour), abs=1)
    assert 3590 < result.source_duration < 3601
    assert result.report.capped and result.report.recording_seconds == pytest.approx(1200, abs=1)
    assert 175 <= read_wav(result.wav).seconds <= 180.0
    # Decoding the whole hour would take ~3x the CPU of 21 minutes.
    assert hour_cpu < 1.5 * short_cpu + 0.2


# --- no voice --------------------------------------------------------------------------------------------

SIGNALS = {
    "digital-silence": "anullsrc=r=16000:cl=mono",
    "noise-60dBFS": "anoisesrc=color=white:amplitude=0.001",
    "tone-440Hz": "sine=frequency=440",
    "white-noise": "anoisesrc=color=white:amplitude=0.3",
    "pink-noise": "anoisesrc=color=pink:amplitude=0.3",
    "brown-noise": "anoisesrc=color=brown:amplitude=0.3",
}


@pytest.mark.parametrize("kind", SIGNALS)
async def test_no_voice(media: MediaCache, kind: str) -> None:
    source = media.get(f"{kind}.flac", lambda p: make_signal(p, SIGNALS[kind], 12, "-c:a", "flac"))
    with pytest.raises(NoVoiceError) as caught:
        await prepare_audio(source)
    if kind == "digital-silence":
        assert caught.value.peak_dbfs == -math.inf
    elif kind == "noise-60dBFS":
        assert caught.value.peak_dbfs < -50
    else:
        assert caught.value.peak_dbfs > -50  # refused for its steadiness, not its level


@pytest.mark.parametrize("voice, seconds", [("en", 37.06), ("en-f", 27.42)])
async def test_shipped_recordings_are_speech(voice: str, seconds: float) -> None:
    # The recordings every test, the demo and the bench are made from: their length as documented, mostly speech.
    source = recording(voice)
    assert measured_seconds(source) == pytest.approx(seconds, abs=0.02)
    assert source.stat().st_size < 60_000
    result = await prepare_audio(source)
    assert result.report.speech_seconds > 0.8 * seconds
    assert not result.trimmed


async def test_quiet_speech_is_normalized(media: MediaCache) -> None:
    # Raised until its speech is at -20 dBFS RMS or its peak at -1 dBFS, whichever comes first.
    quiet = media.get("quiet.wav", lambda p: set_peak(speech(media, 20), p, -35.0))
    result = await prepare_audio(quiet)
    assert result.gain_db > 20
    peak = peak_dbfs(result.wav)
    assert peak <= -0.95
    assert peak == pytest.approx(-1.0, abs=0.3) or active_rms_dbfs(result.wav) == pytest.approx(-20, abs=1.5)


async def test_speech_below_the_silence_floor_is_no_voice(media: MediaCache) -> None:
    # Speech-shaped but at -60 dBFS: a recording of nothing much, not to be amplified 59 dB.
    faint = media.get("faint.wav", lambda p: set_peak(speech(media), p, -60.0))
    with pytest.raises(NoVoiceError) as caught:
        await prepare_audio(faint)
    assert caught.value.peak_dbfs == pytest.approx(-60.0, abs=0.5)


async def test_loud_speech_is_left_alone(media: MediaCache) -> None:
    loud = media.get("loud.wav", lambda p: set_peak(speech(media), p, -0.5))
    result = await prepare_audio(loud)
    assert result.gain_db == 0.0
    assert peak_dbfs(result.wav) > -1.5


# --- not audio, no audio ---------------------------------------------------------------------------------


def _random(path: Path, seed: int = 0) -> None:
    path.write_bytes(random.Random(seed).randbytes(50_000))


def _pdf(path: Path) -> None:
    path.write_text("%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n%%EOF\n" * 40)


NOT_AUDIO = {
    "random.m4a": _random,
    # These random bytes pass a weak probe as raw H.263 video (as ~1 in 700 random files do).
    "random-h263.m4a": lambda p: _random(p, seed=1713),
    "document.pdf": _pdf,
    "empty.m4a": lambda p: p.write_bytes(b""),
    "notes.txt": lambda p: p.write_text("hello there, this is not audio\n" * 50),  # ffmpeg's tty demuxer
    "captions.srt": lambda p: p.write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\n\n"),
    "page.html": lambda p: p.write_text("<!doctype html><html><body>Sign in</body></html>\n"),
}


@pytest.mark.parametrize("name", NOT_AUDIO)
async def test_not_audio(media: MediaCache, which_ffmpeg: str, name: str) -> None:
    with pytest.raises(NotAudioError):
        await prepare_audio(media.get(name, NOT_AUDIO[name]))


@pytest.mark.parametrize("name", [*NOT_AUDIO, "silent.mp4", "picture.png"])
async def test_the_libraries_never_vouch_for_what_is_not_audio(media: MediaCache, name: str) -> None:
    # They leave it to the command line, whose log says exactly what is wrong (the answers above).
    build = {"silent.mp4": lambda p: make_video(p, 3), "picture.png": make_image}.get(name) or NOT_AUDIO[name]
    path = media.get(name, build)
    if path.stat().st_size:
        assert await fast_path(path) is None


async def test_silent_video_has_no_audio_stream(media: MediaCache, which_ffmpeg: str) -> None:
    with pytest.raises(NoAudioStreamError):
        await prepare_audio(media.get("silent.mp4", lambda p: make_video(p, 3)))


async def test_image_has_no_audio_stream(media: MediaCache, which_ffmpeg: str) -> None:
    # ffmpeg opens a PNG as a one-frame video: media, but no audio track.
    with pytest.raises(NoAudioStreamError):
        await prepare_audio(media.get("picture.png", make_image))


async def test_too_large_is_refused_before_decoding(media: MediaCache) -> None:
    # Random bytes would be NotAudioError if ffmpeg had looked at them.
    with pytest.raises(TooLargeError) as caught:
        await prepare_audio(media.get("random.m4a", _random), AudioLimits(max_input_bytes=10_000))
    assert (caught.value.size, caught.value.limit) == (50_000, 10_000)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        prepare_audio_sync("/nonexistent/recording.m4a")


# --- damaged ---------------------------------------------------------------------------------------------

DAMAGED = {
    # Cut mid-frame: "invalid new backstep" (ffmpeg 5.1), or nothing at all in some builds.
    "truncated.mp3": (MP3, lambda src, p: truncate(src, p, 0.4)),
    # Cut between two frames: no decode error at all. The Xing header still promises 12 s and only ~5 s
    # decode: caught by the decoded-vs-declared shortfall.
    "frame-truncated.mp3": (MP3, lambda src, p: truncate_mp3(src, p, 0.4)),
    # "invalid residual" / "decode_frame() failed", and STREAMINFO promises more samples.
    "truncated.flac": (FLAC, lambda src, p: truncate(src, p, 0.4)),
    # moov atom written last and lost: ffmpeg cannot open it, but the ftyp box says it is a real M4A.
    "truncated.m4a": (AAC, lambda src, p: truncate(src, p, 0.4)),
    # Index up front (as in Slack clips), data cut: "partial file", "Input buffer exhausted".
    "truncated-faststart.m4a": ((*AAC, "-movflags", "+faststart"), lambda src, p: truncate(src, p, 0.4)),
    # Matroska: "File ended prematurely".
    "truncated.webm": (FORMATS["webm-opus"], lambda src, p: truncate(src, p, 0.4)),
    # Ogg pages fail their CRC: "CRC mismatch!".
    "corrupted.ogg": (OPUS, lambda src, p: corrupt(src, p, 0.4, 3000)),
    # A few flipped bytes in FLAC frames: only -err_detect crccheck notices ("CRC error at PTS").
    "bitflip.flac": (FLAC, lambda src, p: corrupt(src, p, 0.5, 8)),
    # MP3 frames overwritten: "Header missing".
    "corrupted.mp3": (MP3, lambda src, p: corrupt(src, p, 0.4, 3000)),
}


@pytest.mark.parametrize("name", DAMAGED)
async def test_damaged(media: MediaCache, which_ffmpeg: str, name: str) -> None:
    (suffix, *args), damage = DAMAGED[name]
    intact = media.speech(15, suffix, *args)
    with pytest.raises(DamagedAudioError):
        await prepare_audio(media.get(name, lambda p: damage(intact, p)))


@pytest.mark.parametrize("name", DAMAGED)
async def test_the_libraries_never_vouch_for_a_damaged_file(media: MediaCache, name: str) -> None:
    (suffix, *args), damage = DAMAGED[name]
    intact = media.speech(15, suffix, *args)
    assert await fast_path(media.get(name, lambda p: damage(intact, p))) is None


def _children() -> list[int]:
    """Processes (zombies included) whose parent is this one."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                children.append(int(entry))
    return children


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_timeout_kills_ffmpeg(media: MediaCache, decoder: str) -> None:
    # The command line's ffmpeg is killed; the libraries stop at their deadline (checked between batches; a libav
    # call that hangs is the decoder processes' to kill: tests/test_preparers.py).
    suffix, *args = AAC
    source = media.speech(200, suffix, *args)
    before = set(_children())
    with pytest.raises(DamagedAudioError, match="did not finish"):
        await prepare_audio(source, AudioLimits(timeout=0.05))
    assert set(_children()) <= before
