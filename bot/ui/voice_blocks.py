"""Block Kit for the voice lifecycle (preview, Say something, the library, rename, forget): small pure builders."""

from __future__ import annotations

import json
import time
from typing import Any

from bot.errors import ApiError
from bot.store.library import VoiceRecord
from bot.tencent.tts import MAX_LONG_TEXT
from bot.ui.texts import api_message, escape

Blocks = list[dict[str, Any]]

SAY_ACTION = "voice_say"
RENAME_ACTION = "voice_rename"
FORGET_ACTION = "voice_forget"  # on the Home tab: Slack's own confirm dialog first
FORGET_CONFIRM_ACTION = "voice_forget_confirm"  # under `/clone forget <voice>`
FORGET_ME_ACTION = "voice_forget_me_confirm"  # under `/clone forget-me`
SAY_CALLBACK = "voice_say_modal"
RENAME_CALLBACK = "voice_rename_modal"
# Home views hold at most 100 blocks (3 per voice) and messages 50 (1 per voice).
HOME_LIMIT = 30
LIST_LIMIT = 45

PREVIEW_TEXTS = {
    "en": "Hello! This is a preview of my cloned voice. How do I sound?",
    "zh": "你好！这是我克隆声音的试听。听起来怎么样？",
    "ja": "こんにちは！これはクローンした声のプレビューです。どう聞こえますか？",
    "ko": "안녕하세요! 복제된 제 목소리의 미리 듣기입니다. 어떻게 들리나요?",
    "es": "¡Hola! Esta es una muestra de mi voz clonada. ¿Qué tal sueno?",
    "fr": "Bonjour ! Voici un aperçu de ma voix clonée. Qu'en pensez-vous ?",
    "de": "Hallo! Das ist eine Hörprobe meiner geklonten Stimme. Wie klinge ich?",
    "pt": "Olá! Esta é uma prévia da minha voz clonada. Como estou soando?",
    "it": "Ciao! Questa è un'anteprima della mia voce clonata. Come ti sembra?",
}
USAGE = (
    "*Your voices*\n"
    "• `/clone list`: the voices you cloned\n"
    "• `/clone say <voice> <text> [speed=1.0 volume=1 pitch=0]`: hear a voice say something\n"
    "• `/clone rename <voice> <label>`: give a voice your own label\n"
    "• `/clone forget <voice>`: remove a voice from the bot's records\n"
    "• `/clone forget-me`: remove all your voices, jobs and transcripts\n"
    "`<voice>` is a VoiceId, a voice name or your label. The Home tab lists your voices too."
)


def preview_text(language: str | None, configured: str | None = None) -> str:
    """What a new voice says in its preview: PREVIEW_TEXT, else a sentence in its language (English by default)."""
    return configured or PREVIEW_TEXTS.get((language or "en").lower(), PREVIEW_TEXTS["en"])


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": text[:75]},
                              "action_id": action_id, "value": value[:2000]}
    if style:
        button["style"] = style
    return button


def say_button(voice_id: str) -> dict[str, Any]:
    """The "Say something…" button under a cloned voice."""
    return _button("Say something…", SAY_ACTION, voice_id)


def thread_link(channel: str | None, ts: str | None) -> str | None:
    """A link to a message (the thread where the voice was made and previewed)."""
    if not channel or not ts:
        return None
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


# -- errors -----------------------------------------------------------------------------------------------------

