"""Any recording ffmpeg can decode, made into the prompt TRTC VoiceClone takes: 16 kHz mono s16 WAV, 10-180 s.

Decoding: FFmpeg's libraries in this process first (bot.voice.libav, PyAV), which answer only for a clean file; for
anything else, and where PyAV is missing, one ffmpeg command-line run per file (never ffprobe): it decodes only the
first audio stream, at most its first max_decode_seconds (20 minutes), to raw PCM on a pipe; its log (`-loglevel
level+info`) tells the container duration, the streams and any decode error. Both read only the upload: the same
demuxer whitelist (_DEMUXERS), the file protocol alone, mov external tracks off. bot.voice.frames looks at the PCM as
it arrives (level, clipping, voice activity per 30 ms frame) while the PCM goes to a temporary file once it outgrows
what one prompt needs, so memory stays flat whatever the length. Then the prompt is built from the best speech
(bot.voice.frames.plan_prompt), optionally denoised (ffmpeg on the chosen PCM only, `afftdn`), levelled in place
and written as WAV.

The bot itself runs this in its decoder processes (bot.voice.preparers), which it kills when a file outlives its time
limit; prepare_audio here is the in-process form (the command line, the tests, the decoder processes themselves).
Needs the `level` log flag: ffmpeg 4.3 or newer (the imageio-ffmpeg fallback is much newer).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.errors import (
    DamagedAudioError,
    NoAudioStreamError,
    NotAudioError,
    TooLargeError,
)
from bot.voice import libav
from bot.voice.analysis import AudioReport

if TYPE_CHECKING:
    from bot.voice.frames import PromptPlan

SAMPLE_RATE = 16_000
SAMPLE_WIDTH = 2  # bytes: s16
BYTES_PER_SECOND = SAMPLE_RATE * SAMPLE_WIDTH
WAV_HEADER = 44  # bytes before the samples in a RIFF/WAVE file of ours (bot.voice.frames.wav_header)
# Whether prepare_audio tries FFmpeg's libraries in-process (bot.voice.libav) before the ffmpeg command line. The
# command line alone when off, or when PyAV is not installed.
FAST_DECODE = True

# ffmpeg decodes this much past the maximum: enough to tell a long input from codec padding, no more.
DECODE_MARGIN = 0.5
# Output past the maximum by more than this counts as trimmed; less is encoder delay/padding (AAC adds ~0.03 s
# at the end of a 180 s file, MP3 up to ~0.1 s).
TRIM_TOLERANCE = 0.25
# Decoded audio this much shorter than the container's Duration means the file was cut off (a truncated MP3
# or FLAC decodes without complaint up to the cut; the header still promises the full length).
SHORTFALL_SECONDS = 0.25
SHORTFALL_FRACTION = 0.02

# Denoising (ffmpeg afftdn, noise floor tracked from the measured one) is applied when asked (`denoise=on`),
# or by default when the speech is less than this far above the noise. See denoise_default below.
DENOISE_BELOW_SNR_DB = 15.0
# afftdn's reduction. Measured (espeak-ng speech + white noise, true SNR against the clean speech after undoing
# the delay): 12.9 -> 17.6 dB and 7.9 -> 13.1 dB with nr=12 and nf at the measured floor; nr=30 gives the same
# true SNR with more artefacts; the noise-tracking mode (tn=1) gave only +0.3 to +0.5 dB.
DENOISE_NR_DB = 12

# The only demuxers ffmpeg may use: containers that carry their media inside themselves. Anything else is
# refused when opened ("Format not on whitelist"), above all the formats that make ffmpeg open other files or
# URLs named inside the upload: hls and dash playlists, concat lists, image2 sequences, imf, sdp, avisynth.
# Without this an uploaded playlist or ffconcat list decodes another recording on the bot's disk.
_DEMUXERS = ",".join(
    (
        "mov",  # the "mov,mp4,m4a,3gp,3g2,mj2" demuxer: m4a, mp4, mov, 3gp (external tracks stay off: below)
        "mp3",
        "ogg",  # opus, vorbis, flac in ogg
        "matroska",  # the "matroska,webm" demuxer
        "flac",
        "wav",
        "aac",  # raw ADTS
        "aiff",
        "caf",
        "amr",
        "amrnb",
        "amrwb",
        "asf",  # wma
        "png_pipe",  # a PNG: reported as a picture without audio (NoAudioStreamError), not as "not audio"
    )
)
# mov/mp4 can take a track's samples from another file (a "dref" alias). ffmpeg keeps that off by default;
# it is also set off explicitly when the file starts like one (the option is mov's own: ffmpeg refuses it for
# any other demuxer), and a file that names an external track is refused (see _Log.external).
_MOV_ATOMS = frozenset(
    {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"junk", b"uuid", b"moof", b"udta", b"pict"}
)
_MOV_SAFETY = ("-enable_drefs", "0", "-use_absolute_path", "0")
# Text and bitmap-font files that ffmpeg's tty/bintext demuxers render as "video": not media a user meant.
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
_LOG_LINE = re.compile(r"^(?:\[[^\]]*\] )*?\[(panic|fatal|error|warning|info|verbose|debug|trace)\] (.*)$")
_DURATION = re.compile(r"^\s+Duration: (\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_STREAM = re.compile(r"^\s+Stream #0:\d+\S*: (Audio|Video|Subtitle|Data|Attachment): ([^\s,]+)(.*)$")
_MAX_LOG_LINE = 4096
_READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class AudioLimits:
    """What prepare_audio accepts and how much work it may do."""

    min_seconds: float = 10.0
    max_seconds: float = 180.0
    max_input_bytes: int = 2 * 1024**3  # refused before decoding (TooLargeError)
    timeout: float = 120.0  # ffmpeg wall-clock cap; on expiry it is killed and DamagedAudioError raised
    # Only this much of a longer recording is decoded and searched for the best speech: CPU stays bounded
    # (a 20-minute m4a decodes in about a second) and memory flat (the PCM goes to a temporary file).
    max_decode_seconds: float = 1200.0


@dataclass(frozen=True)
class PreparedAudio:
    """A prompt ready for VoiceClone."""

    # Complete RIFF/WAVE file, 16 kHz mono s16 (levelled in place: a bytearray in-process). Out of repr:
    # asyncio.run reprs its task's result when it restores the SIGINT handler (CPython 3.11), and a 6 MB repr
    # costs 0.1 s; logs need no audio either.
    wav: bytes | bytearray = field(repr=False)  # bytes from prepare_audio
    duration: float  # seconds in `wav`
    source_duration: float | None  # the input's container Duration when ffmpeg reports one
    trimmed: bool  # some speech of the recording is not in `wav` (it did not fit max_seconds)
    gain_db: float  # loudness gain applied (0.0 when none)
    report: AudioReport = field(default_factory=AudioReport)
    # Which parts of the recording `wav` is made of: [start, end) in seconds of the decoded recording, in order;
    # and the span around them that lost no speech (bot.voice.frames.PromptPlan.span).
    kept: list[tuple[float, float]] = field(default_factory=list)
    kept_span: tuple[float, float | None] = (0.0, None)


@functools.cache
def find_ffmpeg() -> str:
    """ffmpeg on PATH, else the static binary bundled with imageio-ffmpeg; cached.

    PATH first on measurement (2 cores, Debian's 5.1 vs imageio-ffmpeg's static 9.0): the static binary starts
    ~42 ms sooner (`-version` 10 vs 52 ms) and wins for short clips (12 s m4a prepared in 24 vs 58 ms), but it
    decodes and resamples slower, so the cost target's 180 s m4a takes 137 vs 115 ms and a 60 min MP3 1140 vs
    521 ms. Put another ffmpeg first on PATH to change the choice.
    """
    return shutil.which("ffmpeg") or _bundled_ffmpeg()


def _bundled_ffmpeg() -> str:
    """The imageio-ffmpeg binary (raises RuntimeError when the wheel has none for this platform)."""
    import imageio_ffmpeg  # deferred: only needed when ffmpeg is not on PATH

    return imageio_ffmpeg.get_ffmpeg_exe()


async def prepare_audio(
    path: str | os.PathLike[str], limits: AudioLimits = AudioLimits(), *, denoise: bool | None = None
) -> PreparedAudio:
    """Convert `path` to a VoiceClone prompt made of its best speech (see bot.voice.frames.plan_prompt).

    `denoise`: True or False forces ffmpeg's afftdn on or off; None lets denoise_default decide from the
    measured noise. Raises an AudioError subclass (NotAudioError, NoAudioStreamError, DamagedAudioError,
    NoVoiceError and its TooNoisyError, TooShortError and its NotEnoughSpeechError, TooLargeError); OSError when
    the file cannot be read, RuntimeError when there is no ffmpeg at all.
    """
    prepared = await prepare_in_place(path, limits, denoise=denoise)
    return dataclasses.replace(prepared, wav=bytes(prepared.wav))


async def prepare_in_place(
    path: str | os.PathLike[str], limits: AudioLimits = AudioLimits(), *, denoise: bool | None = None
) -> PreparedAudio:
    """prepare_audio, its WAV the bytearray it was levelled in (no copy): for the decoder processes."""
    # Loaded here, not with this module: the bot's own process imports AudioLimits and find_ffmpeg from it and
    # never decodes (bot.voice.preparers does), so numpy and the VAD stay out of it.
    from bot.voice.frames import level_in_place, plan_prompt

    path = os.path.abspath(os.fspath(path))
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        raise NotAudioError("not a regular file" if info.st_size else "empty file")
    if info.st_size > limits.max_input_bytes:
        raise TooLargeError(info.st_size, limits.max_input_bytes)
    head = _file_head(path)  # also surfaces a permission problem as itself, not as "not audio"

    decoded = await _decode_fast(path, head, limits) if FAST_DECODE else None
    exe: str | None = None
    if decoded is None:
        exe = find_ffmpeg()
        decoded = await _decode(exe, path, head, limits)
    try:
        if decoded.silently_short and exe is not None:
            # An old system ffmpeg can skip what it cannot decode without a word (5.1 outputs nothing for
            # 32-bit FLAC): ask the newer bundled one before calling the file damaged.
            with contextlib.suppress(RuntimeError):
                bundled = _bundled_ffmpeg()
                if os.path.realpath(bundled) != os.path.realpath(exe):
                    decoded.pcm.close()
                    decoded = await _decode(bundled, path, head, limits)
        decoded.raise_for_problems(head)
        plan = plan_prompt(
            decoded.pcm.analyzer.frames(),
            min_seconds=limits.min_seconds,
            max_seconds=limits.max_seconds,
            source_seconds=decoded.log.duration,
            capped=decoded.capped,
        )
        # The prompt's bytes with room for the WAV header before them: levelled and headed in place, no copy.
        wav = decoded.pcm.read_ranges(plan.byte_ranges, room=WAV_HEADER)
    finally:
        decoded.pcm.close()
    report = plan.report
    if denoise is None:
        denoise = denoise_default(report)
    if denoise:
        wav = await _denoise(exe or find_ffmpeg(), wav, plan, limits)
    gain = level_in_place(wav, plan.speech)
    report = dataclasses.replace(
        report, gain_db=round(gain, 1), denoised=denoise, denoise_suggested=report.noisy and not denoise
    )
    return PreparedAudio(
        wav=wav,
        duration=(len(wav) - WAV_HEADER) / BYTES_PER_SECOND,
        source_duration=decoded.log.duration,
        trimmed=report.speech_dropped,
        gain_db=round(gain, 2),
        report=report,
        kept=plan.kept_seconds,
        kept_span=plan.span,
    )


def denoise_default(report: AudioReport) -> bool:
    """Whether to denoise when the user did not say: when background noise is audible (see DENOISE_BELOW_SNR_DB)."""
    return report.snr_db is not None and report.snr_db < DENOISE_BELOW_SNR_DB


async def _denoise(exe: str, wav: bytearray, plan: PromptPlan, limits: AudioLimits) -> bytearray:
    """ffmpeg's FFT denoiser over the chosen PCM (not the whole recording), noise floor from the analysis. `wav`
    and the result: the PCM after WAV_HEADER bytes of room."""
    pcm = memoryview(wav)[WAV_HEADER:]
    floor = min(max(round(plan.noise_db), -80), -20)  # afftdn takes -80..-20 dB
    args = [
        *("-nostdin", "-hide_banner", "-nostats", "-loglevel", "error"),
        *("-format_whitelist", "s16le", "-protocol_whitelist", "pipe"),
        *("-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0"),
        *("-af", f"afftdn=nr={DENOISE_NR_DB}:nf={floor}", "-f", "s16le", "-c:a", "pcm_s16le", "pipe:1"),
    ]
    process = await asyncio.create_subprocess_exec(
        exe, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(limits.timeout):
            out, err = await process.communicate(bytes(pcm))
    except TimeoutError:
        raise DamagedAudioError(f"ffmpeg did not finish denoising within {limits.timeout:g} s") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode or not out:
        return wav  # denoising is a nicety: the undenoised prompt is still good
    # afftdn delays its output (400 samples in ffmpeg 5.1 and 7): find the delay and take it back out.
    lag = _lag(pcm, out)
    cleaned = bytearray(WAV_HEADER + len(pcm))
    kept = out[lag * SAMPLE_WIDTH : lag * SAMPLE_WIDTH + len(pcm)]
    cleaned[WAV_HEADER : WAV_HEADER + len(kept)] = kept  # the last `lag` samples stay 0: part of the closing pause
    return cleaned


def _lag(original: bytes | bytearray | memoryview, delayed: bytes, limit: int = 4096) -> int:
    """Samples by which `delayed` lags `original` (0..limit), by cross-correlating their first 4 s."""
    import numpy as np

    count = min(len(original), len(delayed)) // SAMPLE_WIDTH
    span = min(count, 4 * SAMPLE_RATE)
    if span <= limit:
        return 0
    a = np.frombuffer(original, np.int16, span).astype(np.float64)
    b = np.frombuffer(delayed, np.int16, span).astype(np.float64)
    size = 1 << (2 * span - 1).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)[: limit + 1]
    return int(np.argmax(correlation))


def prepare_audio_sync(
    path: str | os.PathLike[str], limits: AudioLimits = AudioLimits(), *, denoise: bool | None = None
) -> PreparedAudio:
    """prepare_audio for callers without an event loop (the CLI)."""
    return asyncio.run(prepare_audio(path, limits, denoise=denoise))


@dataclass
class _Log:
    """What ffmpeg's log says about the input, parsed line by line as it arrives."""

    opened: bool = False
    duration: float | None = None
    duration_estimated: bool = False
    moov_missing: bool = False
    guessed: bool = False  # ffmpeg named the format "only with low score": random bytes get that
    refused_format: bool = False  # a demuxer outside _DEMUXERS was chosen and refused
    external: bool = False  # a mov track refers to media in another file (not opened)
    streams: list[tuple[str, str, bool]] = field(default_factory=list)  # (kind, codec, attached picture)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    _in_input: bool = False

    def feed(self, line: str) -> None:
        """Take one log line."""
        match = _LOG_LINE.match(line)
        if match is None:
            return
        level, message = match.groups()
        if level in ("panic", "fatal", "error"):
            self.error_count += 1
            if len(self.errors) < 10:
                self.errors.append(message)
            self.moov_missing |= "moov atom not found" in message
            self.refused_format |= "not on whitelist" in message
            return
        self.external |= "external track" in message  # mov: "Skipped opening external track: ..."
        self.guessed |= "detected only with low score" in message
        if "Estimating duration from bitrate" in message:
            self.duration_estimated = True
        if message.startswith("Input #0, "):
            self.opened = self._in_input = True
        elif self._in_input and not message.startswith(" "):
            self._in_input = False  # "Stream mapping:", "Output #0, ..."
        elif self._in_input:
            if self.duration is None and (found := _DURATION.match(message)):
                hours, minutes, seconds = found.groups()
                self.duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            elif found := _STREAM.match(message):
                kind, codec, rest = found.groups()
                self.streams.append((kind, codec, "(attached pic)" in rest))

    def kinds(self, kind: str) -> list[str]:
        """Codecs of the input's streams of one kind (cover art excluded)."""
        return [codec for k, codec, picture in self.streams if k == kind and not picture]


