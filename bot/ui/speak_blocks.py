"""Block Kit and sentences for "Speak in my voice", the message shortcut that reads a message aloud in one of the
presser's voices: the voice picker (for someone with several voices) and what they are told. Small pure builders.
Also the sentences of the Workflow Builder step "Speak text with a cloned voice" (STEP_*): plain text, as Slack shows
a step's error (functions.completeError) without formatting."""

from __future__ import annotations

import json
from typing import Any

from bot.store.library import VoiceRecord
from bot.tencent.tts import MAX_LONG_TEXT
from bot.ui.texts import escape

# The manifest's message shortcut (features.shortcuts) and the picker's callback.
SPEAK_SHORTCUT = "speak_in_my_voice"
SPEAK_CALLBACK = "speak_in_my_voice_modal"
VOICE_BLOCK = "voice"
TEXT_BLOCK = "text"
# A static_select holds at most 100 options.
PICKER_LIMIT = 100

NO_VOICE = (
    "You have no cloned voice yet, so I can't read this in your voice. To make one, drop a recording of yourself "
    "speaking (10 s to 3 min, only you) into a channel I'm in or into a DM with me, or run `/clone`. "
    "Then use *Speak in my voice* again."
)
NOTHING_TO_READ = "There is nothing in that message I can read aloud (no text, only files or attachments)."


# The manifest's Workflow Builder step (functions.<callback_id>), its inputs and its output.
SPEAK_STEP = "speak_with_cloned_voice"
STEP_USER, STEP_VOICE, STEP_TEXT, STEP_CHANNEL = "user", "voice", "text", "channel"
STEP_PERMALINK = "permalink"

STEP_NO_USER = ("I can't tell who is running this workflow, so I can't choose a voice: start it with a person's action "
                "(a link or a button).")
STEP_NO_TEXT = "There is no text to speak: fill in the step's Text."
STEP_NO_CHANNEL = "There is no channel to post the clip in: fill in the step's Channel."
STEP_FORGOTTEN = "The voice was forgotten before it could speak, so nothing was posted."
STEP_CRASHED = "Something went wrong while making the clip, so nothing was posted. Run the workflow again."
STEP_EXPIRED = "Slack could not be reached long enough to post the clip, so nothing was posted."


def step_not_yours(ref: str) -> str:
    """The step names a voice the person running the workflow may not use (or none by that name): the same answer
    either way, so nobody learns of others' voices."""
    return (f"The voice \"{plain(ref)[:100]}\" is not yours: this step speaks only with a voice cloned by the person "
            "running the workflow. /clone list shows yours.")


def step_too_long(length: int) -> str:
    """The step's text is over what one clip may read."""
    return (f"The text is too long to speak: it has {length:,} characters, and one clip reads at most "
            f"{MAX_LONG_TEXT:,}. Shorten it, or split it over several steps.")


def step_say_failed(title: str, sentence: str, code: str | None, request_id: str | None) -> str:
    """Tencent Cloud could not speak the text: its sentence, the error code and the RequestId support asks for."""
    detail = ", ".join(part for part in (f"error {code}" if code else "", f"RequestId {request_id}"
                                         if request_id else "") if part)
    return f"I couldn't make {plain(title)} speak: {plain(sentence)}" + (f" ({detail})" if detail else "")


def step_not_posted(channel: str, error: str) -> str:
    """Slack would not take the clip in the step's channel."""
    if error in ("not_in_channel", "channel_not_found"):
        return (f"I can't post in the channel {channel} ({error}): add me to it (/invite @voiceclone), then run the "
                "workflow again.")
    if error == "is_archived":
        return f"The channel {channel} is archived, so I can't post the clip there (is_archived)."
    return f"Slack refused the clip ({error}), so nothing was posted."


def step_result_refused(error: str) -> str:
    """The clip went out, but Slack refused the step's result (its permalink)."""
    return f"The clip was posted, but Slack refused the step's result ({error}), so the next steps cannot use its link."


def plain(text: str) -> str:
    """Slack formatting taken out of a sentence written for messages (a step's error shows as it is)."""
    return text.replace("`", "").replace("*", "")


def too_long(length: int) -> str:
    """The message is over what one clip may read."""
    return (f"That message is too long to read aloud: it has {length:,} characters to speak, and I read at most "
            f"{MAX_LONG_TEXT:,}. Copy the part you want into `/clone say`, or shorten it.")


def on_it(voice: VoiceRecord) -> str:
    """Told to the presser once the speech is queued."""
    return f":speaking_head_in_silhouette: *{escape(voice.title)}* is reading it; the clip follows in the thread."


def build_voice_picker(
    voices: list[VoiceRecord], channel: str | None, thread_ts: str | None, text: str
) -> dict[str, Any]:
    """The modal for someone with several voices: which voice, and the text to read (what the message reads as,
    editable); `channel` and `thread_ts` (where the clip goes) ride in private_metadata."""
    options = [
        {"text": {"type": "plain_text", "text": _option_text(voice)}, "value": voice.voice_id[:150]}
        for voice in voices[:PICKER_LIMIT]
    ]
    return {
        "type": "modal",
        "callback_id": SPEAK_CALLBACK,
        "private_metadata": json.dumps({"channel": channel, "thread_ts": thread_ts}),
        "title": {"type": "plain_text", "text": "Speak in my voice"},
        "submit": {"type": "plain_text", "text": "Speak"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input", "block_id": VOICE_BLOCK,
                "label": {"type": "plain_text", "text": "Voice"},
                "element": {"type": "static_select", "action_id": VOICE_BLOCK, "options": options,
                            "initial_option": options[0]},
            },
            {
                "type": "input", "block_id": TEXT_BLOCK,
                "label": {"type": "plain_text", "text": "What it will read"},
                "hint": {"type": "plain_text", "text": f"The message as it reads aloud; edit it if you like (at most "
                                                      f"{MAX_LONG_TEXT:,} characters). The clip goes in its thread."},
                "element": {"type": "plain_text_input", "action_id": TEXT_BLOCK, "multiline": True,
                            "max_length": MAX_LONG_TEXT, "initial_value": text[:MAX_LONG_TEXT]},
            },
        ],
    }


def read_voice_picker(view: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, errors by block) of a submitted picker; values: voice_id, text, channel, thread_ts."""
    state = (view.get("state") or {}).get("values") or {}
    voice = ((state.get(VOICE_BLOCK) or {}).get(VOICE_BLOCK) or {}).get("selected_option") or {}
    text = str(((state.get(TEXT_BLOCK) or {}).get(TEXT_BLOCK) or {}).get("value") or "").strip()
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    values = {"voice_id": str(voice.get("value") or ""), "text": text,
              "channel": meta.get("channel"), "thread_ts": meta.get("thread_ts")}
    errors: dict[str, str] = {}
    if not values["voice_id"]:
        errors[VOICE_BLOCK] = "Pick one of your voices."
    if not 1 <= len(text) <= MAX_LONG_TEXT:
        errors[TEXT_BLOCK] = f"Write 1 to {MAX_LONG_TEXT:,} characters."
    if not values["channel"]:
        errors[TEXT_BLOCK] = "I lost track of the message: use Speak in my voice on it again."
    return values, errors


def _option_text(voice: VoiceRecord) -> str:
    name = voice.title if voice.title == voice.voice_name else f"{voice.title} ({voice.voice_name})"
    return name if len(name) <= 75 else name[:74] + "…"