TTS_MESSAGES = {
    "InvalidParameter.TextLength": "Tencent Cloud says a part of the text is too long to speak: shorten its longest "
    "sentences or words.",
    "InvalidParameter.VoiceId": (
        "Tencent Cloud does not know this voice, or cannot speak with it. Check the voice with `/clone list`, "
        "or clone the recording again."
    ),
    "InvalidParameter.SampleRate": (
        "Tencent Cloud rejected the audio format the bot asked for. That is a bug on our side, not yours: "
        "please tell your Slack admin."
    ),
    "InvalidParameter.Pitch": "Tencent Cloud rejected the pitch: it must be a whole number from -12 to 12.",
    "InvalidParameter.Speed": "Tencent Cloud rejected the speed: it must be between 0.5 and 2.0.",
    "InvalidParameter.Volume": "Tencent Cloud rejected the volume: it must be above 0 and at most 10.",
    "MissingParameter.APIKey": (
        "Tencent Cloud asked for a TTS API key: text to speech is not set up for this TRTC application yet. "
        "Please ask your Slack admin to enable it in the TRTC console."
    ),
    "UnsupportedOperation.InternalError": (
        "Tencent Cloud could not speak the text because of a problem on their side. Try again in a few minutes."
    ),
}
EX_MODEL = (
    "This voice was cloned with `flow_01_ex`, and Tencent Cloud's text to speech only speaks voices made with "
    "`flow_01_turbo`, so I can't play it here. The VoiceId is still yours to use; to hear the voice in Slack, "
    "share the recording again with `model=flow_01_turbo`."
)


def describe_tts_error(error: ApiError, model: str | None) -> str:
    """One clear sentence for a TextToSpeech refusal (the RequestId is added by the caller)."""
    if model == "flow_01_ex" and not error.transient:
        return EX_MODEL
    return TTS_MESSAGES.get(error.code) or api_message(error.code)


def _request_id(request_id: str | None) -> str:
    return f" RequestId: `{escape(request_id)}`" if request_id else ""


def build_preview_failed(sentence: str, code: str | None, request_id: str | None) -> tuple[str, Blocks]:
    """In the thread when the preview could not be made: the VoiceId above stands."""
    text = f"I couldn't make a preview of this voice: {sentence}"
    detail = f"Error `{escape(code)}`." if code else ""
    return text, [
        _section(f":mute: *I couldn't make a preview of this voice.* The voice ID above still works.\n{sentence}"),
        _context(f"{detail}{_request_id(request_id)}".strip() or "No details."),
    ]


def build_say_failed(title: str, sentence: str, code: str | None, request_id: str | None) -> str:
    """Told privately to whoever asked a voice to speak, when it could not."""
    where = f" (`{escape(code)}`{',' + _request_id(request_id) if request_id else ''})" if code else ""
    return f":mute: I couldn't make *{escape(title)}* speak: {sentence}{where}"


def speech_comment(user: str | None, voice: VoiceRecord, text: str, preview: bool) -> str:
    """The line that goes with an uploaded clip."""
    if preview:
        return f":loud_sound: Preview of *{escape(voice.title)}*: “{escape(text)}”"
    who = f"<@{user}> asked" if user else "Asked"
    return f":loud_sound: {who} *{escape(voice.title)}* to say: “{escape(text)}”"


# -- the Say something form --------------------------------------------------------------------------------------


def build_say_modal(voice: VoiceRecord, channel: str | None, thread_ts: str | None) -> dict[str, Any]:
    """Text, speed, volume and pitch, each within TextToSpeech's documented range."""
    meta = {"voice_id": voice.voice_id, "channel": channel, "thread_ts": thread_ts}

    def number(block: str, label: str, initial: str, low: str, high: str, decimal: bool, hint: str) -> dict[str, Any]:
        return {
            "type": "input", "block_id": block, "optional": True,
            "label": {"type": "plain_text", "text": label},
            "hint": {"type": "plain_text", "text": hint},
            "element": {"type": "number_input", "action_id": block, "is_decimal_allowed": decimal,
                        "initial_value": initial, "min_value": low, "max_value": high},
        }

    return {
        "type": "modal",
        "callback_id": SAY_CALLBACK,
        "private_metadata": json.dumps(meta),
        "title": {"type": "plain_text", "text": "Say something"},
        "submit": {"type": "plain_text", "text": "Speak"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            _context(f"In the voice *{escape(voice.title)}* (`{escape(voice.voice_id)}`)"),
            {
                "type": "input", "block_id": "text",
                "label": {"type": "plain_text", "text": "Text"},
                "element": {
                    "type": "plain_text_input", "action_id": "text", "multiline": True, "max_length": MAX_LONG_TEXT,
                },
            },
            number("speed", "Speed", "1.0", "0.5", "2.0", True, "0.5 (slow) to 2.0 (fast)"),
            number("volume", "Volume", "1", "0.1", "10", True, "above 0, at most 10"),
            number("pitch", "Pitch", "0", "-12", "12", False, "a whole number from -12 to 12"),
        ],
    }


