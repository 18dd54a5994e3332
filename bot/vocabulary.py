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
