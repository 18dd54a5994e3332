"""Clone options typed in a message or a command: `name=NAME lang=xx model=M text="..." denoise=on|off`."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from bot.errors import OptionError
from bot.vocabulary import check_denoise, check_language, check_model

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


@dataclass(frozen=True)
class CloneOptions:
    """What the user asked for; None means 'use the default'."""

    name: str | None = None
    language: str | None = None
    model: str | None = None
    text: str | None = None
    denoise: bool | None = None  # None: the bot decides from the noise it measures
    # An option typed with an unusable value in a file share. The job is stored anyway and a worker answers it in
    # the share's thread: a share has no acknowledgement to answer in, and a worker answers once however often
    # Slack retries the event.
    problem: OptionError | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (what a job stores); `from_dict` reads it back."""
        data: dict[str, Any] = {
            "name": self.name,
            "language": self.language,
            "model": self.model,
            "text": self.text,
            "denoise": self.denoise,
        }
        if self.problem is not None:
            problem = self.problem
            data["problem"] = {"option": problem.option, "value": problem.value, "allowed": problem.allowed}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CloneOptions:
        """The options as_dict() stored."""
        problem = data.get("problem")
        return cls(
            name=data.get("name"),
            language=data.get("language"),
            model=data.get("model"),
            text=data.get("text"),
            denoise=data.get("denoise"),
            problem=OptionError(problem["option"], problem["value"], problem["allowed"]) if problem else None,
        )


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