def read_say_form(view: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, errors by block) from a submitted Say form; values: voice_id, channel, thread_ts, text, speed,
    volume, pitch."""
    state = (view.get("state") or {}).get("values") or {}

    def value(block: str) -> str:
        element = (state.get(block) or {}).get(block) or {}
        return str(element.get("value") or "").strip()

    meta = json.loads(view.get("private_metadata") or "{}")
    values: dict[str, Any] = {**meta, "text": value("text")}
    errors: dict[str, str] = {}
    if not 1 <= len(values["text"]) <= MAX_LONG_TEXT:
        errors["text"] = f"Write 1 to {MAX_LONG_TEXT:,} characters."
    for block, default, low, high, whole, why in (
        ("speed", 1.0, 0.5, 2.0, False, "Between 0.5 and 2.0."),
        ("volume", 1.0, 0.0, 10.0, False, "Above 0, at most 10."),
        ("pitch", 0, -12, 12, True, "A whole number from -12 to 12."),
    ):
        raw = value(block)
        try:
            number = float(raw) if raw else float(default)
        except ValueError:
            errors[block] = why
            continue
        if (whole and number != int(number)) or not low <= number <= high or (block == "volume" and number <= 0):
            errors[block] = why
            continue
        values[block] = int(number) if whole else number
    return values, errors


def build_rename_modal(voice: VoiceRecord) -> dict[str, Any]:
    """The bot's own label for a voice."""
    return {
        "type": "modal",
        "callback_id": RENAME_CALLBACK,
        "private_metadata": json.dumps({"voice_id": voice.voice_id}),
        "title": {"type": "plain_text", "text": "Rename a voice"},
        "submit": {"type": "plain_text", "text": "Save"},
        "blocks": [
            _context(f"Tencent's name `{escape(voice.voice_name)}` cannot change; this label is the bot's own."),
            {
                "type": "input", "block_id": "label",
                "label": {"type": "plain_text", "text": "Label"},
                "element": {"type": "plain_text_input", "action_id": "label", "max_length": 80,
                            **({"initial_value": voice.label} if voice.label else {})},
            },
        ],
    }


# -- the library -------------------------------------------------------------------------------------------------


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def voice_summary(voice: VoiceRecord) -> str:
    """Two lines of mrkdwn about one voice."""
    facts = [f"`{escape(voice.voice_id)}`", f"made {_when(voice.created_at)}"]
    if voice.file_name:
        facts.append(f"from `{escape(voice.file_name)}`")
    if voice.seconds:
        facts.append(f"{voice.seconds:.1f} s used")
    facts.append(voice.model or "default model")
    if voice.language:
        facts.append(voice.language)
    link = thread_link(voice.channel, voice.thread_ts)
    if link:
        facts.append(f"<{link}|thread>")
    label = f" ({escape(voice.voice_name)})" if voice.label else ""
    return f"*{escape(voice.title)}*{label}\n" + " · ".join(facts)


def build_voice_list(voices: list[VoiceRecord]) -> tuple[str, Blocks]:
    """`/clone list`: the caller's voices (ephemeral)."""
    if not voices:
        return "You have no cloned voices yet.", [
            _section("You have no cloned voices yet. Drop a recording of 10 s to 3 min into a channel I'm in.")
        ]
    shown = voices[:LIST_LIMIT]
    blocks: Blocks = [_section(f"*Your voices* ({len(voices)})")]
    blocks += [_section(voice_summary(v)) for v in shown]
    if len(voices) > len(shown):
        blocks.append(_context(f"…and {len(voices) - len(shown)} more: see the Home tab."))
    blocks.append(_context("`/clone say <voice> <text>` · `/clone rename` · `/clone forget` · `/clone forget-me`"))
    return f"Your voices: {', '.join(v.title for v in shown)}", blocks


