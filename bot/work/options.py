"""Clone options typed in a message or a command: `name=NAME lang=xx model=M text="..." denoise=on|off`."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from bot.errors import OptionError

# The VoiceClone models the bot accepts; settings (VOICECLONE_MODEL), the CLI (--model) and Slack's `model=`
# are all checked against this one tuple.
MODELS = ("flow_01_turbo", "flow_01_ex", "flow_02_turbo")
LANGUAGE_RULE = "a two-letter ISO 639-1 code such as en, zh or ja"

# Slack clients and phones turn straight quotes into curly ones; treat them all alike.
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"})
_OPTION = re.compile(r"""(?<!\S)(\w+)=(?:"([^"]*)"?|'([^']*)'?|(\S+))""")
_KEYS = {
    "name": "name",
    "voice": "name",
    "lang": "language",
    "language": "language",
    "model": "model",
    "text": "text",
    "transcript": "text",
    "denoise": "denoise",
}
DENOISE_VALUES = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}
_LANGUAGE = re.compile(r"^[a-z]{2}(?:-[A-Za-z]{2,4})?$")


@dataclass(frozen=True)
class CloneOptions:
    """What the user asked for; None means 'use the default'."""

    name: str | None = None
    language: str | None = None
    model: str | None = None
    text: str | None = None
    denoise: bool | None = None  # None: the bot decides from the noise it measures

    def as_dict(self) -> dict[str, str | bool | None]:
        """A JSON-ready copy."""
        return {
            "name": self.name,
            "language": self.language,
            "model": self.model,
            "text": self.text,
            "denoise": self.denoise,
        }


def parse_options(message: str | None) -> CloneOptions:
    """Pick `key=value` options out of free text; other words are ignored."""
    # Slack escapes &, < and > in message text.
    text = html.unescape(message or "").translate(_QUOTES)
    found: dict[str, str] = {}
    for match in _OPTION.finditer(text):
        key = _KEYS.get(match.group(1).lower())
        if key is None:
            continue
        value = next(v for v in match.group(2, 3, 4) if v is not None).strip()
        if value:
            found[key] = value
    model = found.get("model")
    language = found.get("language")
    denoise = found.get("denoise")
    return CloneOptions(
        name=found.get("name"),
        language=check_language(language) if language is not None else None,
        model=check_model(model) if model is not None else None,
        text=found.get("text"),
        denoise=check_denoise(denoise) if denoise is not None else None,
    )


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
