"""The recordings the benchmarks share: the shipped speech (bot/testing/data) looped or cut with ffmpeg, built once."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.testing.speech import make_speech
from bot.voice.audio import find_ffmpeg

AAC = ("-c:a", "aac", "-b:a", "64k")
MP3 = ("-c:a", "libmp3lame", "-b:a", "64k", "-ac", "1")
# Long MP3s are a 60 s chunk repeated without re-encoding: an hour in about a second instead of a minute.
LOOP_CHUNK_SECONDS = 60


@dataclass(frozen=True)
class Recording:
    """A file to share, with what Slack would say about it."""

    path: Path
    mimetype: str
    filetype: str
    seconds: float

    @property
    def name(self) -> str:
        return self.path.name


class MediaCache:
    """Builds each recording once under `root` (bench/out/media by default) and reuses it on later runs."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def m4a(self, seconds: int) -> Recording:
        """`seconds` of speech as AAC in an M4A container (a phone voice memo)."""
        path = self._build(f"Voice Memo {seconds}s.m4a", lambda p: make_speech(p, seconds, codec_args=AAC))
        return Recording(path, "audio/x-m4a", "m4a", seconds)

    def mp3(self, seconds: int) -> Recording:
        """`seconds` of speech as a 64 kb/s mono MP3; longer ones repeat a one-minute chunk."""
        chunk = self._build(
            f"chunk {LOOP_CHUNK_SECONDS}s.mp3", lambda p: make_speech(p, LOOP_CHUNK_SECONDS, codec_args=MP3)
        )
        path = self._build(f"Recording {seconds}s.mp3", lambda p: _loop(chunk, p, seconds))
        return Recording(path, "audio/mpeg", "mp3", seconds)

    def _build(self, name: str, build: Callable[[Path], object]) -> Path:
        path = self.root / name
        if not path.exists():
            part = path.with_name(f"{path.stem}.part{path.suffix}")  # keep the extension: ffmpeg reads it
            build(part)
            part.replace(path)
        return path


def _loop(src: Path, dst: Path, seconds: int) -> Path:
    subprocess.run(
        [
            find_ffmpeg(),
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            str(src),
            "-t",
            str(seconds),
            "-map",
            "0",
            "-c",
            "copy",
            str(dst),
        ],
        check=True,
        capture_output=True,
    )
    return dst