@dataclass
class _Decoded:
    """ffmpeg's output and log for one input."""

    pcm: _Pcm = field(repr=False)
    log: _Log
    max_seconds: float  # decoded at most this much (the decode cap)
    errors_seen: int  # errors logged before we stopped ffmpeg ourselves (those after are our doing)
    crashed: int | None  # ffmpeg's exit status when it failed without our stopping it

    @property
    def seconds(self) -> float:
        return self.pcm.size / BYTES_PER_SECOND

    @property
    def capped(self) -> bool:
        """The recording is longer than what was decoded."""
        return self.seconds > self.max_seconds + TRIM_TOLERANCE

    @property
    def shortfall(self) -> bool:
        """Less audio came out than the container promised (only judged on plain audio files)."""
        log = self.log
        plain = len(log.kinds("Audio")) == 1 and not log.kinds("Video")
        if not plain or log.duration is None or log.duration_estimated:
            # A video's Duration covers its longest track; an estimate from bitrate is no promise.
            return False
        expected = min(log.duration, self.max_seconds + DECODE_MARGIN)
        return self.seconds < expected - max(SHORTFALL_SECONDS, SHORTFALL_FRACTION * expected)

    @property
    def silently_short(self) -> bool:
        """Short or empty output with no error logged: the decoder may just be too old."""
        return self.log.opened and bool(self.log.kinds("Audio")) and not self.errors_seen and self.shortfall

    def raise_for_problems(self, head: bytes) -> None:
        """Raise the AudioError that fits what ffmpeg reported, if any."""
        log = self.log
        if not log.opened:
            if log.moov_missing and head[4:8] == b"ftyp":
                # A real MP4/M4A (it starts with an ftyp box) whose index, written last by most recorders, is
                # missing: an upload or recording cut short. That is damage, not a wrong file type; a
                # truncated MP3 or FLAC by contrast opens fine and is caught by the shortfall check below.
                raise DamagedAudioError("MP4/M4A without its moov index: the file is incomplete")
            if log.refused_format:
                # A playlist, a list of files, an image sequence, a subtitle or text file, an exotic format.
                raise NotAudioError("ffmpeg reads the file as a format the bot does not accept")
            raise NotAudioError(_summary(log.errors) or "ffmpeg cannot open the file")
        if log.external:
            raise NotAudioError("the file refers to media stored in another file")
        if log.guessed and (self.errors_seen or not log.kinds("Audio")):
            # About 1 random file in 700 passes for raw H.263 video or LRC lyrics on a weak probe; real
            # media probes with a high score. A guess that yields no audio, or only errors, is no media.
            raise NotAudioError("ffmpeg could only guess at the format and found no usable audio")
        if not log.kinds("Audio"):
            if any(codec not in _TEXT_CODECS for codec in log.kinds("Video")):
                raise NoAudioStreamError("the file has video or images but no audio track")
            raise NotAudioError("ffmpeg reads the file as text or subtitles, not media")
        if self.errors_seen:
            raise DamagedAudioError(_summary(log.errors))
        if self.crashed is not None:
            raise DamagedAudioError(f"ffmpeg failed with status {self.crashed} while decoding")
        if self.shortfall:
            raise DamagedAudioError(
                f"decoded {self.seconds:.2f} s of a file that declares {log.duration:.2f} s: it is truncated"
            )


