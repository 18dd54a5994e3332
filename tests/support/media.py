"""Real test media made with ffmpeg from the shipped speech recordings (bot/testing/data), for any test module.

Import as `from support.media import ...` (pytest puts tests/ on sys.path: it has no __init__.py).
Stateless helpers write one file each; `MediaCache` (the session-scoped `media` fixture in conftest.py)
builds each named file once per test run. Typical use:

    clip = media.speech(15, ".m4a", "-c:a", "aac", "-b:a", "48k")      # 15 s of speech as AAC
    long = media.speech(3600, ".mp3", "-c:a", "libmp3lame", "-b:a", "32k")  # an hour, built in ~1 s
    tone = media.get("tone.wav", lambda p: make_signal(p, "sine=frequency=440", 12))
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.testing.speech import SECONDS
from bot.testing.speech import make_speech as speech_clip
from bot.voice.audio import find_ffmpeg

# The shipped recordings (bot/testing/data): espeak-ng speech rendered once, so no test needs a speech engine.
SPEECH_SECONDS = SECONDS["en"]
# Longer compressed files are made by stream-copying a chunk in a loop: an hour of MP3 in about a second.
LOOP_ABOVE_SECONDS = 60.0
LOOP_CHUNK_SECONDS = 30.0
# Containers where a packet-level loop decodes cleanly (FLAC frame headers carry sample numbers: re-encode).
_LOOPABLE = frozenset({".m4a", ".mp4", ".mov", ".mp3", ".ogg", ".opus", ".webm", ".mkv", ".aac"})


def ffmpeg_exe() -> str:
    """The ffmpeg that makes test media: the one the bot uses (bot.voice.audio.find_ffmpeg: PATH, else bundled)."""
    return find_ffmpeg()


def bundled_ffmpeg() -> str:
    """imageio-ffmpeg's static binary (a newer ffmpeg than most distributions ship)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(*args: str | Path, exe: str | None = None) -> None:
    """Run ffmpeg quietly, overwriting outputs; raise with its error text on failure."""
    command = [exe or ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def make_speech(path: str | Path, seconds: float, *out_args: str, voice: str = "en", offset: float = 0.0) -> Path:
    """Write `seconds` of the shipped recording of `voice` to `path` (looped as needed, from `offset` seconds
    in); format from the extension, `out_args` are ffmpeg output options (codec, bitrate, sample rate, filters)."""
    return speech_clip(path, seconds, codec_args=tuple(out_args), voice=voice, offset=offset)


def measured_seconds(path: str | Path) -> float:
    """The length of `path` as measured by decoding all of it (not the container's header, which may guess)."""
    command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-nostats", "-i", str(path), "-map", "0:a:0",
               "-f", "null", "-", "-progress", "pipe:1"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    times = [line.split("=", 1)[1] for line in result.stdout.splitlines() if line.startswith("out_time_us=")]
    return int(times[-1]) / 1e6


def make_signal(path: str | Path, source: str, seconds: float, *out_args: str) -> Path:
    """Write `seconds` of an ffmpeg lavfi audio source, e.g. "sine=frequency=440", "anullsrc=r=16000",
    "anoisesrc=color=white:amplitude=0.001"."""
    path = Path(path)
    run_ffmpeg("-f", "lavfi", "-i", source, "-t", f"{seconds}", *out_args, path)
    return path


def make_video(path: str | Path, seconds: float, audio: str | Path | None = None, *out_args: str) -> Path:
    """Write a small test-pattern video (MPEG-4 part 2), with `audio` as its AAC track when given."""
    path = Path(path)
    inputs: list[str | Path] = ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=5"]
    codecs = ["-c:v", "mpeg4"]
    if audio is not None:
        inputs += ["-i", audio]
        codecs += ["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "48k"]
    run_ffmpeg(*inputs, "-t", f"{seconds}", *codecs, *out_args, path)
    return path


def make_image(path: str | Path) -> Path:
    """Write one test-pattern frame as an image (format from the extension: .png, .jpg, .gif)."""
    path = Path(path)
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1", path)
    return path


def encode(src: str | Path, dst: str | Path, *out_args: str, exe: str | None = None) -> Path:
    """Convert `src` to `dst` with ffmpeg output options `out_args`; format from dst's extension."""
    run_ffmpeg("-i", src, *out_args, dst, exe=exe)
    return Path(dst)


def loop(src: str | Path, dst: str | Path, seconds: float) -> Path:
    """Repeat `src` up to `seconds` without re-encoding (cheap for long files; same container as src)."""
    run_ffmpeg("-stream_loop", "-1", "-i", src, "-t", f"{seconds}", "-map", "0", "-c", "copy", dst)
    return Path(dst)


def set_peak(src: str | Path, dst: str | Path, peak_dbfs: float) -> Path:
    """Scale the WAV `src` so its peak sits at `peak_dbfs`; write WAV `dst`."""
    from pydub import AudioSegment

    segment = AudioSegment.from_wav(str(src))
    segment.apply_gain(peak_dbfs - segment.max_dBFS).export(str(dst), format="wav")
    return Path(dst)


def truncate(src: str | Path, dst: str | Path, keep: float = 0.4) -> Path:
    """Copy the first `keep` fraction of src's bytes: an upload or recording cut short."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


def mp3_frame_offsets(path: str | Path) -> list[int]:
    """Byte offsets where the MPEG audio layer III frames of an MP3 file start (after any ID3v2 tag)."""
    data = Path(path).read_bytes()
    position = 10 + int.from_bytes(bytes(b & 0x7F for b in data[6:10]), "big") if data[:3] == b"ID3" else 0
    offsets = []
    while position + 4 <= len(data) and data[position] == 0xFF and data[position + 1] & 0xE0 == 0xE0:
        version = (data[position + 1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
        bitrate_index, rate_index = data[position + 2] >> 4, (data[position + 2] >> 2) & 3
        padding = (data[position + 2] >> 1) & 1
        if version == 3:
            kbps = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[bitrate_index]
            rate = (44100, 48000, 32000)[rate_index]
            length = 144_000 * kbps // rate + padding
        else:
            kbps = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)[bitrate_index]
            rate = (22050, 24000, 16000)[rate_index] // (1 if version == 2 else 2)
            length = 72_000 * kbps // rate + padding
        offsets.append(position)
        position += length
    return offsets


def truncate_mp3(src: str | Path, dst: str | Path, keep: float = 0.4) -> Path:
    """Copy an MP3 up to the frame boundary nearest `keep` of its size: cut short, yet every frame whole."""
    offsets = mp3_frame_offsets(src)
    target = Path(src).stat().st_size * keep
    cut = min(offsets[1:], key=lambda offset: abs(offset - target))
    Path(dst).write_bytes(Path(src).read_bytes()[:cut])
    return Path(dst)


def corrupt(src: str | Path, dst: str | Path, at: float = 0.5, length: int = 2000, seed: int = 1) -> Path:
    """Copy src with `length` random bytes written over it at fraction `at` of its size."""
    data = bytearray(Path(src).read_bytes())
    start = int(len(data) * at)
    noise = random.Random(seed).randbytes(length)
    data[start : start + length] = noise[: len(data) - start]
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def flac_bits(path: str | Path) -> int:
    """Bits per sample from a FLAC file's STREAMINFO block."""
    data = Path(path).read_bytes()[:42]
    if data[:4] != b"fLaC":
        raise ValueError(f"{path} is not FLAC")
    info = data[8:]  # after "fLaC" and the 4-byte metadata block header
    return (((info[12] & 0x01) << 4) | (info[13] >> 4)) + 1


@dataclass(frozen=True)
class WavInfo:
    """The format of a WAV file."""

    rate: int
    channels: int
    sample_width: int  # bytes
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def read_wav(data: bytes | str | Path) -> WavInfo:
    """Read a WAV header (bytes, or a path) with the wave module."""
    import io

    source = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")  # noqa: SIM115
    with source, wave.open(source) as wav:
        return WavInfo(wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes())


class MediaCache:
    """Builds each named file once in `root` (the session-scoped `media` fixture: one per test run)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Pin the tool now, before a test empties PATH to hide ffmpeg from the code under test.
        find_ffmpeg()

    def get(self, name: str, build: Callable[[Path], object]) -> Path:
        """The file `name`, made by `build(path)` the first time it is asked for."""
        path = self.root / name
        if not path.exists():
            part = path.with_name(f"{path.stem}.part{path.suffix}")  # keep the extension: ffmpeg reads it
            build(part)
            part.replace(path)
        return path

    def speech(self, seconds: float, suffix: str = ".wav", *out_args: str, voice: str = "en") -> Path:
        """`seconds` of speech in the format of `suffix`, encoded with ffmpeg output options `out_args`."""
        tag = hashlib.sha1(repr((out_args, voice)).encode()).hexdigest()[:8]
        name = f"speech-{seconds:g}s-{tag}{suffix}"
        if seconds > LOOP_ABOVE_SECONDS and suffix in _LOOPABLE:
            chunk = self.speech(LOOP_CHUNK_SECONDS, suffix, *out_args, voice=voice)
            return self.get(name, lambda path: loop(chunk, path, seconds))
        return self.get(name, lambda path: make_speech(path, seconds, *out_args, voice=voice))


def make_speech_with(path: str | Path, speech_wav: str | Path, parts: list[tuple[str, float]], *out_args: str) -> Path:
    """Join pieces into one 16 kHz recording: ("speech", s) takes the next s seconds of `speech_wav` (long enough),
    ("silence", s) digital silence, ("hum", s) 50 Hz mains hum with faint hiss at about -30 dBFS."""
    path = Path(path)
    inputs: list[str | Path] = []
    chains = []
    offset = 0.0
    for index, (kind, seconds) in enumerate(parts):
        if kind == "speech":
            # No -stream_loop here: ffmpeg 9 overruns the cut when a looped input is sought into.
            inputs += ["-ss", f"{offset:.3f}", "-t", f"{seconds}", "-i", speech_wav]
            trim = ""
            offset += seconds
        elif kind == "silence":
            inputs += ["-f", "lavfi", "-t", f"{seconds}", "-i", "anullsrc=r=16000:cl=mono"]
            trim = ""
        elif kind == "hum":
            source = "aevalsrc='0.04*sin(2*PI*50*t)+0.02*sin(2*PI*150*t)+0.004*(random(0)-0.5)':s=16000"
            inputs += ["-f", "lavfi", "-t", f"{seconds}", "-i", source]
            trim = ""
        else:
            raise ValueError(kind)
        chains.append(f"[{index}:a]{trim}aresample=16000,aformat=channel_layouts=mono[a{index}]")
    labels = "".join(f"[a{i}]" for i in range(len(parts)))
    graph = f"{';'.join(chains)};{labels}concat=n={len(parts)}:v=0:a=1"
    run_ffmpeg(*inputs, "-filter_complex", graph, *out_args, path)
    return path


def add_noise(src: str | Path, dst: str | Path, amplitude: float, *out_args: str) -> Path:
    """Mix white noise of peak `amplitude` (0-1) into `src` (no level normalisation)."""
    run_ffmpeg(
        "-i", src, "-f", "lavfi", "-i", f"anoisesrc=color=white:amplitude={amplitude}:r=16000:seed=7",
        "-filter_complex", "[0][1]amix=inputs=2:normalize=0:duration=first", "-ar", "16000", "-ac", "1",
        *out_args, dst,
    )  # fmt: skip
    return Path(dst)
