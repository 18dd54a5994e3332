"""The report card: what was found in a recording and what was done to it, in plain words.

Pure functions from an AudioReport to text. `report_lines` gives the summary and the warnings as plain text
(for the terminal: `python -m bot check`); bot.ui.job_blocks.build_report_card wraps the same in a Block Kit context.
The summary gives one length, the audio sent, against the recording's when part of it was left out: the seconds
of "speech" the analysis counts leave out every gap between words, so next to the audio sent they read as a
contradiction, and they appear only in the advice about too little speech. `transcript_source` says where the
PromptText came from.
"""

from __future__ import annotations

from bot.vocabulary import LANGUAGE_NAMES, language_of_locale
from bot.voice.analysis import AudioReport
from bot.voice.transcript import TranscriptUse

# Why Slack's transcript was not sent (TranscriptUse.why_not), after "none sent: Slack's (English)".
_NOT_SENT = {
    "too_long": "is too long to send as the transcript",
    "none_inside": "has no line wholly inside the audio sent",
    "unreadable": "could not be read",
    "unavailable": "could not be fetched",
    "untimed": "has no timing, and only part of the speech was sent",
}


def duration(seconds: float) -> str:
    """42 s, 3:10, 1:02:05."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary(report: AudioReport) -> str:
    """One line: how much audio was sent (the one length the answer gives), and what was done to it."""
    length = report.source_seconds if report.source_seconds else report.recording_seconds
    sent = report.sent_seconds or report.recording_seconds
    if length - sent < 1 and not report.capped:
        parts = [f"Sent all {duration(length)} of the recording"]
    else:
        parts = [f"Sent {duration(sent)} of the {duration(length)} recording"]
    if report.silence_removed >= 1:
        parts.append("silence and long pauses cut")
    if report.gain_db >= 1:
        parts.append(f"level raised {report.gain_db:.0f} dB")
    elif report.gain_db <= -1:
        parts.append(f"level lowered {-report.gain_db:.0f} dB")
    if report.denoised:
        parts.append("background noise reduced")
    return " · ".join(parts)


def warnings(report: AudioReport, *, option_hint: str = "denoise=on") -> list[str]:
    """Advice on what was wrong with the recording, most important first; empty for a clean one."""
    found = []
    if report.clipping:
        found.append(
            f"Clipping in {report.clipped_share:.0%} of the speech: the recording was too loud and is distorted. "
            "Next time record a little further from the microphone or turn the input level down."
        )
    if report.noisy:
        how = "I reduced it" if report.denoised else f"try {option_hint} or"
        found.append(
            f"Background noise: the voice is only about {report.snr_db:.0f} dB above it. {how.capitalize()}"
            + (", but " if report.denoised else " ")
            + "a recording in a quieter room will clone better."
        )
    if report.capped:
        found.append(
            f"The recording is very long: only its first {duration(report.recording_seconds)} were searched for speech."
        )
    if report.dropped_speech_seconds > 0:
        found.append(
            f"Only {duration(report.sent_seconds)} can be used, so I picked the best part "
            f"({duration(report.window_start)} to {duration(report.window_end)}) and left "
            f"{duration(report.dropped_speech_seconds)} of speech out."
        )
    if report.little_speech:
        found.append(
            f"Only {duration(report.used_speech_seconds)} of speech: 20 to 30 seconds of steady talking "
            "gives a better clone."
        )
    return found


def transcript_source(use: TranscriptUse | None, *, text_sent: bool) -> str | None:
    """Where the PromptText came from, in a few words ("Slack, English", "yours"); None when none was sent and
    Slack had no transcript."""
    if use is None or (text_sent and not use.text):
        return "yours" if text_sent else None
    if use.why_not == "yours":
        return "none sent (yours no longer matched the audio sent)"
    code = language_of_locale(use.locale)
    language = LANGUAGE_NAMES.get(code or "", use.locale or "language unknown")
    if not use.text:
        return f"none sent: Slack's ({language}) {_NOT_SENT.get(use.why_not or '', 'was not used')}"
    if use.total and use.cues < use.total:
        return f"Slack, {language} ({use.cues} of its {use.total} lines: those wholly in the audio sent)"
    return f"Slack, {language}"


def report_lines(report: AudioReport, *, option_hint: str = "denoise=on") -> list[str]:
    """The summary, then each warning: plain text."""
    return [summary(report), *warnings(report, option_hint=option_hint)]
