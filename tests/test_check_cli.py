"""`python -m bot check FILE`: the report card as plain text, no API, no settings; exit 0 usable, 2 not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.media import MediaCache, make_signal, make_speech_with


def check(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no TRTC or Slack settings at all
    return subprocess.run(
        [sys.executable, "-m", "bot", "check", str(path)], capture_output=True, text=True, cwd=tmp_path, env=env
    )


def test_usable_recording_prints_the_card_and_exits_0(media: MediaCache, tmp_path: Path) -> None:
    parts = [("silence", 4), ("speech", 10), ("silence", 5), ("speech", 10), ("silence", 6), ("speech", 10)]
    path = media.get("cli-pauses.wav", lambda p: make_speech_with(p, media.speech(30), parts, "-c:a", "pcm_s16le"))
    done = check(path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usable" in done.stdout and "of the 45 s recording" in done.stdout
    assert "silence and long pauses cut" in done.stdout
    assert ":" + "warning:" not in done.stdout and "*" not in done.stdout and "`" not in done.stdout


def test_unusable_recording_says_why_and_exits_2(media: MediaCache, tmp_path: Path) -> None:
    noise = media.get("cli-noise.wav", lambda p: make_signal(p, "anoisesrc=color=white:amplitude=0.5", 12))
    done = check(noise, tmp_path)
    assert done.returncode == 2
    assert "not usable" in done.stdout and "mostly background noise" in done.stdout
