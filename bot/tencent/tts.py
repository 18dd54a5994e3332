"""TRTC TextToSpeech: make a cloned voice speak. The same pacing, retries and error mapping as VoiceClone
(bot.tencent.voiceclone); TextToSpeech counts in a window of its own (TRTC_MAX_RPS per action, as Tencent counts).

One request speaks at most MAX_TEXT characters; a longer text (up to MAX_LONG_TEXT) is cut by split_text at
sentence ends, then clauses, then spaces, and speak_parts speaks the parts; bot.voice.joining.speak_long joins them
into one clip."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.trtc.v20190722 import models

from bot import metrics
from bot.errors import ApiError, InputError
from bot.settings import Settings
from bot.tencent.limiter import PerActionLimiter, RateLimiter
from bot.tencent.voiceclone import NETWORK_ERROR, UNEXPECTED_RESPONSE, _from_sdk, sdk_client, with_retries

log = logging.getLogger(__name__)

ACTION = "TextToSpeech"
# The international TextToSpeech documentation's ranges.
MAX_TEXT = 255
SPEED = (0.5, 2.0)
VOLUME = (0.0, 10.0)  # above 0, at most 10
PITCH = (-12, 12)
FORMATS = ("pcm", "wav", "mp3")
SAMPLE_RATES = (16000, 24000)
# The only TTS model the international documentation names.
TTS_MODEL = "flow_01_turbo"
# The longest text spoken as one clip, in parts of at most MAX_TEXT (a Slack message is read aloud up to this).
MAX_LONG_TEXT = 3000
# Parts of one long text in flight at once (each still waits for the per-action limiter).
PARTS_AT_ONCE = 3


class SpeechParamError(InputError):
    """A TextToSpeech parameter outside the documented range; `field` names it, `allowed` says what is."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field} {value!r}: {allowed}")


@dataclass(frozen=True)
class Voice:
    """How to speak: the voice and its three knobs."""

    voice_id: str
    speed: float = 1.0
    volume: float = 1.0
    pitch: int = 0


@dataclass(frozen=True)
class Speech:
    """What TextToSpeech returned."""

    audio: bytes
    format: str
    sample_rate: int
    duration_ms: int | None
    request_id: str | None


def check_speech(
    text: str, voice: Voice, fmt: str = "mp3", sample_rate: int = 24000, *, longest: int = MAX_TEXT
) -> str:
    """Return the stripped text if TextToSpeech accepts all of this, else raise SpeechParamError. `longest`:
    MAX_LONG_TEXT for a text that bot.voice.joining speaks in parts."""
    text = (text or "").strip()
    if not 1 <= len(text) <= longest:
        raise SpeechParamError("text", len(text), f"1 to {longest} characters")
    if not voice.voice_id:
        raise SpeechParamError("voice", voice.voice_id, "a VoiceId")
    if not SPEED[0] <= voice.speed <= SPEED[1]:
        raise SpeechParamError("speed", voice.speed, "from 0.5 to 2.0")
    if not VOLUME[0] < voice.volume <= VOLUME[1]:
        raise SpeechParamError("volume", voice.volume, "above 0, at most 10")
    if isinstance(voice.pitch, bool) or not isinstance(voice.pitch, int) or not PITCH[0] <= voice.pitch <= PITCH[1]:
        raise SpeechParamError("pitch", voice.pitch, "a whole number from -12 to 12")
    if fmt not in FORMATS:
        raise SpeechParamError("format", fmt, "pcm, wav or mp3")
    if sample_rate not in SAMPLE_RATES:
        raise SpeechParamError("sample rate", sample_rate, "16000 or 24000")
    return text


def check_long_text(text: str) -> str:
    """The text with its whitespace evened (runs of spaces -> one, blank lines dropped) if it has 1 to
    MAX_LONG_TEXT characters, else SpeechParamError."""
    lines = (" ".join(line.split()) for line in (text or "").splitlines())
    text = "\n".join(line for line in lines if line)
    if not 1 <= len(text) <= MAX_LONG_TEXT:
        raise SpeechParamError("text", len(text), f"1 to {MAX_LONG_TEXT} characters")
    return text


# Where a sentence ends: . ! ? … (and closing quotes or brackets) before a space or the end; CJK stops anywhere;
# a line break.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s|$)|[。！？]+[」』”’）]*|\n")
# Where a clause ends: , ; : before a space, CJK commas anywhere, a dash between spaces.
_CLAUSE_END = re.compile(r"[,;:]+[\"'”’»)\]]*(?=\s|$)|[，、；：]+|\s[—–-]+(?=\s)")
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """`text` as parts of at most `limit` characters, for one TextToSpeech request each: whole sentences packed
    together while they fit; a longer sentence at its commas (, ; : and dashes), then at spaces; a word longer than
    `limit` (no space to cut at) is cut at `limit`. Whitespace is evened; nothing else changes."""
    lines = (" ".join(line.split()) for line in (text or "").splitlines())
    return [part for part in _split("\n".join(line for line in lines if line), limit, 0) if part]


