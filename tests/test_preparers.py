"""bot.voice.preparers: the bot's decoder processes. Same prompts and errors as in-process, a hard time limit that
kills a stuck decode with whatever it started, a crash retried with the command line, no secrets in the children,
at most `size` of them, and the prompt bytes the bot holds bounded."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import math
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support.media import MediaCache, make_signal

from bot.errors import DamagedAudioError, NotAudioError, NoVoiceError, TooShortError
from bot.voice import preparers
from bot.voice.audio import AudioLimits, prepare_audio
from bot.voice.preparers import Preparers

AAC = (".m4a", "-c:a", "aac", "-b:a", "32k")


@pytest.fixture
def pool() -> Iterator[Preparers]:
    made = Preparers(2)
    yield made
    made.close()


def fake_child(tmp_path: Path, body: str) -> list[str]:
    """A command for a child that runs `body` (Python) with `line`, the first job's JSON line, read."""
    script = tmp_path / "child.py"
    script.write_text("import json, os, subprocess, sys, time\nline = sys.stdin.buffer.readline()\n"
                      + textwrap.dedent(body))  # fmt: skip
    return [sys.executable, str(script)]


def gone(pid: int, within: float = 5.0) -> bool:
    """The process has exited and been reaped (or never existed) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                time.sleep(0.05)
                continue
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


async def test_a_prompt_from_a_decoder_process_is_the_in_process_one(media: MediaCache, pool: Preparers) -> None:
    source = media.speech(15, *AAC)
    here = await prepare_audio(source)
    there = await pool.prepare(source, AudioLimits())
    assert bytes(there.wav) == here.wav
    assert (there.duration, there.source_duration, there.trimmed, there.gain_db) == (
        here.duration, here.source_duration, here.trimmed, here.gain_db
    )
    assert there.report == here.report and there.kept == here.kept and there.kept_span == here.kept_span
    [child] = pool.children
    again = await pool.prepare(source, AudioLimits())  # the same child, still running: no process start a file
    assert pool.children == [child] and bytes(again.wav) == here.wav


async def test_errors_come_back_as_themselves(media: MediaCache, pool: Preparers, tmp_path: Path) -> None:
    with pytest.raises(TooShortError) as short:
        await pool.prepare(media.speech(5, *AAC), AudioLimits())
    assert short.value.seconds == pytest.approx(5.0, abs=0.1) and short.value.minimum == 10.0
    silence = media.get(
        "digital-silence.flac", lambda p: make_signal(p, "anullsrc=r=16000:cl=mono", 12, "-c:a", "flac")
    )
    with pytest.raises(NoVoiceError) as silent:
        await pool.prepare(silence, AudioLimits())
    assert silent.value.peak_dbfs == -math.inf
    junk = tmp_path / "junk.m4a"
    junk.write_bytes(os.urandom(20_000))
    with pytest.raises(NotAudioError):
        await pool.prepare(junk, AudioLimits())
    with pytest.raises(FileNotFoundError):
        await pool.prepare(tmp_path / "missing.m4a", AudioLimits())
    assert len(pool.children) == 1  # errors are answers: the child goes on


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_a_stuck_decode_is_killed_with_everything_it_started(media: MediaCache, tmp_path: Path) -> None:
    # A child that starts a process of its own (as a fallback ffmpeg would be) and then never answers.
    started = tmp_path / "pids"
    pool = Preparers(1, command=fake_child(tmp_path, f"""
        helper = subprocess.Popen(["sleep", "1000"])
        open({str(started)!r}, "w").write(f"{{os.getpid()}} {{helper.pid}}")
        time.sleep(1000)
    """))  # fmt: skip
    try:
        begun = time.monotonic()
        with pytest.raises(DamagedAudioError, match="did not finish within 1 s"):
            await pool.prepare(media.speech(15, *AAC), AudioLimits(timeout=1.0))
        assert 1.0 <= time.monotonic() - begun < 3.0
        child, helper = map(int, started.read_text().split())
        assert gone(child) and gone(helper)
        assert pool.children == []
    finally:
        pool.close()


async def test_a_cancelled_prepare_kills_its_child(media: MediaCache, tmp_path: Path) -> None:
    pool = Preparers(1, command=fake_child(tmp_path, "time.sleep(1000)"))
    try:
        task = asyncio.create_task(pool.prepare(media.speech(15, *AAC), AudioLimits()))
        deadline = time.monotonic() + 10
        while not pool.children and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        [child] = pool.children
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gone(child)
    finally:
        pool.close()


async def test_a_child_that_dies_on_a_file_gets_it_again_with_the_command_line_alone(
    media: MediaCache, tmp_path: Path
) -> None:
    # The first child crashes on any job with the fast path on; the second serves with what it was asked.
    asked = tmp_path / "asked"
    command = fake_child(tmp_path, f"""
        request = json.loads(line)
        with open({str(asked)!r}, "a") as out:
            out.write(str(request["fast"]) + "\\n")
        if request["fast"]:
            os._exit(9)
        import itertools
        from bot.voice import preparers
        preparers.serve(itertools.chain([line], sys.stdin.buffer))
    """)  # fmt: skip
    pool = Preparers(1, command=command)
    try:
        source = media.speech(15, *AAC)
        prepared = await pool.prepare(source, AudioLimits())
        assert prepared.duration == pytest.approx(15.0, abs=0.1)
        assert asked.read_text().split() == ["True", "False"]
    finally:
        pool.close()


async def test_a_file_that_kills_its_child_twice_is_damaged(media: MediaCache, tmp_path: Path) -> None:
    pool = Preparers(1, command=fake_child(tmp_path, "os._exit(9)"))
    try:
        with pytest.raises(DamagedAudioError, match="crashed"):
            await pool.prepare(media.speech(15, *AAC), AudioLimits())
    finally:
        pool.close()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
async def test_children_get_no_secrets(media: MediaCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret")
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", "tencent-secret")
    pool = Preparers(1)
    try:
        await pool.prepare(media.speech(15, *AAC), AudioLimits())
        [child] = pool.children
        environ = Path(f"/proc/{child}/environ").read_bytes()
    finally:
        pool.close()
    assert b"PATH=" in environ
    assert b"secret" not in environ and b"SLACK_" not in environ and b"TENCENTCLOUD" not in environ


async def test_at_most_size_children_and_idle_ones_exit(media: MediaCache) -> None:
    pool = Preparers(1, idle_seconds=0.5)
    try:
        sources = [media.speech(15, *AAC), media.speech(12, *AAC)]
        seen: set[int] = set()

        async def one(path: Path) -> None:
            await pool.prepare(path, AudioLimits())
            seen.update(pool.children)

        await asyncio.gather(*(one(path) for path in sources * 2))
        assert len(seen) == 1  # four files, one child, one at a time
        [child] = seen
        assert gone(child, within=5.0)  # idle past idle_seconds: it exits
        assert pool.children == []
        await pool.prepare(sources[0], AudioLimits())  # and the next file starts a new one
        assert pool.children and pool.children != [child]
    finally:
        pool.close()


async def test_the_prompts_held_stay_within_the_budget(media: MediaCache) -> None:
    # Two 15 s prompts (~480 kB each) against a budget for one: the second waits in its child until the first goes.
    pool = Preparers(2, budget=600_000)
    try:
        first = await pool.prepare(media.speech(15, *AAC), AudioLimits())
        assert pool.held == len(first.wav)
        second = asyncio.create_task(pool.prepare(media.speech(14, *AAC), AudioLimits()))
        await asyncio.sleep(1.5)  # long enough to decode it: it is waiting for the budget
        assert not second.done() and pool.held == len(first.wav)
        del first
        gc.collect()
        prepared = await asyncio.wait_for(second, 10)
        assert pool.held == len(prepared.wav) and pool.held_peak <= 600_000
        del prepared, second  # the task keeps its result too
        gc.collect()
        assert pool.held == 0
    finally:
        pool.close()


def test_a_child_that_grew_asks_to_be_replaced(media: MediaCache, monkeypatch: pytest.MonkeyPatch) -> None:
    # serve() in this process: after a job that left it over RECYCLE_RSS it says so and stops taking jobs.
    monkeypatch.setattr(preparers, "RECYCLE_RSS", 0)
    request = {"path": str(media.speech(15, *AAC)), "limits": AudioLimits().__dict__, "denoise": None, "fast": True}
    line = json.dumps(request).encode() + b"\n"
    out = io.BytesIO()
    preparers.serve(io.BytesIO(line * 2), out)
    header, _, rest = out.getvalue().partition(b"\n")
    answer = json.loads(header)
    assert answer["recycle"] is True and len(rest) == answer["wav"]  # one answer, not two


def test_a_prompt_held_for_ever_does_not_stall_the_next_one(monkeypatch, caplog):
    # A prompt kept alive elsewhere (here: 8 MiB counted and never released) must not block every later prepare.
    from bot.voice import preparers

    monkeypatch.setattr(preparers, "BUDGET_WAIT", 0.2)
    pool = preparers.Preparers(1, budget=8 * 1024 * 1024)
    try:
        pool.held = 8 * 1024 * 1024
        pool._reserve(preparers._Job(), 6 * 1024 * 1024)
        assert pool.held == 14 * 1024 * 1024
        assert any("prompt budget of 8388608 bytes exceeded" in r.getMessage() for r in caplog.records)
    finally:
        pool.held = 0
        pool.close()
