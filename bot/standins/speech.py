"""A real speech clip for the demo and benchmarks: espeak-ng when installed, else a speech-like synthetic signal."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from bot.audio import find_ffmpeg

DEMO_TEXT = (
    "Hello! This is a short recording for the voice clone demo. I am reading a few sentences at an easy pace, "
    "so that there is enough speech to learn from. The quick brown fox jumps over the lazy dog. "
    "Thank you for listening, and have a wonderful day."
)
# Harmonics of a 140 Hz voice, syllable-rate amplitude modulation and a pause every two seconds: enough to look
# like speech to the bot's voice check when espeak-ng is not installed.
_SYNTHETIC = (
    "(sin(2*PI*(140+8*sin(2*PI*5*t))*t)+0.5*sin(2*PI*280*t)+0.3*sin(2*PI*420*t)+0.2*sin(2*PI*700*t))"
    "*0.25*abs(sin(2*PI*2.5*t))*lt(mod(t,2),1.5)"
)


def make_speech(dest: str | Path, seconds: float = 14.0, *, codec_args: tuple[str, ...] = ()) -> Path:
    """Write about `seconds` of speech to `dest` (format from its extension, or `codec_args`)."""
    dest = Path(dest)
    ffmpeg = find_ffmpeg()
    with tempfile.TemporaryDirectory() as tmp:
        espeak = shutil.which("espeak-ng")
        if espeak:
            raw = Path(tmp) / "speech.wav"
            subprocess.run([espeak, "-s", "150", "-w", str(raw), DEMO_TEXT], check=True, capture_output=True)
            source = ["-stream_loop", "-1", "-i", str(raw)]
        else:
            source = ["-f", "lavfi", "-i", f"aevalsrc=exprs='{_SYNTHETIC}':s=22050"]
        subprocess.run(
            [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *source,
             "-t", f"{seconds:.2f}", *codec_args, str(dest)],
            check=True,
            capture_output=True,
        )
    return dest


def synthesize(text: str, fmt: str, sample_rate: int, *, speed: float = 1.0, pitch: int = 0) -> tuple[bytes, int]:
    """Speak `text` (espeak-ng, else a tone whose length follows the text) as mono `fmt` ("pcm": raw s16le,
    "wav", "mp3") at `sample_rate`; return (audio, duration in ms). The TRTC stand-in's TextToSpeech."""
    ffmpeg = find_ffmpeg()
    quiet = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    with tempfile.TemporaryDirectory() as tmp:
        espeak = shutil.which("espeak-ng")
        if espeak:
            raw = Path(tmp) / "speech.wav"
            words = str(max(80, min(450, round(160 * speed))))
            subprocess.run([espeak, "-s", words, "-p", str(50 + 4 * pitch), "-w", str(raw), text],
                           check=True, capture_output=True)
            source = ["-i", str(raw)]
        else:
            seconds = max(0.5, 0.07 * len(text) / speed)
            source = ["-f", "lavfi", "-i", f"aevalsrc=exprs='{_SYNTHETIC}':s=22050", "-t", f"{seconds:.2f}"]
        pcm = Path(tmp) / "speech.pcm"
        subprocess.run([*quiet, *source, "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", str(pcm)],
                       check=True, capture_output=True)
        millis = pcm.stat().st_size * 1000 // (2 * sample_rate)
        if fmt == "pcm":
            return pcm.read_bytes(), millis
        out = Path(tmp) / f"speech.{fmt}"
        codec = ["-c:a", "pcm_s16le"] if fmt == "wav" else ["-c:a", "libmp3lame", "-b:a", "64k"]
        subprocess.run([*quiet, "-f", "s16le", "-ac", "1", "-ar", str(sample_rate), "-i", str(pcm), *codec, str(out)],
                       check=True, capture_output=True)
        return out.read_bytes(), millis
