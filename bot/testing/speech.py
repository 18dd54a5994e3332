"""Real speech for the demo, the stand-ins, the benchmarks and the tests: recordings shipped in data/.

The recordings are espeak-ng renderings made once by `scripts/make-speech-data` (see data/README.md); nothing
here needs espeak-ng. Longer clips loop the recording, shorter ones cut it; the bundled or system ffmpeg
(bot.voice.audio.find_ffmpeg, the one the bot itself uses) does the encoding.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from bot.voice.audio import find_ffmpeg

DATA = Path(__file__).resolve().parent / "data"
# name -> the recording (Opus, 16 kHz mono) and its transcript (WebVTT, one cue a sentence).
VOICES = ("en", "en-f")
# Seconds of the shipped recordings, measured when they were made (a test re-measures them).
SECONDS = {"en": 37.06, "en-f": 27.42}


def recording(voice: str = "en") -> Path:
    """The shipped recording of `voice` ("en": a man's voice, "en-f": a woman's)."""
    if voice not in VOICES:
        raise ValueError(f"no recording of {voice!r}; there are {', '.join(VOICES)}")
    return DATA / f"speech-{voice}.opus"


def transcript(voice: str = "en") -> Path:
    """The WebVTT transcript of `recording(voice)`: one cue a sentence, with the times it is spoken."""
    return recording(voice).with_suffix(".vtt")


def _ffmpeg(*args: str | Path) -> None:
    command = [find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def make_speech(
    dest: str | Path, seconds: float = 14.0, *, codec_args: tuple[str, ...] = (), voice: str = "en",
    offset: float = 0.0,
) -> Path:
    """Write `seconds` of speech to `dest` (format from its extension, or `codec_args`), starting `offset`
    seconds into the recording of `voice` and looping it as needed."""
    dest = Path(dest)
    start = offset % SECONDS[voice]
    # Uncompressed files at 22.05 kHz unless codec_args say otherwise: what espeak-ng speaks at, so a WAV of it is
    # ~44 KB a second instead of the 96 KB of Opus's native 48 kHz.
    rate = ("-ar", "22050") if "-ar" not in codec_args and dest.suffix in (".wav", ".aiff", ".caf") else ()
    _ffmpeg("-stream_loop", "-1", "-ss", f"{start:.3f}", "-i", recording(voice), "-t", f"{seconds:.3f}",
            *rate, *codec_args, dest)
    return dest


def synthesize(text: str, fmt: str, sample_rate: int, *, speed: float = 1.0, pitch: int = 0) -> tuple[bytes, int]:
    """The TRTC stand-in's TextToSpeech: real speech as long as `text` would take to say (about 15 characters a
    second at `speed` 1), as mono `fmt` ("pcm": raw s16le, "wav", "mp3") at `sample_rate`; return (audio,
    duration in ms). `pitch` shifts the voice by semitones (-12..12) as Tencent's does."""
    seconds = max(0.5, 0.065 * len(text) / speed)
    # Different texts start at different places, so two answers are not the same bytes.
    offset = sum(map(ord, text)) % int(SECONDS["en"])
    shift = 2 ** (pitch / 12)
    pitch_filter = ["-af", f"asetrate={round(48000 * shift)},aresample=48000"] if pitch else []
    with tempfile.TemporaryDirectory() as tmp:
        pcm = Path(tmp) / "speech.pcm"
        _ffmpeg("-stream_loop", "-1", "-ss", f"{offset:.3f}", "-i", recording("en"), *pitch_filter,
                "-t", f"{seconds:.3f}", "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", pcm)
        millis = pcm.stat().st_size * 1000 // (2 * sample_rate)
        if fmt == "pcm":
            return pcm.read_bytes(), millis
        out = Path(tmp) / f"speech.{fmt}"
        codec = ["-c:a", "pcm_s16le"] if fmt == "wav" else ["-c:a", "libmp3lame", "-b:a", "64k"]
        _ffmpeg("-f", "s16le", "-ac", "1", "-ar", str(sample_rate), "-i", pcm, *codec, out)
        return out.read_bytes(), millis
