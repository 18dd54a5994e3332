"""TRTC faults as the user finally sees them, and malformed uploads: every one gets exactly one friendly final
answer, no crash, no traceback, and the bot stays healthy.

The fuzz inputs are generated deterministically (seeded); the bulk goes through bot.voice.audio.prepare_audio
directly, a few dozen through the whole app over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.driving import assert_one_final_answer, read_jobs, reply_text, wait_finals, where
from support.expected_text import SLACK_API_SENTENCES
from support.harness import BotHarness, free_port
from support.media import MediaCache

from bot.errors import AudioError, BotError
from bot.testing.standin_trtc import TrtcStandIn
from bot.ui.texts import GENERIC, describe
from bot.voice.audio import find_ffmpeg, prepare_audio

CHANNEL = "C0FUZZ"
TRTC_TIMEOUT = 0.6
# Not what a user should ever read.
RAW = ("Traceback", "Exception", "Error:", "ffmpeg", "errno", "None")


def _friendly(text: str) -> None:
    assert GENERIC not in text, text  # the worker's crash boundary was reached
    for raw in RAW:
        assert raw not in text, (raw, text)


# -- TRTC faults --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_wav(media: MediaCache) -> bytes:
    return media.speech(15, ".wav").read_bytes()


def _fast_retries(harness: BotHarness) -> BotHarness:
    # The client's own knob: the same four attempts, with backoff in tens of milliseconds instead of seconds.
    harness.runtime.trtc.backoff_base = 0.05
    return harness


# The module's bot (tests/conftest.py): a short TRTC timeout, so that "slower than the timeout" is quick to script.
BOT_ENV = {"TRTC_TIMEOUT": str(TRTC_TIMEOUT)}


@pytest.fixture
def faulty(bot: BotHarness):
    return _fast_retries(bot)


@dataclass(frozen=True)
class Fault:
    """A scripted TRTC misbehaviour and what the user must end up seeing."""

    script: Callable[[TrtcStandIn], None]
    reaction: str
    says: str  # a piece of the final message
    requests: int
    request_id: bool = False  # the message quotes the last request's RequestId


FAULTS = {
    "HTTP 502 once": Fault(lambda t: t.http_error_next(502), "white_check_mark", "Voice cloned", 2),
    "HTTP 500 every attempt": Fault(
        lambda t: t.http_error_next(500, times=4), "x", SLACK_API_SENTENCES["ServerNetworkError"], 4
    ),
    "InternalError once": Fault(
        lambda t: t.fail_next("InternalError"), "white_check_mark", "Voice cloned", 2
    ),
    "InternalError every attempt": Fault(
        lambda t: t.fail_next("InternalError", times=4), "x", SLACK_API_SENTENCES["InternalError"], 4, True
    ),
    "slower than the timeout once": Fault(
        lambda t: t.delay_next(TRTC_TIMEOUT + 1), "white_check_mark", "Voice cloned", 2
    ),
    "slower than the timeout every attempt": Fault(
        lambda t: t.delay_next(TRTC_TIMEOUT + 1, times=4), "x", SLACK_API_SENTENCES["NetworkError"], 4
    ),
    "connection dropped once": Fault(lambda t: t.drop_next(), "white_check_mark", "Voice cloned", 2),
    "connection dropped every attempt": Fault(
        lambda t: t.drop_next(times=4), "x", SLACK_API_SENTENCES["NetworkError"], 4
    ),
    "ResourceUnavailable then success": Fault(
        lambda t: t.fail_next("ResourceUnavailable", times=3), "white_check_mark", "Voice cloned", 4
    ),
    "voice limit reached (not retried)": Fault(
        lambda t: t.fail_next("LimitExceeded.VoiceCloneMaxNumLimit"),
        "x",
        SLACK_API_SENTENCES["LimitExceeded.VoiceCloneMaxNumLimit"],
        1,
        True,
    ),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_trtc_fault_is_answered_once(faulty: BotHarness, speech_wav: bytes, name: str):
    fault = FAULTS[name]
    faulty.slack.reset()
    faulty.trtc.reset()
    fault.script(faulty.trtc)
    _, body = faulty.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL)
    assert faulty.wait_final(*where(body), timeout=30) == fault.reaction
    faulty.drain()
    text = reply_text(assert_one_final_answer(faulty.slack, body))
    assert fault.says in text
    assert len(faulty.trtc.requests) == fault.requests
    if fault.request_id:
        assert f"(RequestId: {faulty.trtc.requests[-1].request_id})" in text
    _friendly(text)


def test_trtc_refusing_connections_is_answered_once(tmp_path: Path, speech_wav: bytes):
    closed = f"http://127.0.0.1:{free_port()}"
    with BotHarness(tmp_path, extra_env={"TRTC_ENDPOINT": closed}) as bot:
        _fast_retries(bot)
        _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL)
        assert bot.wait_final(*where(body), timeout=30) == "x"
        text = reply_text(assert_one_final_answer(bot.slack, body))
    assert SLACK_API_SENTENCES["NetworkError"] in text
    _friendly(text)


# -- malformed uploads --------------------------------------------------------------------------------

AUDIO_NAMES = [
    ("voice.m4a", "audio/x-m4a", "m4a"),
    ("song.mp3", "audio/mpeg", "mp3"),
    ("take.wav", "audio/wav", "wav"),
    ("clip.ogg", "audio/ogg", "ogg"),
    ("audio_message.webm", "audio/webm", "webm"),
    ("audio_message.mp4", "video/mp4", "mp4"),
    ("take.flac", "audio/flac", "flac"),
    ("memo.aac", "audio/aac", "aac"),
]
WRONG_MIMETYPES = ["application/pdf", "image/png", "text/plain", "application/octet-stream", "audio/x-wav"]
ENCODINGS = {
    ".wav": (),
    ".mp3": ("-c:a", "libmp3lame", "-b:a", "32k"),
    ".m4a": ("-c:a", "aac", "-b:a", "32k"),
    ".ogg": ("-c:a", "libopus", "-b:a", "16k"),
    ".webm": ("-c:a", "libopus", "-b:a", "16k"),
    ".flac": (),
    ".mp4": ("-c:a", "aac", "-b:a", "32k"),
}


@dataclass(frozen=True)
class Sample:
    """One malformed upload."""

    label: str
    content: bytes
    name: str
    mimetype: str
    filetype: str


def _syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def _wav_header(riff: int, fmt_size: int, tag: int, channels: int, rate: int, bits: int, data: int) -> bytes:
    align = max(channels * bits // 8, 0) & 0xFFFF
    fmt = struct.pack(
        "<HHIIHH", tag, channels & 0xFFFF, rate & 0xFFFFFFFF, (rate * align) & 0xFFFFFFFF, align, bits
    )
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", fmt_size)
        + fmt
        + b"data"
        + (struct.pack("<I", data))
    )


def _box(kind: bytes, size: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", size) + kind + payload


def _absurd_headers(rng: random.Random) -> list[tuple[str, bytes]]:
    noise = rng.randbytes
    big = 0xFFFFFFFF
    pcm = noise(32000)
    return [
        ("RIFF claiming 4 GB", _wav_header(big, 16, 1, 1, 16000, 16, big) + pcm),
        ("RIFF 4 GB, no samples", _wav_header(big, 16, 1, 1, 16000, 16, big)),
        ("WAV with 0 channels", _wav_header(36 + len(pcm), 16, 1, 0, 16000, 16, len(pcm)) + pcm),
        ("WAV at 0 Hz", _wav_header(36 + len(pcm), 16, 1, 1, 0, 16, len(pcm)) + pcm),
        ("WAV at 4 GHz", _wav_header(36 + len(pcm), 16, 1, 1, big, 16, len(pcm)) + pcm),
        ("WAV with 65535 channels", _wav_header(36, 16, 1, 0xFFFF, 16000, 16, len(pcm)) + pcm),
        ("WAV with 0 bits", _wav_header(36, 16, 1, 1, 16000, 0, len(pcm)) + pcm),
        ("WAV with 4 GB fmt chunk", _wav_header(36, big, 1, 1, 16000, 16, len(pcm)) + pcm),
        ("WAV with unknown codec tag", _wav_header(36, 16, 0xBEEF, 1, 16000, 16, len(pcm)) + pcm),
        ("ftyp of 4 GB", _box(b"ftyp", big, b"M4A \x00\x00\x00\x00M4A mp42isom") + noise(2000)),
        ("ftyp 64-bit size 2^63", _box(b"ftyp", 1, struct.pack(">Q", 2**63) + b"M4A ") + noise(2000)),
        (
            "ftyp then moov of 4 GB",
            _box(b"ftyp", 20, b"M4A \x00\x00\x00\x00M4A ") + _box(b"moov", big) + noise(500),
        ),
        (
            "ftyp then mdat size 0",
            _box(b"ftyp", 20, b"isom\x00\x00\x02\x00mp41") + _box(b"mdat", 0) + noise(3000),
        ),
        ("ftyp size 7", _box(b"ftyp", 7, b"M4A ") + noise(100)),
        (
            "nested boxes of 2^31",
            b"".join(_box(k, 2**31) for k in (b"ftyp", b"moov", b"trak", b"mdia")) + noise(64),
        ),
        ("ID3 tag of 256 MB", b"ID3\x04\x00\x00" + _syncsafe(0x0FFFFFFF) + noise(4000)),
        ("ID3 tag of size 0", b"ID3\x03\x00\x00" + _syncsafe(0) + noise(4000)),
        ("ID3 with footer flag", b"ID3\x04\x00\x10" + _syncsafe(0x0FFFFFFF) + noise(1000)),
        ("MPEG frame syncs", (b"\xff\xfb\x90\x64" + bytes(413)) * 30),
        ("ADTS syncs", (b"\xff\xf1\x50\x80\x02\x1f\xfc" + noise(9)) * 200),
        ("OggS and noise", b"OggS\x00\x02" + noise(6000)),
        ("fLaC with broken STREAMINFO", b"fLaC\x00\x00\x00\x22" + bytes(34) + noise(3000)),
        ("fLaC with huge block", b"fLaC\x80\xff\xff\xff" + noise(3000)),
        ("EBML with 8-byte sizes", b"\x1a\x45\xdf\xa3\x01" + b"\xff" * 7 + b"webm" + noise(3000)),
        ("#!AMR and noise", b"#!AMR\n" + noise(3000)),
        ("caff and noise", b"caff\x00\x01\x00\x00" + noise(3000)),
        ("FORM AIFF of 4 GB", b"FORM" + struct.pack(">I", big) + b"AIFFCOMM" + noise(3000)),
    ]


def make_samples(media: MediaCache, seed: int = 20240501) -> list[Sample]:
    """Deterministic malformed uploads: random bytes, empty and truncated files, absurd headers, damage."""
    rng = random.Random(seed)
    contents: list[tuple[str, bytes]] = [("empty", b"")]
    wrong: set[int] = set()  # indexes of samples that must carry a wrong mimetype
    for size in (1, 3, 12, 64, 333, 1024, 4096, 20_000, 100_000):
        for n in range(6):
            contents.append((f"random {size} bytes #{n}", rng.randbytes(size)))
    contents += _absurd_headers(rng)
    for suffix, encoding in ENCODINGS.items():
        real = media.speech(15, suffix, *encoding).read_bytes()
        for cut in (4, 12, 44, 200, 2000, 8000):
            contents.append((f"{suffix} cut to {cut} bytes", real[:cut]))
        for fraction in (0.1, 0.3, 0.5, 0.7, 0.85, 0.95):
            contents.append((f"{suffix} cut to {fraction:.0%}", real[: int(len(real) * fraction)]))
        for _ in range(4):
            data = bytearray(real)
            at = rng.randrange(len(data) // 4, len(data))
            data[at : at + 3000] = rng.randbytes(3000)[: len(data) - at]
            contents.append((f"{suffix} with noise at {at}", bytes(data)))
        flipped = bytearray(real)
        for _ in range(24):
            flipped[rng.randrange(min(256, len(flipped)))] ^= 1 << rng.randrange(8)
        contents.append((f"{suffix} with its header bits flipped", bytes(flipped)))
        contents.append((f"{suffix} header on random bytes", real[:64] + rng.randbytes(30_000)))
        wrong.add(len(contents))
        contents.append((f"intact {suffix} under a wrong mimetype", real))
    samples, seen = [], set()
    for index, (label, content) in enumerate(contents):
        if content in seen:  # a few random bytes can repeat
            continue
        seen.add(content)
        name, mimetype, filetype = rng.choice(AUDIO_NAMES)
        if index in wrong or rng.random() < 0.3:
            mimetype = rng.choice(WRONG_MIMETYPES)  # the name still says audio
        samples.append(Sample(label, content, name, mimetype, filetype))
    return samples


@pytest.fixture(scope="module")
def samples(media: MediaCache) -> list[Sample]:
    return make_samples(media)


def _through_the_app(samples: list[Sample]) -> list[Sample]:
    return samples[::5]


def _through_the_pipeline(samples: list[Sample]) -> list[Sample]:
    return [s for i, s in enumerate(samples) if i % 5]


def test_enough_fuzz_inputs(samples: list[Sample]):
    assert len(samples) >= 200
    assert len({s.content for s in samples}) == len(samples)
    assert len(_through_the_app(samples)) >= 40


@pytest.fixture
def bundled_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The static ffmpeg of imageio-ffmpeg (the bot's fallback when none is on PATH) starts four times faster
    # than the system's dynamically linked one: the bulk of the fuzzing runs on it, the app part on the other.
    empty = tmp_path / "no-ffmpeg"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    find_ffmpeg.cache_clear()
    yield
    find_ffmpeg.cache_clear()


async def test_every_malformed_file_gets_a_friendly_error_from_the_pipeline(
    samples: list[Sample], tmp_path: Path, bundled_ffmpeg: None
):
    assert "imageio_ffmpeg" in find_ffmpeg()
    samples = _through_the_pipeline(samples)
    slots = asyncio.Semaphore(os.cpu_count() or 1)
    outcomes: dict[str, str] = {}

    async def one(index: int, sample: Sample) -> None:
        path = tmp_path / f"{index:03d}{Path(sample.name).suffix}"
        path.write_bytes(sample.content)
        async with slots:
            try:
                prepared = await prepare_audio(path)
            except BotError as exc:
                assert isinstance(exc, AudioError), (sample.label, exc)
                text = describe(exc)
                _friendly(text)
                outcomes[sample.label] = type(exc).__name__
            else:
                assert 10 <= prepared.duration <= 180, sample.label
                outcomes[sample.label] = "usable"

    await asyncio.gather(*(one(i, s) for i, s in enumerate(samples)))
    assert len(outcomes) == len(samples)
    # Most of these are garbage; anything usable must really be 10 s or more of audio (checked above).
    assert sum(v != "usable" for v in outcomes.values()) > len(samples) * 0.8


def test_malformed_files_through_the_app_each_get_one_friendly_answer(
    bot: BotHarness, samples: list[Sample], speech_wav: bytes
):
    picked = _through_the_app(samples)

    def send(item: tuple[int, Sample]) -> dict:
        index, sample = item
        channel = f"C0FZ{index:03d}"
        response, body = bot.share(
            sample.content, sample.name, sample.mimetype, sample.filetype, channel=channel
        )
        assert response.status_code == 200
        return body

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(send, enumerate(picked)))
    wait_finals(bot.slack, bodies, timeout=90)
    bot.drain()

    for sample, body in zip(picked, bodies, strict=True):
        text = reply_text(assert_one_final_answer(bot.slack, body))
        if not text.startswith("Voice cloned"):
            try:
                _friendly(text)
            except AssertionError as exc:
                raise AssertionError(f"{sample.label}: {exc}") from None
    # The module's bot ran the fault tests before this one: only this test's channels count.
    jobs = [j for j in read_jobs(bot.tmp / "jobs.db") if j["channel"].startswith("C0FZ")]
    assert len(jobs) == len(picked) and {j["status"] for j in jobs} <= {"done", "failed"}
    assert not [j for j in jobs if '"crash"' in (j["error"] or "")]
    assert list(bot.runtime.runner.temp_dir.iterdir()) == []

    # Still healthy: answers /healthz and clones a good recording.
    assert bot.http.get(f"http://127.0.0.1:{bot.port}/healthz").status_code == 200
    _, body = bot.share(speech_wav, "good.wav", "audio/wav", "wav", channel=CHANNEL)
    assert bot.wait_final(*where(body)) == "white_check_mark"
