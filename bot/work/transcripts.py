"""Slack's own transcript of a clip as the clone's PromptText and Language, when the user typed neither.

Slack transcribes audio and video clips recorded in it: the file object carries `transcription` (status, locale,
a preview) and, once done, `vtt`, the whole transcript as WebVTT with timed cues (see FIELD-NOTES "Slack features
the bot can build on"). Transcribing can finish after the share, so a clip without a finished transcript is looked
up again (files.info) here, at clone time, which with CONSENT=ask is after the uploader pressed the button.

The words are matched to the audio sent (bot.voice.transcript): only the cues that lie wholly in the kept parts of
the recording go, so the PromptText never names words that were cut. The Language comes from the transcript's
locale (`en-US` -> `en`) when the model is documented to take it (bot.vocabulary.accepted_language). What the user
typed (`text=`, `lang=`) always wins. A transcript that cannot be had or read never stops a clone: it goes ahead
as it would without one, and the answer says why no transcript was sent.

The job runner calls `with_transcript` once, just before it clones.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from bot.errors import BotError
from bot.slack.files import Transcription, is_clip, transcription
from bot.tencent.voiceclone import MAX_PROMPT_TEXT
from bot.vocabulary import accepted_language
from bot.voice.pipeline import CloneRequest, Prompt
from bot.voice.transcript import TranscriptFormatError, TranscriptUse, cues_sent, joined, parse_vtt
from bot.work.fetch import Fetcher, Waiting

log = logging.getLogger(__name__)


async def with_transcript(
    request: CloneRequest, prompt: Prompt, file: dict[str, Any], fetcher: Fetcher
) -> CloneRequest:
    """`request` with its text and language taken from Slack's transcript of `file` where the user gave none,
    and `transcript` saying what was taken; `request` unchanged when the clip has no finished transcript."""
    if request.text and request.language:
        return request  # the user said both: nothing to look up
    try:
        found = await _finished(file, fetcher)
    except (BotError, Waiting) as exc:
        log.warning("Slack's transcript of file %s could not be looked up (%s); cloning without it",
                    file.get("id"), _why(exc))  # fmt: skip
        return request
    if found is None:
        return request
    language = None
    if not request.language:
        language = accepted_language(found.locale, request.model or fetcher.settings.voiceclone_model)
    use = TranscriptUse(source="slack", locale=found.locale, language=language)
    text = None
    if request.text:
        use = dataclasses.replace(use, why_not="yours")
    else:
        text, use = await _words_sent(found, prompt, file, fetcher, use)
    return dataclasses.replace(
        request, text=text or request.text, language=request.language or language, transcript=use
    )


async def _finished(file: dict[str, Any], fetcher: Fetcher) -> Transcription | None:
    """The clip's finished transcript: from the file object as stored, else as files.info tells it now."""
    found = transcription(file)
    if found is not None and found.complete:
        return found
    if found is None and not is_clip(file):
        return None  # Slack transcribes only the clips recorded in it: no need to ask about an uploaded file
    found = transcription(await fetcher.refresh(file))
    return found if found is not None and found.complete else None


async def _words_sent(
    found: Transcription, prompt: Prompt, file: dict[str, Any], fetcher: Fetcher, use: TranscriptUse
) -> tuple[str | None, TranscriptUse]:
    """The transcript's words of the audio sent, and `use` saying what they are (or why there are none)."""
    if found.vtt is None or prompt.kept is None or prompt.kept_span is None:
        # No timed cues (or a prompt stored before the kept parts were): the words can only be matched to the audio
        # when all of the speech is in it, and only when Slack's preview is the whole transcript.
        if found.preview and not found.has_more and not prompt.trimmed:
            return _checked(found.preview, dataclasses.replace(use, text=True))
        return None, dataclasses.replace(use, why_not="untimed" if found.vtt is None else "unavailable")
    try:
        cues = parse_vtt(await fetcher.text(found.vtt))
    except TranscriptFormatError as exc:
        log.warning("Slack's transcript of file %s is not WebVTT (%s); cloning without its text", file.get("id"), exc)
        return None, dataclasses.replace(use, why_not="unreadable")
    except (BotError, Waiting) as exc:
        log.warning("Slack's transcript of file %s could not be fetched (%s); cloning without its text",
                    file.get("id"), _why(exc))  # fmt: skip
        return None, dataclasses.replace(use, why_not="unavailable")
    sent = cues_sent(cues, prompt.kept, prompt.kept_span)
    use = dataclasses.replace(use, cues=len(sent), total=len(cues))
    if not sent:
        return None, dataclasses.replace(use, why_not="none_inside" if cues else "unreadable")
    return _checked(joined(sent), dataclasses.replace(use, text=True))


def _checked(text: str, use: TranscriptUse) -> tuple[str | None, TranscriptUse]:
    """The text, unless it is longer than VoiceClone's PromptText may be (cutting it would no longer match)."""
    text = " ".join(text.split())
    if len(text) > MAX_PROMPT_TEXT:
        return None, dataclasses.replace(use, text=False, why_not="too_long")
    return text, use


def _why(exc: BaseException) -> str:
    return type(exc.cause).__name__ if isinstance(exc, Waiting) else str(exc)
