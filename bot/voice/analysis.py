"""What was found in a recording, in a form every part of the bot can read without numpy: the report (AudioReport)
and the two refusals the speech search adds to bot.errors (NotEnoughSpeechError, TooNoisyError).

The search itself, numpy and the WebRTC VAD, lives in bot.voice.frames; it runs where recordings are decoded (in the
decoder processes of bot.voice.preparers, or in-process for the command line and the tests), so the bot's own
process never loads numpy for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from bot.errors import NoVoiceError, TooShortError

# Report thresholds (warnings are advice; the refusals are in bot.voice.frames).
NOISY_SNR_DB = 15.0  # speech less than this above the noise: background noise is audible
CLIPPING_WARN_SHARE = 0.01
FEW_SPEECH_SECONDS = 15.0


class NotEnoughSpeechError(TooShortError):
    """The recording is long enough, but holds less speech than the minimum."""

    def __init__(self, speech_seconds: float, minimum: float, recording_seconds: float):
        super().__init__(speech_seconds, minimum)
        self.speech_seconds = speech_seconds
        self.recording_seconds = recording_seconds
        # Not TooShortError's "recording is N s": N here is the speech found, and the recording is longer.
        self.args = (
            f"{speech_seconds:.1f} s of speech found in a {recording_seconds:.1f} s recording, "
            f"minimum {minimum:.0f} s of speech",
        )


class TooNoisyError(NoVoiceError):
    """Mostly noise: loud, yet no speech stands out of it."""

    def __init__(self, peak_dbfs: float | None, snr_db: float | None, speech_seconds: float):
        super().__init__(peak_dbfs)
        self.snr_db = snr_db
        self.speech_seconds = speech_seconds


@dataclass(frozen=True)
class AudioReport:
    """What was found in the recording and what was done to it: JSON-ready, every field with a default."""

    recording_seconds: float = 0.0  # decoded (at most the decode cap)
    source_seconds: float | None = None  # the container's Duration when known
    capped: bool = False  # the recording was longer than the decode cap: only its start was considered
    speech_seconds: float = 0.0  # speech found in what was decoded
    used_speech_seconds: float = 0.0  # speech in what is sent
    sent_seconds: float = 0.0
    silence_removed: float = 0.0  # leading/trailing silence and shortened pauses, in seconds
    dropped_speech_seconds: float = 0.0  # speech left out because it did not fit max_seconds
    window_start: float = 0.0  # where the sent part starts and ends in the recording
    window_end: float = 0.0
    gain_db: float = 0.0
    clipped_share: float = 0.0  # of the sent speech
    snr_db: float | None = None  # speech above background noise (None: no measurable noise)
    denoised: bool = False
    denoise_suggested: bool = False

    @property
    def speech_dropped(self) -> bool:
        """Some speech is not in what is sent (so a transcript of the whole no longer matches)."""
        return self.dropped_speech_seconds > 0 or self.capped

    @property
    def noisy(self) -> bool:
        return self.snr_db is not None and self.snr_db < NOISY_SNR_DB

    @property
    def clipping(self) -> bool:
        return self.clipped_share >= CLIPPING_WARN_SHARE

    @property
    def little_speech(self) -> bool:
        return self.used_speech_seconds < FEW_SPEECH_SECONDS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AudioReport:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

