"""One recording in, one cloned voice out: the core every front end (CLI, Slack) shares."""

from __future__ import annotations

import asyncio
import copy
import mmap
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, fields
from typing import Any

from bot import metrics
from bot.errors import ApiError, PromptTextError
from bot.tencent.voiceclone import MAX_PROMPT_TEXT, VoiceCloneClient, validate_voice_name
from bot.voice.analysis import AudioReport
from bot.voice.audio import AudioLimits
from bot.voice.preparers import Preparers, shared
from bot.voice.transcript import TranscriptUse

StageCallback = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class CloneRequest:
    """What to clone, as the user asked for it."""

    name: str
    text: str | None = None
    model: str | None = None
    language: str | None = None
    denoise: bool | None = None  # None: decided from the measured noise
    # Set when `text` or `language` came from a transcript the platform made (Slack's, bot.work.transcripts): its
    # text is then only the words of the audio sent, so it is sent even when the prompt is trimmed.
    transcript: TranscriptUse | None = None


@dataclass(frozen=True)
class CloneResult:
    """What the user is told after a successful clone."""

    voice_id: str
    request_id: str | None
    name: str
    seconds: float
    source_seconds: float | None
    trimmed: bool
    text_sent: bool
    text_dropped: bool
    model: str | None
    language: str | None
    gain_db: float = 0.0
    # AudioReport.to_dict() of what was found and done (None in results stored before it existed).
    audio: dict[str, Any] | None = None
    # TranscriptUse.to_dict(): what Slack's transcript gave (None: it had none, or the result is older).
    transcript: dict[str, Any] | None = None

    @property
    def report(self) -> AudioReport | None:
        """The audio report card's data, when the result has one."""
        return AudioReport.from_dict(self.audio) if self.audio is not None else None

    @property
    def transcript_use(self) -> TranscriptUse | None:
        """What Slack's transcript gave, when there was one."""
        return TranscriptUse.from_dict(self.transcript) if self.transcript is not None else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CloneResult:
        """Rebuild from to_dict(), also one stored by an older or newer version (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def check_request(request: CloneRequest) -> None:
    """Refuse a bad name or transcript before any work is done."""
    validate_voice_name(request.name)
    if request.text is not None and len(request.text) > MAX_PROMPT_TEXT:
        raise PromptTextError(len(request.text), MAX_PROMPT_TEXT)


@dataclass(frozen=True)
class Prompt:
    """A recording made into what VoiceClone takes, plus what the user is told about it; not yet sent."""

    # An anonymous mapping as the decoder process sent it (bot.voice.preparers: no copy, its pages returned when
    # dropped); bytes when loaded from disk or made in-process. Both are read as buffers (hashlib, base64, files).
    wav: bytes | mmap.mmap
    seconds: float
    source_seconds: float | None
    trimmed: bool
    gain_db: float
    audio: dict[str, Any] | None
    # Which parts of the recording the audio is made of: [start, end] in seconds, in order; and the span around them
    # in which only silence was cut ([start, end], end None: to the end). None in prompts stored before they existed.
    kept: list[list[float]] | None = None
    kept_span: list[float | None] | None = None

    def meta(self) -> dict[str, Any]:
        """Everything but the audio, JSON-ready (stored while the prompt waits for consent)."""
        # Not asdict(self) and then drop the audio: asdict deep-copies every field, the audio included (megabytes,
        # and a mapping from the decoder processes cannot be copied at all).
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "wav"}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], wav: bytes) -> Prompt:
        """Rebuild from meta() and the stored audio."""
        known = {f.name for f in fields(cls)} - {"wav"}
        return cls(wav=wav, **{k: v for k, v in meta.items() if k in known})

    @property
    def report(self) -> AudioReport | None:
        """The audio report card's data."""
        return AudioReport.from_dict(self.audio) if self.audio is not None else None


async def prepare_prompt(
    path: str | os.PathLike[str],
    request: CloneRequest,
    *,
    limits: AudioLimits | None = None,
    ffmpeg_slots: asyncio.Semaphore | None = None,
    on_stage: StageCallback | None = None,
    preparers: Preparers | None = None,
) -> Prompt:
    """Convert and analyse the recording (no API call) in one of the decoder processes (bot.voice.preparers; the
    process's shared ones unless `preparers` says which); raise an AudioError when it cannot be used."""
    check_request(request)
    if on_stage:
        await on_stage("converting")
    async with AsyncExitStack() as stack:
        if ffmpeg_slots is not None:
            await stack.enter_async_context(ffmpeg_slots)
        prepared = await (preparers or shared()).prepare(path, limits or AudioLimits(), denoise=request.denoise)
    return Prompt(
        wav=prepared.wav,
        seconds=round(prepared.duration, 2),
        source_seconds=None if prepared.source_duration is None else round(prepared.source_duration, 2),
        trimmed=prepared.trimmed,
        gain_db=round(prepared.gain_db, 1),
        audio=prepared.report.to_dict(),
        kept=[[start, end] for start, end in prepared.kept],
        kept_span=list(prepared.kept_span),
    )


async def clone_prompt(
    prompt: Prompt, request: CloneRequest, client: VoiceCloneClient, *, on_stage: StageCallback | None = None
) -> CloneResult:
    """Send a prepared prompt to VoiceClone; raise ApiError on a refusal."""
    # A transcript the user typed describes the whole recording. Cutting silence keeps every word, so it still
    # matches; a window that leaves speech out (prompt.trimmed) does not. Slack's is cut to the audio sent.
    if request.transcript is not None and request.transcript.text:
        text = request.text or None
    else:
        text = request.text if request.text and not prompt.trimmed else None
    if on_stage:
        await on_stage("cloning")
    started = time.monotonic()
    try:
        outcome = await client.clone(
            name=request.name,
            wav=prompt.wav,
            text=text,
            model=request.model,
            language=request.language,
        )
    except ApiError as exc:
        metrics.TRTC_ERRORS.labels(code=exc.code).inc()
        raise
    finally:
        metrics.TRTC_SECONDS.labels(action="VoiceClone").observe(time.monotonic() - started)
    return CloneResult(
        voice_id=outcome.voice_id,
        request_id=outcome.request_id,
        name=request.name,
        seconds=prompt.seconds,
        source_seconds=prompt.source_seconds,
        trimmed=prompt.trimmed,
        text_sent=text is not None,
        text_dropped=bool(request.text) and text is None,
        model=request.model or client.settings.voiceclone_model,
        language=request.language or client.settings.voiceclone_language,
        gain_db=prompt.gain_db,
        audio=prompt.audio,
        transcript=request.transcript.to_dict() if request.transcript is not None else None,
    )


async def clone_recording(
    path: str | os.PathLike[str],
    request: CloneRequest,
    client: VoiceCloneClient,
    *,
    limits: AudioLimits | None = None,
    ffmpeg_slots: asyncio.Semaphore | None = None,
    on_stage: StageCallback | None = None,
) -> CloneResult:
    """Convert the recording and clone it; raise a BotError on anything the user should hear about."""
    prompt = await prepare_prompt(path, request, limits=limits, ffmpeg_slots=ffmpeg_slots, on_stage=on_stage)
    return await clone_prompt(prompt, request, client, on_stage=on_stage)