async def _decode_fast(path: str, head: bytes, limits: AudioLimits) -> _Decoded | None:
    """The PCM of `path` through FFmpeg's libraries in this process (bot.voice.libav, on a worker thread), with the
    command line's guards; None when they do not vouch for the file (or PyAV is missing): ask the command line."""
    pcm = _Pcm(math.ceil((limits.max_seconds + 2 * DECODE_MARGIN) * BYTES_PER_SECOND))
    mov = dict(zip(_MOV_SAFETY[0::2], _MOV_SAFETY[1::2], strict=True)) if head[4:8] in _MOV_ATOMS else {}
    try:
        found = await asyncio.to_thread(
            libav.decode,
            path,
            demuxers=_DEMUXERS,
            mov_options={name.lstrip("-"): value for name, value in mov.items()},
            max_samples=round((limits.max_decode_seconds + DECODE_MARGIN) * SAMPLE_RATE),
            write=pcm.write,
            deadline=time.monotonic() + limits.timeout,
        )
    except TimeoutError:
        pcm.close()
        raise DamagedAudioError(f"the decoder did not finish within {limits.timeout:g} s") from None
    except BaseException:
        pcm.close()
        raise
    if found is None:
        pcm.close()
        return None
    pcm.finish()
    log = _Log(opened=True, duration=found.duration, duration_estimated=found.duration_estimated)
    log.streams = found.streams
    decoded = _Decoded(pcm, log, limits.max_decode_seconds, errors_seen=0, crashed=None)
    if decoded.shortfall:
        pcm.close()  # less audio than the container promised: the command line says whether it is damaged
        return None
    return decoded


