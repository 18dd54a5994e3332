"""The speech search: what is in a decoded recording, and the best prompt that can be made of it.

Works on 16 kHz mono s16 PCM in 30 ms frames. `FrameAnalyzer` takes the PCM as ffmpeg produces it (so the
analysis runs while ffmpeg is still decoding) and keeps a few numbers per frame, never the audio. `plan_prompt`
then finds the speech, refuses what cannot make a prompt, and picks which parts of the recording to send:
leading and trailing silence dropped, long pauses shortened, the best window of at most max_seconds. `level`
brings the chosen speech to a steady loudness under a peak ceiling.

Speech detection: the WebRTC voice-activity detector (`webrtcvad-wheels`: prebuilt wheels, no model file, no
download; 2-3 us per 30 ms frame here), gated by energy: a frame is speech when the VAD says so AND it is
clearly above the recording's noise floor (its 10th percentile frame level). The VAD alone calls much of a
steady loud noise "speech"; the energy gate alone calls every loud noise burst speech.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import webrtcvad

from bot.errors import NoVoiceError, TooShortError
from bot.voice.analysis import AudioReport, NotEnoughSpeechError, TooNoisyError

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 480  # 30 ms: one of the frame sizes the WebRTC VAD takes
FRAME_BYTES = FRAME_SAMPLES * 2
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
FULL_SCALE = 32768.0

# 0 (keeps the most) .. 3 (drops the most non-speech). 2 keeps the soft ends of words in clean speech and
# still drops most steady noise; the energy gate below does the rest.
VAD_MODE = 2
# A sample this close to full scale (-0.09 dBFS) counts as clipped: the resampler's ringing puts the flat tops
# of a clipped 44.1/48 kHz recording near, not at, 32767.
CLIP_LEVEL = 32440
CLIPPED_FRAME_SAMPLES = 2  # a frame with at least this many clipped samples is a clipped frame
# A voiced frame must be this far above the noise floor (its level includes the noise) ...
SPEECH_ABOVE_NOISE_DB = 6.0
# ... and no more than this far below the loudest frame, nor below an absolute floor.
SPEECH_BELOW_LOUDEST_DB = 45.0
SPEECH_FLOOR_DBFS = -85.0
# Speech rises and falls with its syllables: within MODULATION_WINDOW around a speech frame the frame levels
# span at least MODULATION_DB. Steady sounds (mains hum, a fan, a tone) do not, even where the VAD takes them
# for voice. Measured span over 1 s: espeak-ng speech 40-70 dB, the same under white noise at ~10 dB SNR
# 12-20 dB; 50 Hz hum with hiss under 1 dB, white noise 1-2 dB.
MODULATION_WINDOW = 1.0
MODULATION_DB = 6.0
SILENCE_PEAK_DBFS = -50.0  # peak below this: silence or a noise floor, whatever its shape
# Speech runs closer than this are one unit (a window never starts or ends between them: inside words).
MERGE_GAP = 0.2
MIN_UNIT_SPEECH = 0.09  # shorter isolated blips (clicks, a cough's edge) are not speech
# Pauses longer than LONG_PAUSE are shortened to SHORT_PAUSE (half of it kept from each side of the pause).
LONG_PAUSE = 0.7
SHORT_PAUSE = 0.3
LEAD_IN = 0.1  # kept before the first word
TAIL = 0.15  # kept after the last word
# Window score: seconds of speech minus this many times the seconds of clipped speech. Under 1, so a longer
# window always wins (every unit adds more than it costs): clipping only decides between windows as full.
CLIP_PENALTY = 0.9
# Level: speech RMS brought to this, unless that would push the peak over the ceiling.
TARGET_SPEECH_DBFS = -20.0
PEAK_CEILING_DBFS = -1.0
MIN_GAIN_DB = 1.0
# Refusal: speech hardly above the noise (or no speech found in a loud recording) is "too noisy", not silent.
MIN_SNR_DB = 3.0
LOUD_NOISE_DBFS = -45.0


class FrameAnalyzer:
    """Per-frame level, clipping and voice activity of PCM fed in pieces of any size."""

    def __init__(self) -> None:
        self._vad = webrtcvad.Vad(VAD_MODE)
        self._rest = b""
        self._power: list[np.ndarray] = []
        self._clipped: list[np.ndarray] = []
        self._voiced = bytearray()
        self.peak = 0  # largest |sample|
        self.samples = 0  # every sample fed, the incomplete last frame included

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Take the next piece of PCM."""
        self.samples += len(data) // 2
        if self._rest:
            data = self._rest + bytes(data)
        usable = len(data) // FRAME_BYTES * FRAME_BYTES
        self._rest = bytes(data[usable:])
        if not usable:
            return
        block = np.frombuffer(data, np.int16, usable // 2).reshape(-1, FRAME_SAMPLES)
        wide = block.astype(np.float32)
        self._power.append(np.einsum("ij,ij->i", wide, wide) / FRAME_SAMPLES)
        clipped = (block >= CLIP_LEVEL) | (block <= -CLIP_LEVEL)  # |sample|, without an int32 copy
        self._clipped.append(np.count_nonzero(clipped, axis=1) >= CLIPPED_FRAME_SAMPLES)
        self.peak = max(self.peak, int(block.max()), -int(block.min()))
        view, is_speech = memoryview(data), self._vad.is_speech
        self._voiced += bytes(is_speech(view[i : i + FRAME_BYTES], SAMPLE_RATE) for i in range(0, usable, FRAME_BYTES))

    def frames(self) -> Frames:
        """Everything fed so far, as arrays (the incomplete last frame is left out)."""
        power = np.concatenate(self._power) if self._power else np.zeros(0)
        clipped = np.concatenate(self._clipped) if self._clipped else np.zeros(0, bool)
        voiced = np.frombuffer(bytes(self._voiced), np.uint8).astype(bool)
        return Frames(
            power=power.astype(np.float64), clipped=clipped, voiced=voiced, peak=self.peak, samples=self.samples
        )


@dataclass
class Frames:
    power: np.ndarray  # mean square per frame, in s16 units
    clipped: np.ndarray  # bool per frame
    voiced: np.ndarray  # bool per frame: the VAD's verdict
    peak: int
    samples: int

    @property
    def peak_dbfs(self) -> float:
        return 20 * math.log10(self.peak / FULL_SCALE) if self.peak else -math.inf


@dataclass(frozen=True)
class PromptPlan:
    """Which frame ranges of the recording make the prompt, and what was found."""

    pieces: list[tuple[int, int]]  # [start, end) in frames, in order
    speech: np.ndarray  # bool per frame of the prompt (the pieces joined): speech or not
    noise_db: float  # the recording's noise floor, dBFS
    report: AudioReport
    # The widest span of the recording, in seconds, around the pieces that lost no speech: what it holds outside
    # the pieces is silence (trimmed, or pauses shortened), so words spoken inside it are all in the prompt. From
    # the end of the speech left out before the window (0.0: none) to the start of the speech left out after it
    # (None: none, to the end of the recording). A timed transcript is matched to the prompt with it.
    span: tuple[float, float | None] = (0.0, None)

    @property
    def byte_ranges(self) -> list[tuple[int, int]]:
        return [(start * FRAME_BYTES, end * FRAME_BYTES) for start, end in self.pieces]

    @property
    def kept_seconds(self) -> list[tuple[float, float]]:
        """The pieces as [start, end) in seconds of the recording."""
        return [(round(start * FRAME_SECONDS, 3), round(end * FRAME_SECONDS, 3)) for start, end in self.pieces]


def _db(power: np.ndarray | float) -> Any:
    return 10 * np.log10(np.maximum(power, 1e-3) / FULL_SCALE**2)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def find_speech(frames: Frames) -> tuple[np.ndarray, float]:
    """Speech frames, and the noise floor's mean square (10th percentile frame)."""
    if len(frames.power) == 0:
        return np.zeros(0, bool), 0.0
    level = _db(frames.power)
    noise_power = float(np.percentile(frames.power, 10))
    gate = max(float(_db(noise_power)) + SPEECH_ABOVE_NOISE_DB, float(level.max()) - SPEECH_BELOW_LOUDEST_DB)
    gate = max(gate, SPEECH_FLOOR_DBFS)
    return frames.voiced & (level > gate) & _modulated(level), noise_power


def _modulated(level: np.ndarray) -> np.ndarray:
    """Frames whose surroundings (MODULATION_WINDOW) span at least MODULATION_DB of level."""
    width = max(round(MODULATION_WINDOW / FRAME_SECONDS) | 1, 1)
    if len(level) < width:
        return np.full(len(level), float(level.max() - level.min()) >= MODULATION_DB) if len(level) else level > 0
    padded = np.pad(level, width // 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    return (windows.max(axis=1) - windows.min(axis=1)) >= MODULATION_DB


def _units(speech: np.ndarray, max_frames: int) -> list[tuple[int, int]]:
    """Runs of speech merged across short gaps, without blips, none longer than max_frames."""
    merge = round(MERGE_GAP / FRAME_SECONDS)
    merged: list[list[int]] = []
    for start, end in _runs(speech):
        if merged and start - merged[-1][1] <= merge:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    minimum = round(MIN_UNIT_SPEECH / FRAME_SECONDS)
    units = []
    for start, end in merged:
        if int(speech[start:end].sum()) < minimum:
            continue
        while end - start > max_frames:  # speech with no pause for max_seconds: cut it
            units.append((start, start + max_frames))
            start += max_frames
        units.append((start, end))
    return units


def plan_prompt(
    frames: Frames,
    *,
    min_seconds: float,
    max_seconds: float,
    source_seconds: float | None = None,
    capped: bool = False,
) -> PromptPlan:
    """Choose what to send; raise NoVoiceError, TooNoisyError, TooShortError or NotEnoughSpeechError."""
    recording = frames.samples / SAMPLE_RATE
    peak_db = frames.peak_dbfs
    if frames.peak == 0 or peak_db < SILENCE_PEAK_DBFS:
        raise NoVoiceError(peak_db)
    speech, noise_power = find_speech(frames)
    speech_frames = int(speech.sum())
    speech_seconds = speech_frames * FRAME_SECONDS
    speech_power = float(frames.power[speech].mean()) if speech_frames else 0.0
    snr = _snr(speech_power, noise_power)
    noise_db = float(_db(noise_power))
    if speech_seconds < min_seconds or (snr is not None and snr < MIN_SNR_DB):
        # A loud "noise floor" only means noise when the recording had room for pauses: in a short clip of
        # continuous talk the quietest frames are the speech's own word gaps, and "too short" is the answer.
        loud_floor = noise_db > LOUD_NOISE_DBFS and recording >= min_seconds
        if (snr is not None and snr < MIN_SNR_DB) or (loud_floor and speech_seconds < min_seconds):
            raise TooNoisyError(peak_db, snr, speech_seconds)
        if speech_frames == 0:
            raise NoVoiceError(peak_db)
        if recording < min_seconds:
            raise TooShortError(recording, min_seconds)
        raise NotEnoughSpeechError(speech_seconds, min_seconds, recording)

    to_frames = 1 / FRAME_SECONDS
    lead, tail = round(LEAD_IN * to_frames), round(TAIL * to_frames)
    long_pause, half = round(LONG_PAUSE * to_frames), round(SHORT_PAUSE * to_frames / 2)
    max_frames = int(max_seconds * to_frames)
    units = _units(speech, max_frames - lead - tail)
    n = len(units)
    # Kept length of the pause after unit i, and the speech and clipped speech in each unit.
    gaps = [min(units[i + 1][0] - units[i][1], long_pause if units[i + 1][0] - units[i][1] <= long_pause else 2 * half)
            for i in range(n - 1)]  # fmt: skip
    clipped_speech = speech & frames.clipped
    unit_speech = [int(speech[a:b].sum()) for a, b in units]
    unit_clipped = [int(clipped_speech[a:b].sum()) for a, b in units]

    total = len(frames.power)
    # Two pointers over units: for each first unit, as many following units as fit in max_frames.
    best: tuple[float, int, int] | None = None
    j, length, score_speech, score_clipped = 0, 0, 0, 0
    for i in range(n):
        if j < i:
            j, length, score_speech, score_clipped = i, 0, 0, 0
        while j < n:
            extra = (units[j][1] - units[j][0]) + (gaps[j - 1] if j > i else 0)
            # Lead-in and tail as far as the recording has them (a 180 s recording of talk fits whole).
            if min(lead, units[i][0]) + length + extra + min(tail, total - units[j][1]) > max_frames:
                break
            length += extra
            score_speech += unit_speech[j]
            score_clipped += unit_clipped[j]
            j += 1
        score = score_speech - CLIP_PENALTY * score_clipped
        if best is None or score > best[0]:
            best = (score, i, j)
        if j > i:  # drop unit i before moving on
            length -= (units[i][1] - units[i][0]) + (gaps[i] if i + 1 < j else 0)
            score_speech -= unit_speech[i]
            score_clipped -= unit_clipped[i]
    assert best is not None
    _, first, last = best
    chosen = units[first:last]

    pieces: list[list[int]] = []
    start = max(chosen[0][0] - lead, 0)
    for k, (a, b) in enumerate(chosen):
        if k == 0:
            pieces.append([start, b])
            continue
        gap = a - chosen[k - 1][1]
        if gap <= long_pause:
            pieces[-1][1] = b
        else:
            pieces[-1][1] += half
            pieces.append([a - half, b])
    pieces[-1][1] = min(pieces[-1][1] + tail, total)
    ranges = [(a, b) for a, b in pieces]

    sent_frames = sum(b - a for a, b in ranges)
    window_speech = np.zeros(total, bool)
    for a, b in ranges:
        window_speech[a:b] = speech[a:b]
    used = int(window_speech.sum())
    used_clipped = int((window_speech & frames.clipped).sum())
    window_start, window_end = ranges[0][0] * FRAME_SECONDS, ranges[-1][1] * FRAME_SECONDS
    dropped = speech_frames - used
    sent = sent_frames * FRAME_SECONDS
    report = AudioReport(
        recording_seconds=round(recording, 2),
        source_seconds=None if source_seconds is None else round(source_seconds, 2),
        capped=capped,
        speech_seconds=round(speech_seconds, 2),
        used_speech_seconds=round(used * FRAME_SECONDS, 2),
        sent_seconds=round(sent, 2),
        silence_removed=round(max(recording - sent - _span_of_dropped(units, chosen, gaps), 0.0), 2),
        dropped_speech_seconds=round(dropped * FRAME_SECONDS, 2),
        window_start=round(window_start, 2),
        window_end=round(window_end, 2),
        clipped_share=round(used_clipped / used, 4) if used else 0.0,
        snr_db=None if snr is None else round(snr, 1),
    )
    prompt_speech = np.concatenate([speech[a:b] for a, b in ranges])
    # Speech left out lies in the units outside the window; past the decoded part of a capped recording, anything.
    span_start = round(units[first - 1][1] * FRAME_SECONDS, 3) if first > 0 else 0.0
    span_end = round(units[last][0] * FRAME_SECONDS, 3) if last < n else (round(recording, 3) if capped else None)
    return PromptPlan(
        pieces=ranges, speech=prompt_speech, noise_db=noise_db, report=report, span=(span_start, span_end)
    )


def _span_of_dropped(units: list[tuple[int, int]], chosen: list[tuple[int, int]], gaps: list[int]) -> float:
    """Seconds of recording left out with the speech outside the window (so it is not counted as silence)."""
    if not units or len(chosen) == len(units):
        return 0.0
    before = chosen[0][0] - units[0][0]
    after = units[-1][1] - chosen[-1][1]
    return (before + after) * FRAME_SECONDS


def _snr(speech_power: float, noise_power: float) -> float | None:
    """Speech above the noise floor in dB; None when there is no measurable noise (digital silence)."""
    if noise_power < 1.0:  # below -90 dBFS: digital silence between words
        return None
    if speech_power <= noise_power:
        return 0.0
    return 10 * math.log10((speech_power - noise_power) / noise_power)


# Samples looked at or levelled at a time (8 s): no float or int32 copy of a whole prompt is made (a 180 s prompt
# as float32 is 11.5 MB; the old whole-prompt level() peaked at ~29 MB for one).
LEVEL_SLICE = 256 * FRAME_SAMPLES


def speech_level(samples: np.ndarray, speech: np.ndarray) -> float:
    """RMS of the frames marked as speech, in dBFS."""
    count = min(len(samples) // FRAME_SAMPLES, len(speech))
    step = LEVEL_SLICE // FRAME_SAMPLES
    energy, frames = 0.0, 0
    for first in range(0, count, step):
        marks = speech[first : min(first + step, count)]
        blocks = samples[first * FRAME_SAMPLES : (first + len(marks)) * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
        chosen = blocks[marks].astype(np.float32)
        energy += float(np.einsum("ij,ij->", chosen, chosen, dtype=np.float64))
        frames += len(chosen)
    if not frames:
        return -math.inf
    return float(_db(energy / (frames * FRAME_SAMPLES)))


def level_in_place(wav: bytearray, speech: np.ndarray) -> float:
    """Bring the speech in `wav` (a 44-byte header's room, then 16 kHz mono s16 PCM) to TARGET_SPEECH_DBFS with its
    peak at most PEAK_CEILING_DBFS, write the WAV header in front, and return the gain applied in dB (0.0 when under
    MIN_GAIN_DB either way). `speech` marks the speech frames. Works LEVEL_SLICE samples at a time."""
    samples = np.frombuffer(wav, np.int16, (len(wav) - 44) // 2, offset=44)
    wav[:44] = wav_header(len(samples))
    speech_db = speech_level(samples, speech)
    peak = 0
    for first in range(0, len(samples), LEVEL_SLICE):
        piece = samples[first : first + LEVEL_SLICE]
        peak = max(peak, int(piece.max()), -int(piece.min()))
    peak_db = 20 * math.log10(peak / FULL_SCALE) if peak else -math.inf
    gain = min(TARGET_SPEECH_DBFS - speech_db, PEAK_CEILING_DBFS - peak_db)
    if abs(gain) < MIN_GAIN_DB or not math.isfinite(gain):
        return 0.0
    factor = np.float32(10 ** (gain / 20))
    scaled = np.empty(min(LEVEL_SLICE, len(samples)), np.float32)
    for first in range(0, len(samples), LEVEL_SLICE):
        piece = samples[first : first + LEVEL_SLICE]
        out = scaled[: len(piece)]
        np.multiply(piece, factor, out=out)
        np.clip(np.rint(out, out=out), -32768, 32767, out=out)
        piece[:] = out
    return round(gain, 2)


def level(pcm: bytes | bytearray | memoryview, speech: np.ndarray) -> tuple[bytes, float]:
    """The PCM as a complete WAV file levelled as level_in_place does, and the gain applied in dB."""
    usable = len(pcm) // 2 * 2
    wav = bytearray(44 + usable)
    wav[44:] = memoryview(pcm)[:usable]
    gain = level_in_place(wav, speech)
    return bytes(wav), gain


def wav_header(samples: int) -> bytes:
    """The 44-byte RIFF header of a 16 kHz mono s16 WAV holding `samples` samples."""
    data = samples * 2
    return (
        b"RIFF" + (36 + data).to_bytes(4, "little") + b"WAVEfmt "
        + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
        + SAMPLE_RATE.to_bytes(4, "little") + (SAMPLE_RATE * 2).to_bytes(4, "little")
        + (2).to_bytes(2, "little") + (16).to_bytes(2, "little") + b"data" + data.to_bytes(4, "little")
    )  # fmt: skip
