"""The bot's decoder processes: bot.voice.audio's prepare_audio run in a few long-lived child processes.

Why not in the bot's own process, and why not one ffmpeg per file:
- CPU: a child is started once and then prepares file after file (no process start per share), decoding with
  FFmpeg's libraries in-process (bot.voice.libav) rather than the command line (see docs/benchmarks.md, "Where the
  CPU goes").
- Memory: numpy, PyAV and a recording's decoded PCM and analysis live in the children; the bot process receives the
  finished WAV and nothing else, and never imports numpy or PyAV for it. At most `size` children (one per core by
  default: the runner's ffmpeg_slots lets no more prepares run at once) each with one recording at a time.
- A hard time limit: a decode that outlives its job's limit is stopped by killing its child and everything the
  child started (its own process group), which no thread could do to a hung libav call. A new child is started for
  the next file.

A child that dies on a file (a crash in a decoder) gets the file once more in a fresh child with the fast path off
(the ffmpeg command line alone, as before PyAV); a second death is DamagedAudioError. Children idle for
IDLE_SECONDS exit, and one that grew past RECYCLE_RSS after a long file is replaced, so an idle bot gives the memory
back. The children get the bot's environment without its secrets.

The pipes between the bot and a child: the bot writes one JSON line per job ({"path", "limits", "denoise", "fast"});
the child answers with one JSON line and, for a prompt, the WAV's bytes (their count is in the line). An error comes
back as its class name, args and fields, and is rebuilt only for the bot's own audio errors (and OSError,
RuntimeError); anything else becomes RuntimeError. The child is `python -m bot.voice.preparers`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import gc
import json
import logging
import mmap
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot import errors
from bot.voice import analysis
from bot.voice.analysis import AudioReport

IDLE_SECONDS = 300.0  # an idle child exits after this long (the next file starts a new one)
# The prompts handed to the bot and not yet dropped (a job holds its prompt until its clone is answered) may take up
# this many bytes together: two 180 s prompts (5.76 MB each) or ~23 voice memos. Past it the next WAV waits in its
# child (and that child's next file with it) until a prompt is dropped; one prompt alone always passes.
log = logging.getLogger(__name__)

PROMPT_BUDGET = 8 * 1024 * 1024
# How long a prompt waits for the budget before it goes over it (see Preparers._reserve).
BUDGET_WAIT = 10.0
RECYCLE_RSS = 200 * 1024 * 1024  # a child above this RSS after a job is replaced by a fresh one
# Children run this much nicer than the bot: decoding yields the cores to the bot's own work (acknowledging Slack
# within its 3 s, the outbox) when both want them, and takes them all when the bot is idle. Their start-up (~0.3 s
# of CPU: Python, numpy, PyAV) comes with a first burst of shares, when the acknowledgements matter most.
NICE = 10
# What a child inherits of the bot's environment: where things are and how to run, never tokens or keys.
_ENV_KEYS = frozenset({"PATH", "HOME", "TMPDIR", "TEMP", "TMP", "LANG", "LANGUAGE", "TZ", "VIRTUAL_ENV"})
_ENV_PREFIXES = ("LC_", "PYTHON", "IMAGEIO_FFMPEG")
_ERRORS: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        errors.NotAudioError, errors.NoAudioStreamError, errors.DamagedAudioError, errors.NoVoiceError,
        errors.TooShortError, errors.TooLargeError, analysis.NotEnoughSpeechError, analysis.TooNoisyError,
    )
}  # fmt: skip
_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, OSError)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What a child made of a file: bot.voice.audio.PreparedAudio's fields."""

    # Read straight from the pipe into an anonymous mapping, never copied; counted against Preparers.budget until
    # the last reference to it goes.
    wav: mmap.mmap | bytes = dataclasses.field(repr=False)
    duration: float
    source_duration: float | None
    trimmed: bool
    gain_db: float
    report: AudioReport
    kept: list[tuple[float, float]]
    kept_span: tuple[float, float | None]


class _Died(Exception):
    """The child's pipe closed before its answer was complete."""


