"""What a clone may be asked for, checked the same way wherever it is typed: VOICECLONE_MODEL and
VOICECLONE_LANGUAGE in the settings, --model and --language on the command line, `model=`, `lang=` and
`denoise=` in Slack."""

from __future__ import annotations

import re

from bot.errors import OptionError

# The VoiceClone models the bot accepts; settings (VOICECLONE_MODEL), the CLI (--model) and Slack's `model=`
# are all checked against this one tuple.
MODELS = ("flow_01_turbo", "flow_01_ex", "flow_02_turbo")
LANGUAGE_RULE = "a two-letter ISO 639-1 code such as en, zh or ja"

DENOISE_VALUES = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}
_LANGUAGE = re.compile(r"^[a-z]{2}(?:-[A-Za-z]{2,4})?$")


def check_denoise(value: str, option: str = "denoise") -> bool:
    """`on` or `off` (also yes/no, true/false) as a bool; raise OptionError otherwise."""
    try:
        return DENOISE_VALUES[value.lower()]
    except KeyError:
        raise OptionError(option, value, "on, off") from None


def check_model(model: str, option: str = "model") -> str:
    """Return `model` if the bot accepts it, else raise OptionError naming `option` as the user typed it."""
    if model not in MODELS:
        raise OptionError(option, model, ", ".join(MODELS))
    return model


def check_language(language: str, option: str = "lang") -> str:
    """Normalise and check a Language value (`EN` -> `en`, `zh-Hant` kept); raise OptionError if unusable."""
    normalised = language.lower() if "-" not in language else language
    if not _LANGUAGE.match(normalised):
        raise OptionError(option, language, LANGUAGE_RULE)
    return normalised


# The Language values VoiceClone takes, as the TRTC SDK documents VoiceCloneRequest.Language
# (tencentcloud-sdk-python-trtc 3.1.177): flow_02_turbo takes the first ten, flow_01_ex all of them. Nothing is
# documented for flow_01_turbo (or for no model, Tencent's default): there only the ten every listed model takes
# are used. A Language the bot fills in by itself (from Slack's transcript) must be one of these; what a user types
# with `lang=` is only checked for its shape, as Tencent may take more than it documents.
COMMON_LANGUAGES = ("zh", "en", "ja", "ko", "yue", "ms", "ar", "id", "th", "vi")
MODEL_LANGUAGES: dict[str, tuple[str, ...]] = {
    "flow_02_turbo": COMMON_LANGUAGES,
    "flow_01_ex": (
        *COMMON_LANGUAGES, "zh-tw", "ru", "es", "fr", "pt", "de", "tr", "nl", "uk", "it", "pl", "ro", "el", "cs",
        "fi", "hi", "bg", "da", "he", "fa", "sk", "sv", "hr", "tl", "hu", "no", "sl", "ca", "nn", "ta", "af",
    ),
}  # fmt: skip
LANGUAGE_NAMES = {
    "zh": "Chinese", "zh-tw": "Chinese (Traditional)", "en": "English", "ja": "Japanese", "ko": "Korean",
    "yue": "Cantonese", "ms": "Malay", "ar": "Arabic", "id": "Indonesian", "th": "Thai", "vi": "Vietnamese",
    "ru": "Russian", "es": "Spanish", "fr": "French", "pt": "Portuguese", "de": "German", "tr": "Turkish",
    "nl": "Dutch", "uk": "Ukrainian", "it": "Italian", "pl": "Polish", "ro": "Romanian", "el": "Greek",
    "cs": "Czech", "fi": "Finnish", "hi": "Hindi", "bg": "Bulgarian", "da": "Danish", "he": "Hebrew",
    "fa": "Persian", "sk": "Slovak", "sv": "Swedish", "hr": "Croatian", "tl": "Filipino", "hu": "Hungarian",
    "no": "Norwegian", "sl": "Slovenian", "ca": "Catalan", "nn": "Norwegian Nynorsk", "ta": "Tamil",
    "af": "Afrikaans",
}  # fmt: skip
# Locale codes whose language VoiceClone names differently from the locale's first part.
_LOCALE_LANGUAGES = {
    "zh-tw": "zh-tw", "zh-hant": "zh-tw", "zh-hk": "yue", "zh-mo": "yue", "yue": "yue",
    "fil": "tl", "iw": "he", "in": "id", "nb": "no",
}  # fmt: skip


def language_of_locale(locale: str | None) -> str | None:
    """The VoiceClone Language code a locale such as Slack's transcript `locale` names: `en-US` -> `en`,
    `ja-JP` -> `ja`, `zh-CN` -> `zh`, `zh-TW` -> `zh-tw`; None for an empty or malformed locale."""
    if not locale:
        return None
    parts = locale.strip().replace("_", "-").lower().split("-")
    if not all(part.isalnum() for part in parts) or not parts[0].isalpha() or not 2 <= len(parts[0]) <= 3:
        return None
    for key in ("-".join(parts[:2]), parts[0]):
        if key in _LOCALE_LANGUAGES:
            return _LOCALE_LANGUAGES[key]
    return parts[0]


def accepted_language(locale: str | None, model: str | None) -> str | None:
    """The Language for a recording in `locale` when `model` (None: Tencent's default) is documented to take it,
    else None (VoiceClone then detects the language itself)."""
    language = language_of_locale(locale)
    if language is None:
        return None
    if language not in MODEL_LANGUAGES.get(model or "", COMMON_LANGUAGES):
        return None
    return language
