"""A recording's timed transcript matched to the prompt made of it: only the words of the audio that is sent.

The prompt is cut from the recording (bot.voice.analysis.plan_prompt): leading and trailing silence dropped,
long pauses shortened, and of a long recording only the best window of at most 180 s kept. A transcript of the
whole recording no longer matches such a prompt, and VoiceClone learns worse from a PromptText that names words
the audio does not hold than from none. So each cue (a timed line of the transcript) is mapped through the cuts:
it is kept only when it lies wholly inside what is sent, that is inside the span around the kept pieces where
nothing but silence was cut (PromptPlan.span), and overlaps the kept audio; the PromptText is the longest run of
consecutive kept cues. A cue that runs into speech left out is dropped with its words, never sent half-true.

WebVTT is read with webvtt-py (a maintained reader of the W3C format: timestamps with or without hours, cue
settings, NOTE/STYLE/REGION blocks, voice and styling tags), not by hand.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

# Cue times are read to the millisecond; a cue may reach this far past the span (rounding of 30 ms frames).
TOLERANCE = 0.001


class TranscriptFormatError(ValueError):
    """The transcript is not WebVTT that can be read."""


@dataclass(frozen=True)
class Cue:
    """One timed line of a transcript: [start, end] in seconds of the recording, and its words."""

    start: float
    end: float
    text: str


def parse_vtt(text: str) -> list[Cue]:
    """The cues of a WebVTT document in time order, tags and blank cues left out; raise TranscriptFormatError."""
    import webvtt  # deferred (as in write_vtt): only a clone with a transcript needs it, not every process
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    try:
        captions = webvtt.from_string(text).captions
    except (MalformedFileError, MalformedCaptionError) as exc:
        raise TranscriptFormatError(str(exc) or "not WebVTT") from None
    cues = []
    for caption in captions:
        words = " ".join(html.unescape(caption.text).split())
        start, end = caption.start_time.in_milliseconds() / 1000, caption.end_time.in_milliseconds() / 1000
        if words and end >= start:
            cues.append(Cue(start, end, words))
    return sorted(cues, key=lambda cue: (cue.start, cue.end))


def write_vtt(cues: Iterable[Cue]) -> str:
    """A WebVTT document of `cues` (what Slack serves as a clip's `vtt`; the stand-in and the demo use it)."""
    import webvtt

    document = webvtt.WebVTT()
    for cue in cues:
        document.captions.append(
            webvtt.Caption(_timestamp(cue.start), _timestamp(cue.end), html.escape(cue.text, quote=False))
        )
    return document.content


def clip_cues(cues: Iterable[Cue], start: float, seconds: float) -> list[Cue]:
    """The cues wholly inside [start, start + seconds] of a recording, retimed to a clip cut out there."""
    end = start + seconds
    return [
        Cue(round(cue.start - start, 3), round(cue.end - start, 3), cue.text)
        for cue in cues
        if cue.start >= start - TOLERANCE and cue.end <= end + TOLERANCE
    ]


def _timestamp(seconds: float) -> str:
    millis = max(round(seconds * 1000), 0)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def to_prompt_time(seconds: float, kept: Sequence[Sequence[float]]) -> float:
    """Where a moment of the recording lands in the prompt: the kept audio before it, summed (a moment in audio
    that was cut lands where the cut is)."""
    at = 0.0
    for start, end in kept:
        if seconds <= start:
            break
        at += min(seconds, end) - start
    return round(at, 3)


def cues_sent(cues: Sequence[Cue], kept: Sequence[Sequence[float]], span: Sequence[float | None]) -> list[Cue]:
    """The longest run of consecutive cues that lie wholly in the audio sent (see the module's docstring).

    `kept`: the [start, end) pieces of the recording the prompt is made of, in seconds; `span`: [first, last]
    around them in which only silence was cut (last None: to the end of the recording).
    """
    if not kept:
        return []
    first, last = float(span[0] or 0.0), span[1]
    kept_start, kept_end = float(kept[0][0]), float(kept[-1][1])

    def inside(cue: Cue) -> bool:
        within = cue.start >= first - TOLERANCE and (last is None or cue.end <= float(last) + TOLERANCE)
        # A cue wholly in audio that was cut (a silence before the first word) says nothing the prompt holds.
        heard = to_prompt_time(cue.end, kept) > to_prompt_time(cue.start, kept)
        return within and heard and cue.end > kept_start and cue.start < kept_end

    best: list[Cue] = []
    run: list[Cue] = []
    for cue in cues:
        if inside(cue):
            run.append(cue)
            if len(run) > len(best):
                best = list(run)
        else:
            run = []
    return best


def joined(cues: Iterable[Cue]) -> str:
    """The words of the cues as one PromptText."""
    return " ".join(cue.text for cue in cues)


@dataclass(frozen=True)
class TranscriptUse:
    """What a platform's transcript of the recording (Slack's) gave the clone, for the answer to say. JSON-ready
    with to_dict/from_dict; every field has a default."""

    source: str = "slack"
    locale: str | None = None  # as the platform named it (`en-US`)
    language: str | None = None  # the Language it set (None: the user's `lang=` won, or not one VoiceClone takes)
    text: bool = False  # the PromptText is its words (only those of the audio sent)
    cues: int = 0  # cues sent
    total: int = 0  # cues in the transcript
    # Why its words were not sent: "yours" (the user typed text=), "too_long", "none_inside" (no cue lies wholly in
    # the audio sent), "unreadable", "unavailable" (no timed transcript and part of the speech was left out).
    why_not: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TranscriptUse:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})