def build_home(voices: list[VoiceRecord]) -> dict[str, Any]:
    """The App Home tab: "Your voices", each with Play sample, Say…, Rename and Forget."""
    blocks: Blocks = [{"type": "header", "text": {"type": "plain_text", "text": "Your voices"}}]
    if not voices:
        blocks.append(_section("No voices yet. Drop a recording (10 s to 3 min of one person speaking) into a "
                               "channel I'm in, or send it to me here, and the clone shows up here."))
    for voice in voices[:HOME_LIMIT]:
        buttons = []
        link = thread_link(voice.channel, voice.thread_ts)
        if link:
            buttons.append({"type": "button", "text": {"type": "plain_text", "text": "Play sample"},
                            "action_id": f"voice_play_{voice.voice_id}"[:255], "url": link})
        buttons += [
            _button("Say…", SAY_ACTION, voice.voice_id),
            _button("Rename", RENAME_ACTION, voice.voice_id),
            {**_button("Forget", FORGET_ACTION, voice.voice_id, "danger"), "confirm": {
                "title": {"type": "plain_text", "text": "Forget this voice?"},
                "text": {"type": "mrkdwn", "text": _forget_warning(voice)[:300]},
                "confirm": {"type": "plain_text", "text": "Forget"},
                "deny": {"type": "plain_text", "text": "Keep"},
                "style": "danger",
            }},
        ]
        blocks += [_section(voice_summary(voice)), {"type": "actions", "elements": buttons}, {"type": "divider"}]
    if len(voices) > HOME_LIMIT:
        blocks.append(_context(f"…and {len(voices) - HOME_LIMIT} older voices: `/clone list` shows them."))
    blocks.append(_context(USAGE.replace("*Your voices*\n", "")))
    return {"type": "home", "blocks": blocks}


# -- forgetting --------------------------------------------------------------------------------------------------

NO_DELETE_API = (
    "Tencent Cloud offers no API to delete a cloned voice, so it may still exist on Tencent's side. "
    "To have it deleted there, quote its VoiceId to Tencent Cloud support"
)


def _forget_warning(voice: VoiceRecord) -> str:
    return f"I'll remove *{escape(voice.title)}* from my records. {NO_DELETE_API}: `{escape(voice.voice_id)}`."


def build_forget_confirm(voice: VoiceRecord) -> tuple[str, Blocks]:
    """`/clone forget <voice>`: what will happen, and the button that does it."""
    text = _forget_warning(voice)
    return text, [
        _section(f":wastebasket: {text}"),
        {"type": "actions", "elements": [_button("Forget this voice", FORGET_CONFIRM_ACTION, voice.voice_id,
                                                  "danger")]},
    ]


def build_forgotten(voice: VoiceRecord) -> str:
    """Said once a voice is forgotten."""
    return (f":wastebasket: Forgot *{escape(voice.title)}*: it is gone from my records and its job and transcript "
            f"are deleted. {NO_DELETE_API}: `{escape(voice.voice_id)}`.")


def build_forget_me_confirm(voices: list[VoiceRecord]) -> tuple[str, Blocks]:
    """`/clone forget-me`: everything of the caller's, with one button."""
    text = (f"I'll remove all {len(voices)} of your voices and every job and transcript of yours from my records. "
            "The consent audit keeps its lines (who agreed to which clone, when), as the README explains. "
            f"{NO_DELETE_API}.")
    return text, [
        _section(f":wastebasket: {escape(text)}"),
        {"type": "actions", "elements": [_button("Forget all of it", FORGET_ME_ACTION, "me", "danger")]},
    ]


def build_forgot_me(voices: list[VoiceRecord], jobs: int) -> str:
    """Said once forget-me is done, with every VoiceId to quote to Tencent support."""
    ids = ", ".join(f"`{escape(v.voice_id)}`" for v in voices) or "none"
    return (f":wastebasket: Done: {len(voices)} voice(s) and {jobs} job(s) with their transcripts are gone from my "
            f"records (the consent audit stays). {NO_DELETE_API}: {ids}."[:3000])