class _Child:
    """One child process and its pipes (raw, unbuffered: select() sees what read() will get)."""

    def __init__(self, command: Sequence[str]):
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEYS or k.startswith(_ENV_PREFIXES)}
        self.process = subprocess.Popen(
            list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env,
            start_new_session=True,  # its own process group: killed with whatever it started
        )  # fmt: skip
        self.idle_since = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(
        self,
        request: dict[str, Any],
        deadline: float,
        reserve: Callable[[int], None] = lambda size: None,
        unreserve: Callable[[int], None] = lambda size: None,
    ) -> tuple[dict[str, Any], mmap.mmap | bytes]:
        """Send one job and read its answer; TimeoutError past `deadline`, _Died if the child goes. `reserve(n)`
        is called with the WAV's size before its bytes are read (it may wait, the child waiting with it), and
        `unreserve(n)` once the WAV is dropped (or could not be read)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
        except (BrokenPipeError, ValueError):
            raise _Died() from None
        data = bytearray()
        while (end := data.find(b"\n")) < 0:
            if len(data) > 1 << 20:
                raise _Died()  # an answer line this long is no answer of ours
            data += self._read(deadline)
        header = json.loads(data[:end])
        size = int(header.get("wav") or 0)
        if not size:
            return header, b""
        waiting = time.monotonic()
        reserve(size)
        deadline += time.monotonic() - waiting  # the child is done: time spent waiting for the budget is not its
        try:
            # An anonymous mapping, not a bytearray: its pages go back to the system the moment the prompt is
            # dropped, where a freed heap block of megabytes stays in the process's RSS. Not bytes(...): that would
            # hold the prompt twice for a moment.
            wav = mmap.mmap(-1, size)
        except BaseException:
            unreserve(size)
            raise
        weakref.finalize(wav, unreserve, size)  # the bytes come back when the prompt goes, whatever happens next
        start = data[end + 1 : end + 1 + size]  # the WAV's first bytes came with the line
        wav[: len(start)] = start
        view, at = memoryview(wav), len(start)
        while at < size:
            at += self._read_into(view[at:], deadline)
        view.release()
        return header, wav

    def _wait(self, deadline: float) -> None:
        assert self.process.stdout is not None
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
            raise TimeoutError

    def _read(self, deadline: float) -> bytes:
        self._wait(deadline)
        assert self.process.stdout is not None
        data = self.process.stdout.read(1 << 16)
        if not data:
            raise _Died()
        return data

    def _read_into(self, view: memoryview, deadline: float) -> int:
        self._wait(deadline)
        assert self.process.stdout is not None
        count = self.process.stdout.readinto(view)  # type: ignore[attr-defined]
        if not count:
            raise _Died()
        return int(count)

    def kill(self) -> None:
        """SIGKILL the child's whole process group (a fallback ffmpeg of its included) and reap the child."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.close()

    def close(self) -> None:
        """Close its stdin (an idle child exits on that) and reap it."""
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class _Job:
    """One prepare on its way: which child runs it, so that a cancellation can kill that child."""

    def __init__(self) -> None:
        self.child: _Child | None = None
        self.cancelled = False