async def _decode(exe: str, path: str, head: bytes, limits: AudioLimits) -> _Decoded:
    """Run ffmpeg on `path` and collect at most max_seconds + margin of 16 kHz mono s16 PCM."""
    args = [
        *("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info"),
        # Input side: ffmpeg reads the upload and nothing else. Only self-contained container formats (no
        # playlist or list naming other files), only the file protocol (nothing fetched from a URL); and
        # check frame CRCs: without it a FLAC with flipped bits decodes silently wrong.
        *("-format_whitelist", _DEMUXERS, "-protocol_whitelist", "file", "-err_detect", "crccheck"),
        *(_MOV_SAFETY if head[4:8] in _MOV_ATOMS else ()),
        *("-i", "file:" + path),  # "file:" so a name like "http:..." or "concat:..." stays a file name
        *("-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE)),
        *("-t", f"{limits.max_decode_seconds + DECODE_MARGIN:.3f}"),
        # Raw PCM: a WAV header written to a pipe carries wrong sizes. On a pipe ffmpeg flushes every packet
        # (under 1 KB) unless told not to: 32 KB writes wake the event loop 14x less often.
        *("-f", "s16le", "-c:a", "pcm_s16le", "-flush_packets", "0", "pipe:1"),
    ]
    cap = math.ceil((limits.max_decode_seconds + 2 * DECODE_MARGIN) * BYTES_PER_SECOND)
    pcm = _Pcm(math.ceil((limits.max_seconds + 2 * DECODE_MARGIN) * BYTES_PER_SECOND))
    log = _Log()
    process = await asyncio.create_subprocess_exec(
        exe,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    errors_seen: int | None = None  # set when we stop ffmpeg ourselves

    async def read_pcm() -> None:
        nonlocal errors_seen
        if await _read_capped(process.stdout, cap, pcm):
            # Cannot happen with -t unless ffmpeg misbehaves; keep the work bounded all the same. Kill here,
            # not after gather: ffmpeg blocked on a full pipe would never close stderr.
            errors_seen = log.error_count  # later errors (a broken pipe) are our doing
            process.kill()

    try:
        async with asyncio.timeout(limits.timeout):
            await asyncio.gather(read_pcm(), _read_log(process.stderr, log))
            await process.wait()
    except TimeoutError:
        pcm.close()
        raise DamagedAudioError(f"ffmpeg did not finish within {limits.timeout:g} s") from None
    except BaseException:
        pcm.close()
        raise
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    pcm.finish()
    if errors_seen is not None:
        return _Decoded(pcm, log, limits.max_decode_seconds, errors_seen, crashed=None)
    return _Decoded(pcm, log, limits.max_decode_seconds, log.error_count, crashed=process.returncode or None)


class _Pcm:
    """Decoded PCM as it arrives: analysed on the way in, kept in memory up to `memory_limit` bytes and in a
    temporary file beyond (an hour-long upload must not cost more memory than a three-minute one)."""

    def __init__(self, memory_limit: int):
        from bot.voice.frames import FrameAnalyzer  # see prepare_in_place

        self.analyzer = FrameAnalyzer()
        self._file = tempfile.SpooledTemporaryFile(max_size=memory_limit)  # noqa: SIM115 (closed by close())
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.analyzer.feed(chunk)
        self._file.write(chunk)
        self.size += len(chunk)

    def finish(self) -> None:
        """Drop an odd last byte (half a sample)."""
        if self.size % SAMPLE_WIDTH:
            self.size -= 1
            self._file.truncate(self.size)

    def read_ranges(self, ranges: list[tuple[int, int]], room: int = 0) -> bytearray:
        """The bytes of each [start, end) range, joined, after `room` zero bytes."""
        ranges = [(start, min(end, self.size)) for start, end in ranges if start < self.size]
        out = bytearray(room + sum(end - start for start, end in ranges))
        view, at = memoryview(out), room
        for start, end in ranges:
            self._file.seek(start)
            read = self._file.readinto(view[at : at + end - start])  # type: ignore[attr-defined]
            at += read or 0
        return out

    def close(self) -> None:
        self._file.close()


async def _read_capped(stream: asyncio.StreamReader, cap: int, sink: _Pcm) -> bool:
    """Read a stream into `sink` to its end or to `cap` bytes; True when the cap stopped it."""
    while sink.size < cap:
        chunk = await stream.read(min(_READ_CHUNK, cap - sink.size))
        if not chunk:
            return False
        sink.write(chunk)
    return True


async def _read_log(stream: asyncio.StreamReader, log: _Log) -> None:
    """Feed ffmpeg's stderr to `log` line by line, with bounded memory whatever ffmpeg prints."""
    pending = b""
    while chunk := await stream.read(_READ_CHUNK):
        *lines, pending = re.split(rb"[\r\n]", pending + chunk)
        for line in lines:
            log.feed(line[:_MAX_LOG_LINE].decode("utf-8", "replace"))
        if len(pending) > _MAX_LOG_LINE:
            log.feed(pending[:_MAX_LOG_LINE].decode("utf-8", "replace"))
            pending = b""
    if pending:
        log.feed(pending[:_MAX_LOG_LINE].decode("utf-8", "replace"))


def _file_head(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read(16)


def _summary(errors: list[str]) -> str:
    return "; ".join(dict.fromkeys(errors[:3]))