def _split(text: str, limit: int, level: int) -> list[str]:
    if len(text) <= limit:
        return [text.replace("\n", " ").strip()]
    if level == 0:
        units = _cut(text, _SENTENCE_END)
    elif level == 1:
        units = _cut(text, _CLAUSE_END)
    elif level == 2:
        units = text.split()
    else:
        return [text[i:i + limit].strip() for i in range(0, len(text), limit)]
    if len(units) <= 1 and level < 3:
        return _split(text, limit, level + 1)
    pieces = [piece for unit in units for piece in _split(unit, limit, level + 1)]
    return _pack(pieces, limit)


def _cut(text: str, boundary: re.Pattern[str]) -> list[str]:
    """`text` cut just after each match of `boundary` (the match stays with the text before it)."""
    units, start = [], 0
    for match in boundary.finditer(text):
        units.append(text[start:match.end()].strip())
        start = match.end()
    units.append(text[start:].strip())
    return [unit for unit in units if unit]


def _pack(pieces: list[str], limit: int) -> list[str]:
    """Consecutive pieces joined while the result stays within `limit` (a space between them, none between CJK)."""
    parts: list[str] = []
    for piece in pieces:
        if parts:
            glue = "" if _CJK.match(parts[-1][-1]) and _CJK.match(piece[0]) else " "
            if len(parts[-1]) + len(glue) + len(piece) <= limit:
                parts[-1] += glue + piece
                continue
        parts.append(piece)
    return parts


class TextToSpeechClient:
    """TextToSpeech over the official async SDK; `limiter` should be the VoiceCloneClient's PerActionLimiter (one
    object, a window per action: TextToSpeech's calls never take VoiceClone's)."""

    def __init__(
        self,
        settings: Settings,
        *,
        limiter: RateLimiter | PerActionLimiter | None = None,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
    ):
        self._sdk = sdk_client(settings)
        self.settings = settings
        self.limiter = limiter or PerActionLimiter.in_process(settings.trtc_max_rps, 1.0)
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max

    async def speak(
        self, text: str, voice: Voice, *, fmt: str = "mp3", sample_rate: int = 24000, language: str | None = None
    ) -> Speech:
        """Speak `text` in `voice`; raises SpeechParamError before any call, ApiError on a refusal."""
        text = check_speech(text, voice, fmt, sample_rate)
        request = models.TextToSpeechRequest()
        request.SdkAppId = self.settings.trtc_sdk_app_id
        request.Text = text
        tts_voice = models.TTSVoice()
        tts_voice.VoiceId = voice.voice_id
        tts_voice.Speed = float(voice.speed)
        tts_voice.Volume = float(voice.volume)
        tts_voice.Pitch = int(voice.pitch)
        request.Voice = tts_voice
        audio_format = models.AudioFormat()
        audio_format.Format = fmt
        audio_format.SampleRate = sample_rate
        request.AudioFormat = audio_format
        request.Model = TTS_MODEL
        if language:
            request.Language = language
        started = time.monotonic()
        try:
            response = await with_retries(
                ACTION, self.limiter, lambda: self._attempt(request), max_attempts=self.max_attempts,
                backoff_base=self.backoff_base, backoff_max=self.backoff_max,
            )
        except ApiError as exc:
            metrics.TRTC_ERRORS.labels(code=exc.code).inc()
            raise
        finally:
            metrics.TRTC_SECONDS.labels(action=ACTION).observe(time.monotonic() - started)
        try:
            audio = base64.b64decode(response.Audio or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(UNEXPECTED_RESPONSE, "unreadable audio from Tencent Cloud", response.RequestId) from exc
        if not audio:
            raise ApiError(UNEXPECTED_RESPONSE, "Tencent Cloud's answer has no audio", response.RequestId)
        duration = response.TotalDurationMs
        return Speech(audio, fmt, sample_rate, int(duration) if duration is not None else None, response.RequestId)

    async def speak_parts(
        self, parts: Sequence[str], voice: Voice, *, fmt: str = "wav", sample_rate: int = 24000,
        language: str | None = None, at_once: int = PARTS_AT_ONCE,
    ) -> list[Speech]:
        """Speak each part (each at most MAX_TEXT: see split_text), `at_once` at a time under the limiter; the
        answers in the parts' order. Every part is checked before any request; on the first refusal the parts still
        in flight are cancelled and its ApiError is raised."""
        for part in parts:
            check_speech(part, voice, fmt, sample_rate)
        gate = asyncio.Semaphore(max(1, at_once))

        async def one(part: str) -> Speech:
            async with gate:
                return await self.speak(part, voice, fmt=fmt, sample_rate=sample_rate, language=language)

        tasks = [asyncio.create_task(one(part)) for part in parts]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _attempt(self, request: models.TextToSpeechRequest) -> models.TextToSpeechResponse:
        try:
            return await self._sdk.TextToSpeech(request)
        except TencentCloudSDKException as exc:
            raise _from_sdk(exc) from None
        except httpx.TimeoutException as exc:
            raise ApiError(NETWORK_ERROR, f"Tencent Cloud did not answer ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ApiError(NETWORK_ERROR, f"could not reach Tencent Cloud ({type(exc).__name__})") from exc
        except (ValueError, KeyError) as exc:
            raise ApiError(UNEXPECTED_RESPONSE, "Tencent Cloud's answer could not be read") from exc

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._sdk.close()