class Preparers:
    """At most `size` child processes preparing recordings, started when needed and kept for the next file.

    Thread-safe and not tied to an event loop: each job waits for its child on one of `size` threads of its own."""

    def __init__(
        self,
        size: int | None = None,
        *,
        command: Sequence[str] | None = None,
        idle_seconds: float = IDLE_SECONDS,
        budget: int = PROMPT_BUDGET,
    ):
        self.size = max(1, size or os.cpu_count() or 1)
        self.command = list(command or (sys.executable, "-m", "bot.voice.preparers"))
        self.idle_seconds = idle_seconds
        self.budget = budget
        self.held = 0  # bytes of prompts handed out and still referenced
        self.held_peak = 0
        # Re-entrant: a prompt dropped on a thread that holds the lock releases its bytes under it.
        self._lock = threading.Condition(threading.RLock())
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._reaper: threading.Timer | None = None
        self._closed = False
        # Threads of its own for the waits on the children (a prepare may take minutes): the event loop's default
        # executor, which other parts of the bot use, never has threads tied up here.
        self._threads = ThreadPoolExecutor(self.size, thread_name_prefix="preparers")

    @property
    def children(self) -> list[int]:
        """Pids of the live children, idle or busy."""
        with self._lock:
            return [child.pid for child in (*self._idle, *self._busy)]

    async def prepare(
        self, path: str | os.PathLike[str], limits: Any, *, denoise: bool | None = None
    ) -> Prepared:
        """bot.voice.audio.prepare_audio(path, limits, denoise=denoise) in a child; the same errors. A child that is
        still at it after limits.timeout seconds is killed (DamagedAudioError); so is one whose caller is cancelled."""
        request = {
            "path": os.path.abspath(os.fspath(path)),
            "limits": dataclasses.asdict(limits),
            "denoise": denoise,
            "fast": True,
        }
        job = _Job()
        try:
            running = asyncio.get_running_loop().run_in_executor(
                self._threads, self._run, job, request, float(limits.timeout)
            )
            return await running
        except asyncio.CancelledError:
            self._cancel(job)
            raise

    def _run(self, job: _Job, request: dict[str, Any], timeout: float) -> Prepared:
        for attempt in (1, 2):
            child = self._acquire(job)
            try:
                header, wav = child.call(
                    request, time.monotonic() + timeout, lambda size: self._reserve(job, size), self._unreserve
                )
            except TimeoutError:
                self._discard(child, kill=True)
                raise errors.DamagedAudioError(f"the decoder did not finish within {timeout:g} s") from None
            except _Died:
                self._discard(child, kill=True)
                if job.cancelled:
                    raise errors.DamagedAudioError("the decoder was stopped") from None
                if attempt == 2:
                    raise errors.DamagedAudioError("the decoder crashed on this file") from None
                request = {**request, "fast": False}  # once more, with the ffmpeg command line alone
                continue
            except BaseException:
                self._discard(child, kill=True)
                raise
            self._release(child, recycle=bool(header.get("recycle")))
            return _answer(header, wav)
        raise AssertionError("unreachable")

    def _acquire(self, job: _Job) -> _Child:
        with self._lock:
            while True:
                if job.cancelled or self._closed:
                    raise errors.DamagedAudioError("the decoder was stopped")
                if self._idle:
                    child = self._idle.pop()
                    if child.process.poll() is not None:
                        child.close()
                        continue
                    break
                if len(self._busy) < self.size:
                    child = _Child(self.command)
                    break
                self._lock.wait()
            self._busy.add(child)
            job.child = child
            return child

    def _reserve(self, job: _Job, size: int) -> None:
        """Count `size` bytes of prompt against the budget, waiting while it is spent (not while nothing is held)."""
        with self._lock:
            # The budget is a soft bound: a prompt kept alive only by a reference cycle is freed by a collection,
            # and past BUDGET_WAIT the prompt goes over budget rather than wait for ever on a reference that may
            # never be dropped (a test suite's prompts, a caller holding one across a long wait).
            deadline, collected = time.monotonic() + BUDGET_WAIT, False
            while self.held and self.held + size > self.budget:
                if job.cancelled or self._closed:
                    raise _Died()
                left = deadline - time.monotonic()
                if left > 0:
                    self._lock.wait(min(left, 1.0))
                    continue
                if not collected:
                    collected = True
                    gc.collect()  # finalizers release under this (re-entrant) lock
                    continue
                log.warning("prompt budget of %d bytes exceeded (%d held) after %.0f s; going over it",
                            self.budget, self.held, BUDGET_WAIT)
                break
            self.held += size
            self.held_peak = max(self.held_peak, self.held)

    def _unreserve(self, size: int) -> None:
        with self._lock:
            self.held -= size
            self._lock.notify_all()

    def _release(self, child: _Child, recycle: bool) -> None:
        with self._lock:
            self._busy.discard(child)
            if recycle or self._closed:
                child.close()
            else:
                child.idle_since = time.monotonic()
                self._idle.append(child)
                self._arm_reaper()
            self._lock.notify()

    def _discard(self, child: _Child, *, kill: bool) -> None:
        child.kill() if kill else child.close()
        with self._lock:
            self._busy.discard(child)
            self._lock.notify()

    def _cancel(self, job: _Job) -> None:
        """The caller gave up (its job timed out, the bot is stopping): stop the work, kill the child doing it."""
        with self._lock:
            job.cancelled = True
            child = job.child
            self._lock.notify_all()
            busy = child is not None and child in self._busy
        if busy:
            assert child is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)  # its thread sees the pipe close and reaps it

    def _arm_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Timer(self.idle_seconds, self._reap)
            self._reaper.daemon = True
            self._reaper.start()

    def _reap(self) -> None:
        """Close the children idle for idle_seconds; look again later while some are idle."""
        with self._lock:
            self._reaper = None
            now = time.monotonic()
            stale = [child for child in self._idle if now - child.idle_since >= self.idle_seconds]
            self._idle = [child for child in self._idle if child not in stale]
            if self._idle:
                self._arm_reaper()
        for child in stale:
            child.close()

    def close(self) -> None:
        """Stop every child (idle ones exit; busy ones are killed) and refuse new jobs."""
        with self._lock:
            self._closed = True
            idle, busy = list(self._idle), list(self._busy)
            self._idle.clear()
            if self._reaper is not None:
                self._reaper.cancel()
                self._reaper = None
            self._lock.notify_all()
        for child in idle:
            child.close()
        for child in busy:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        self._threads.shutdown(wait=False, cancel_futures=True)


