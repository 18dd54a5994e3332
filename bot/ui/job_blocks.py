"""Block Kit builders: small pure functions from data to (fallback text, blocks) or a view."""

from __future__ import annotations

import json
from typing import Any

from bot.settings import MODELS
from bot.ui.texts import escape
from bot.ui.voice_blocks import USAGE as VOICE_USAGE
from bot.ui.voice_blocks import say_button
from bot.vocabulary import LANGUAGE_NAMES
from bot.voice.analysis import AudioReport
from bot.voice.pipeline import CloneResult
from bot.voice.report_card import summary, transcript_source, warnings

Blocks = list[dict[str, Any]]

STAGES = {
    "queued": ("hourglass_flowing_sand", "Queued"),
    "downloading": ("inbox_tray", "Downloading"),
    "converting": ("control_knobs", "Converting to 16 kHz mono WAV"),
    "cloning": ("dna", "Cloning the voice with Tencent Cloud"),
    "waiting_slack": ("hourglass", "Slack is not handing me the file right now; I'll keep trying"),
    "waiting_tencent": ("hourglass", "Tencent Cloud is not answering right now; I'll keep trying"),
}
GAVE_UP = (
    "I could not process this file: three attempts at it failed (the bot stopped or ran out of time on it). "
    "Try exporting the recording again (m4a or wav), or ask your Slack admin to check the bot's logs."
)
LANGUAGES = {
    "": "Detect automatically",
    "en": "English",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "pt": "Portuguese",
    "it": "Italian",
    "ru": "Russian",
    "ar": "Arabic",
    "hi": "Hindi",
    "id": "Indonesian",
    "th": "Thai",
    "vi": "Vietnamese",
    "tr": "Turkish",
    "nl": "Dutch",
    "pl": "Polish",
}
MODAL_CALLBACK = "clone_modal"
CONSENT_TEXT = "This is my voice, or I have the speaker's permission to clone it"
USAGE = (
    "*Clone a voice*\n"
    "• Drop a recording (10 s to 3 min of one person speaking) into a channel I'm in, or into a DM with me.\n"
    "  Options in the message, any order: `name=alice lang=en model=flow_01_ex "
    'text="what the recording says"`\n'
    "• `/clone` opens a form to upload a recording.\n"
    "• `/clone <file link or file ID> [options]` clones a file already in Slack.\n"
    "• `/clone help` shows this.\n"
    "Any audio or video works: voice memos (m4a), Slack clips, mp3, ogg, webm, flac, wav, mp4, mov. "
    "I send the best 3 minutes of speech (silence removed, level evened out) and tell you what I found; "
    "`denoise=on` or `denoise=off` forces background-noise reduction on or off."
)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in texts]}


def _seconds(value: float) -> str:
    minutes, seconds = divmod(round(value), 60)
    return f"{value:.1f} s" if minutes == 0 else f"{minutes}:{seconds:02d} ({value:.0f} s)"


def build_status(stage: str, file_name: str) -> tuple[str, Blocks]:
    """The in-thread progress message for one stage."""
    emoji, label = STAGES.get(stage, STAGES["queued"])
    # The fallback text is mrkdwn too (and drives notifications): escape it like the blocks.
    text = f"{label}… ({escape(file_name)})"
    return text, [_section(f":{emoji}: *{label}…*  `{escape(file_name)}`")]


def build_report_card(report: AudioReport) -> dict[str, Any]:
    """The audio report card: a compact context block (summary, then each warning as advice). Pure, so the
    consent step can show it on the confirm message before anything is cloned."""
    lines = [f":bar_chart: {escape(summary(report))}"]
    lines += [f":warning: {escape(text)}" for text in warnings(report, option_hint="`denoise=on`")]
    return _context(*lines)


