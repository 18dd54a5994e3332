"""A text longer than one TextToSpeech request, spoken as one clip: bot.tencent.tts cuts it into parts
(split_text) and speaks them (speak_parts); here the parts are joined with pydub and encoded as mp3 once.

The parts are asked for as WAV (self-describing, read by pydub without ffmpeg), so the only ffmpeg run is the one
mp3 encode; pydub is given the bot's own ffmpeg (bot.voice.audio.find_ffmpeg: PATH, else imageio-ffmpeg's) rather
than left to look on PATH. pydub writes the joined audio to a temporary file (mode 0600) for ffmpeg and deletes it.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Sequence

from bot.errors import ApiError
from bot.tencent.tts import MAX_TEXT, Speech, TextToSpeechClient, Voice, check_long_text, split_text
from bot.tencent.voiceclone import UNEXPECTED_RESPONSE
from bot.voice.audio import find_ffmpeg

with warnings.catch_warnings():
    # pydub looks for ffmpeg on PATH when imported and warns when there is none: the bot gives it one below. It
    # imports audioop, deprecated in 3.12 (audioop-lts replaces it from 3.13: pyproject.toml).
    warnings.simplefilter("ignore", RuntimeWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    from pydub import AudioSegment

# Silence between two parts: each part is whole sentences (or clauses), and TTS ends each with little silence.
PAUSE_MS = 150
# The joined clip's mp3 bitrate (mono speech).
BITRATE = "64k"


async def speak_long(
    tts: TextToSpeechClient, text: str, voice: Voice, *, language: str | None = None, sample_rate: int = 24000,
) -> Speech:
    """Speak `text` (1 to MAX_LONG_TEXT characters) in `voice` as one mp3. Up to MAX_TEXT it is one request, as
    TextToSpeechClient.speak makes it; longer, it is cut at sentence ends (split_text), each part spoken (never a
    request over MAX_TEXT) and the parts joined. Raises SpeechParamError before any request, ApiError on a refusal
    (the parts still in flight are cancelled)."""
    text = check_long_text(text)
    if len(text) <= MAX_TEXT:
        return await tts.speak(text, voice, sample_rate=sample_rate, language=language)
    parts = split_text(text)
    spoken = await tts.speak_parts(parts, voice, fmt="wav", sample_rate=sample_rate, language=language)
    return await asyncio.to_thread(join_speech, spoken)


def join_speech(parts: Sequence[Speech], *, pause_ms: int = PAUSE_MS, bitrate: str = BITRATE) -> Speech:
    """One mp3 of `parts` in order, `pause_ms` of silence between two (wav, pcm: raw 16-bit mono, or mp3). Its
    duration is the decoded audio's; its request_id the first part's. ApiError (UnexpectedResponse) when a part's
    audio cannot be read; RuntimeError when ffmpeg cannot encode."""
    if not parts:
        raise ValueError("nothing to join")
    segments = [_decode(part) for part in parts]
    rate = max(segment.frame_rate for segment in segments)
    joined = segments[0]
    for segment in segments[1:]:
        joined = joined + AudioSegment.silent(duration=pause_ms, frame_rate=rate) + segment
    joined = joined.set_channels(1)
    AudioSegment.converter = find_ffmpeg()  # explicitly ours: the machine may have no ffmpeg on PATH
    out = io.BytesIO()
    try:
        joined.export(out, format="mp3", bitrate=bitrate)
    except Exception as exc:  # pydub's CouldntEncodeError, or ffmpeg missing (OSError)
        raise RuntimeError(f"ffmpeg could not encode the joined speech: {exc}") from exc
    return Speech(out.getvalue(), "mp3", joined.frame_rate, len(joined), parts[0].request_id)


def _decode(part: Speech) -> AudioSegment:
    try:
        if part.format == "wav":
            return AudioSegment(data=part.audio)
        if part.format == "pcm":
            return AudioSegment(data=part.audio, sample_width=2, frame_rate=part.sample_rate, channels=1)
        AudioSegment.converter = find_ffmpeg()
        # The codec named: pydub then runs only ffmpeg (no ffprobe, which imageio-ffmpeg does not ship).
        return AudioSegment.from_file(io.BytesIO(part.audio), format=part.format, codec=part.format)
    except Exception as exc:
        raise ApiError(UNEXPECTED_RESPONSE, "unreadable audio from Tencent Cloud", part.request_id) from exc