def _answer(header: dict[str, Any], wav: mmap.mmap | bytes) -> Prepared:
    """The child's answer as a Prepared, or its error raised."""
    problem = header.get("error")
    if problem is not None:
        raise _rebuild(problem)
    return Prepared(
        wav=wav,
        duration=float(header["duration"]),
        source_duration=header["source_duration"],
        trimmed=bool(header["trimmed"]),
        gain_db=float(header["gain_db"]),
        report=AudioReport.from_dict(header["report"]),
        kept=[(float(a), float(b)) for a, b in header["kept"]],
        kept_span=(header["kept_span"][0], header["kept_span"][1]),
    )


def _rebuild(problem: dict[str, Any]) -> BaseException:
    """The exception a child reported: one of the bot's audio errors as it was, an OSError, else RuntimeError."""
    name, args = str(problem.get("type")), list(problem.get("args") or [])
    cls = _ERRORS.get(name)
    if cls is not None:
        exc = cls.__new__(cls)
        BaseException.__init__(exc, *args)
        exc.__dict__.update(problem.get("fields") or {})
        return exc
    oserror = next((c for c in _OS_ERRORS if c.__name__ == name), None)
    if oserror is not None:
        return oserror(*args)
    if name == "RuntimeError":
        return RuntimeError(*args)
    return RuntimeError(f"the decoder process failed: {name}: {args}")


def _describe(exc: BaseException) -> dict[str, Any]:
    """An exception as _rebuild reads it (JSON: its args and its fields, the JSON-ready ones)."""
    fields = {key: value for key, value in vars(exc).items() if isinstance(value, str | int | float | bool | None)}
    args = [arg if isinstance(arg, str | int | float | bool | None) else str(arg) for arg in exc.args]
    return {"type": type(exc).__name__, "args": args, "fields": fields}


# -- the child ------------------------------------------------------------------------------------------------


def serve(stdin: Any = None, stdout: Any = None) -> None:
    """The child's loop: a job per line on stdin, its answer on stdout, until stdin closes."""
    from bot.voice import audio

    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    loop = asyncio.new_event_loop()
    with contextlib.suppress(ImportError):
        import av  # noqa: F401  loaded now, while the bot waits for nothing
    for line in stdin:
        request = json.loads(line)
        limits = audio.AudioLimits(**request["limits"])
        payload: bytes | bytearray | memoryview | None = b""
        audio.FAST_DECODE = bool(request.get("fast", True))
        try:
            prepared = loop.run_until_complete(
                audio.prepare_in_place(request["path"], limits, denoise=request.get("denoise"))
            )
        except Exception as exc:  # every error goes back to the bot, which raises it there
            header: dict[str, Any] = {"error": _describe(exc)}
        else:
            payload = prepared.wav
            header = {
                "wav": len(payload),
                "duration": prepared.duration,
                "source_duration": prepared.source_duration,
                "trimmed": prepared.trimmed,
                "gain_db": prepared.gain_db,
                "report": prepared.report.to_dict(),
                "kept": prepared.kept,
                "kept_span": list(prepared.kept_span),
            }
        header["recycle"] = _rss() > RECYCLE_RSS
        stdout.write(json.dumps(header).encode() + b"\n")
        stdout.write(payload)
        stdout.flush()
        payload = prepared = None  # type: ignore[assignment]
        if header["recycle"]:
            return


def _rss() -> int:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


_shared: Preparers | None = None
_shared_lock = threading.Lock()


def shared() -> Preparers:
    """The process's decoder processes (one per core), made on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Preparers()
            atexit.register(_shared.close)
        return _shared


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bot stops its children itself
    with contextlib.suppress(OSError):
        os.nice(NICE)
    with contextlib.suppress(BrokenPipeError):
        serve()
