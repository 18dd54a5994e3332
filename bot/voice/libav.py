"""Decoding with FFmpeg's libraries in this process (PyAV, the `av` wheel): the fast path of bot.voice.audio.

The ffmpeg command line costs a process start per file (~10 ms for the bundled static binary, ~50 ms for Debian's),
and the bundled binary's AAC decoder is slow: 2 cores, a 180 s 48 kHz AAC m4a took ~350 ms of CPU to decode with it,
~80 ms with the libraries in PyAV's wheel. Same demuxers, decoders and resampler (libswresample, default settings,
as `-ac 1 -ar 16000`), the same guards: only the demuxers of bot.voice.audio._DEMUXERS (`format_whitelist`), only
the file protocol (`protocol_whitelist`, the name given as `file:...`), mov external tracks off, frame CRCs checked.

It only ever answers for a clean file: anything libav complains about (an error logged or raised, a format guessed
on a low score, an external track, audio shorter than the container says, a change of format mid-stream) makes
`decode` return None, and bot.voice.audio asks the ffmpeg command line, whose log it reads to say exactly what is
wrong. So a damaged or hostile upload gets the same answer as before; a good one costs a fraction of the CPU.

`decode` blocks: call it on a worker thread (bot.voice.audio does), or in a decoder process of bot.voice.preparers,
which the bot kills when a decode outlives its time limit (a hung libav call cannot be stopped any other way).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SAMPLE_RATE = 16_000
# Decoded audio is handed to the resampler this many input samples at a time (~0.7 s at 48 kHz), not frame by
# frame: one resampler call per AAC frame (1024 samples) cost more than the decoding itself.
BATCH_SAMPLES = 32_768


@dataclass
class Decoded:
    """What the fast path found, in the terms of bot.voice.audio._Log."""

    duration: float | None  # the container's duration (what ffmpeg prints as "Duration:")
    duration_estimated: bool  # libav estimated it from the bitrate: no promise
    streams: list[tuple[str, str, bool]] = field(default_factory=list)  # (kind, codec, attached picture)
    samples: int = 0  # 16 kHz mono samples written


def decode(
    path: str,
    *,
    demuxers: str,
    mov_options: dict[str, str],
    max_samples: int,
    write: Callable[[bytes | bytearray | memoryview], None],
    deadline: float,
) -> Decoded | None:
    """Decode the first audio stream of `path` to 16 kHz mono s16, passing the PCM to `write` in pieces, at most
    `max_samples` of it; None when the file is not clean (see the module's docstring) or PyAV is missing.
    Raises TimeoutError past `deadline` (time.monotonic())."""
    try:
        import av
        import av.logging
    except ImportError:
        return None
    if av.logging.get_level() is None or av.logging.get_level() > av.logging.WARNING:
        # What the checks below read (libav's log callback costs ~1 ms a minute of audio decoded).
        av.logging.set_level(av.logging.WARNING)
    # -err_detect crccheck as the command line gives it: to the demuxer and the decoder (a FLAC with flipped bits
    # decodes silently wrong without it; with it libav logs a CRC error, and the command line is asked).
    options = {"format_whitelist": demuxers, "protocol_whitelist": "file", "err_detect": "crccheck", **mov_options}
    with av.logging.Capture(local=True) as logs:
        try:
            with av.open("file:" + path, container_options=options) as box:
                found = _decode(box, max_samples, write, deadline, logs)
        except TimeoutError:
            raise
        except Exception:  # libav's errors, and whatever else an odd file makes PyAV do: the command line judges
            return None
    if found is None or any(_unclean(level, message) for level, _, message in logs):
        return None
    found.duration_estimated = any("Estimating duration from bitrate" in message for _, _, message in logs)
    return found


def _unclean(level: int, message: str) -> bool:
    """A log line that the command line's reading (bot.voice.audio._Log) would act on."""
    import av.logging

    if level <= av.logging.ERROR:
        return True
    return "detected only with low score" in message or "external track" in message


def _decode(
    box: Any, max_samples: int, write: Callable[[bytes | bytearray | memoryview], None], deadline: float,
    logs: list[tuple[int, str, str]],
) -> Decoded | None:
    import av

    attached = av.stream.Disposition.attached_pic
    streams = [
        (str(stream.type).capitalize(), str(getattr(stream.codec_context, "name", "") or "none"),
         bool(stream.disposition & attached))
        for stream in box.streams
    ]  # fmt: skip
    audio = box.streams.audio
    if not audio:
        return None
    found = Decoded(duration=box.duration / 1e6 if box.duration is not None else None, duration_estimated=False,
                    streams=streams)  # fmt: skip
    codec = audio[0].codec_context
    codec.options = {"err_detect": "crccheck"}  # set before the decoder opens (at the first packet)
    # One thread: the log capture is this thread's (a decoder thread's complaint would go unseen), and the
    # decoder processes are the parallelism (one per core).
    codec.thread_count = 1
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    # Decoded frames gather in libav's own FIFO (it refuses a frame whose format, layout or rate differs from the
    # first: ValueError, so the command line is asked) and go to the resampler BATCH_SAMPLES at a time.
    fifo = av.AudioFifo()

    def emit(frames: list[Any]) -> bool:
        """Write resampled frames; True once max_samples are out."""
        for frame in frames:
            take = min(frame.samples, max_samples - found.samples)
            write(memoryview(frame.planes[0])[: take * 2])
            found.samples += take
            if found.samples >= max_samples:
                return True
        return False

    for count, frame in enumerate(box.decode(audio[0])):
        frame.pts = None  # timestamps are not ours to check: a gap is the demuxer's business (and the log's)
        fifo.write(frame)
        if fifo.samples >= BATCH_SAMPLES:
            if emit(resampler.resample(fifo.read())):
                return found
            if time.monotonic() > deadline:
                raise TimeoutError
        if logs and not count % 64 and any(level <= av.logging.ERROR for level, _, _ in logs):
            return None  # a decode error logged (and concealed): the command line will name it
    if fifo.samples and emit(resampler.resample(fifo.read())):
        return found
    emit(resampler.resample(None))
    return found