def build_success(result: CloneResult, file_name: str) -> tuple[str, Blocks]:
    """The final answer for a cloned voice; the fallback text holds the VoiceId verbatim."""
    report = result.report
    use = result.transcript_use
    fields = [f"*Voice ID*\n`{result.voice_id}`", f"*Name*\n{escape(result.name)}"]
    if report is None:
        # A result stored before the report card existed: its one length is here. Otherwise the card's summary
        # gives it (one length in the answer, not two that seem to disagree).
        sent = _seconds(result.seconds)
        if result.trimmed:
            source = f" of {_seconds(result.source_seconds)}" if result.source_seconds else ""
            sent += f" (the first 3 minutes{source}; the rest was cut)"
        fields.append(f"*Audio sent*\n{sent}")
    language = LANGUAGES.get(result.language or "") or LANGUAGE_NAMES.get(result.language or "", result.language)
    if use is not None and use.language and use.language == result.language:
        language = f"{language} (from Slack's transcript)"
    fields += [f"*Model*\n{result.model or 'default'}", f"*Language*\n{language or 'auto'}"]
    source = transcript_source(use, text_sent=result.text_sent)
    if source is not None:
        fields.append(f"*Transcript*\n{escape(source)}")
    notes = []
    if result.text_dropped:
        notes.append(
            "Your transcript was not sent: only part of the speech fit in the 3 minutes sent, so it no longer "
            "matched. Trim the recording yourself and share it again with `text=` to use a transcript."
        )
    if result.gain_db >= 6 and report is None:
        notes.append(f"The recording was quiet; I raised it by {result.gain_db:.0f} dB.")
    if result.request_id:
        notes.append(f"RequestId: `{result.request_id}`")
    blocks: Blocks = [
        _section(f":white_check_mark: *Voice cloned from* `{escape(file_name)}`"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if report is not None:
        blocks.append(build_report_card(report))
    if notes:
        blocks.append(_context(*notes))
    # Hear it say anything (bot.ui.voice_blocks / handlers.voices); the preview follows in the thread.
    blocks.append({"type": "actions", "elements": [say_button(result.voice_id)]})
    return f"Voice cloned: {result.voice_id}", blocks


def build_failure(message: str, file_name: str) -> tuple[str, Blocks]:
    """The final answer when cloning failed; `message` comes from bot.ui.texts.describe."""
    text = f"Could not clone {escape(file_name)}: {message}"
    return text, [_section(f":x: *Could not clone* `{escape(file_name)}`\n{message}")]


def build_parent(user_id: str | None, file_name: str) -> str:
    """The channel message a modal or `/clone <file>` request answers under."""
    who = f"<@{user_id}>" if user_id else "Someone"
    return f":microphone: {who} asked me to clone a voice from `{escape(file_name)}`. Results in the thread."


def build_elsewhere_note(channel: str, error: str) -> tuple[str, dict[str, Any]]:
    """Why an answer arrives in a DM: the bot cannot post where the request was made."""
    where = f"<#{channel}>"
    if error == "is_archived":
        why = f"{where} is archived, so I'm answering here."
    else:
        why = (
            f"I'm not a member of {where}, so I'm answering here. "
            "To get answers in that channel, type `/invite @` there and pick me."
        )
    return why, _context(f":information_source: {why}")


def build_help() -> tuple[str, Blocks]:
    """The `/clone help` answer."""
    return "How to clone a voice with /clone", [_section(USAGE), _section(VOICE_USAGE)]


def build_usage_error(problem: str) -> tuple[str, Blocks]:
    """What `/clone` says when it did not understand."""
    return f"{problem} Try `/clone help`.", [_section(f":warning: {escape(problem)}\n\n{USAGE}")]


def build_dm_hint(file_name: str) -> str:
    """A one-line hint for a non-audio file sent to the bot directly."""
    return (
        f"`{escape(file_name)}` doesn't look like audio or video. Send me a recording (voice memo, Slack clip, "
        "mp3, wav...) of 10 s to 3 min and I'll clone the voice. `/clone help` for more."
    )


def build_command_ack(file_ref: str) -> str:
    """The ephemeral reply to `/clone <file>`."""
    return f"Got it: cloning `{escape(file_ref)}`. I'll answer in a thread in this channel."


def _option(value: str, label: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": label}, "value": value or "auto"}


def build_modal(channel_id: str, user_id: str) -> dict[str, Any]:
    """The `/clone` form: name, one recording, transcript, language, model and consent."""
    languages = [_option(code, label) for code, label in LANGUAGES.items()]
    models = [_option(m, m) for m in MODELS]
    return {
        "type": "modal",
        "callback_id": MODAL_CALLBACK,
        "private_metadata": json.dumps({"channel_id": channel_id, "user_id": user_id}),
        "title": {"type": "plain_text", "text": "Clone a voice"},
        "submit": {"type": "plain_text", "text": "Clone"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "audio",
                "label": {"type": "plain_text", "text": "Recording"},
                "hint": {"type": "plain_text", "text": "10 s to 3 min of one person speaking; longer is cut."},
                "element": {
                    "type": "file_input",
                    "action_id": "audio",
                    "max_files": 1,
                    "filetypes": ["m4a", "mp3", "wav", "ogg", "opus", "webm", "flac", "aac", "mp4", "mov"],
                },
            },
            {
                "type": "input",
                "block_id": "name",
                "optional": True,
                "label": {"type": "plain_text", "text": "Voice name"},
                "hint": {"type": "plain_text", "text": "Letters, digits and _ (up to 36). Default: the file name."},
                "element": {"type": "plain_text_input", "action_id": "name", "max_length": 36},
            },
            {
                "type": "input",
                "block_id": "text",
                "optional": True,
                "label": {"type": "plain_text", "text": "Transcript"},
                "hint": {"type": "plain_text", "text": "What the recording says, word for word. Optional."},
                "element": {"type": "plain_text_input", "action_id": "text", "multiline": True},
            },
            {
                "type": "input",
                "block_id": "language",
                "optional": True,
                "label": {"type": "plain_text", "text": "Language"},
                "element": {
                    "type": "static_select",
                    "action_id": "language",
                    "options": languages,
                    "initial_option": languages[0],
                },
            },
            {
                "type": "input",
                "block_id": "model",
                "optional": True,
                "label": {"type": "plain_text", "text": "Model"},
                "element": {"type": "static_select", "action_id": "model", "options": models},
            },
            {
                "type": "input",
                "block_id": "consent",
                "label": {"type": "plain_text", "text": "Consent"},
                "element": {
                    "type": "checkboxes",
                    "action_id": "consent",
                    "options": [{"text": {"type": "plain_text", "text": CONSENT_TEXT}, "value": "yes"}],
                },
            },
        ],
    }
