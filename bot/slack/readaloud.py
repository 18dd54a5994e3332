"""A Slack message's text as a person would read it aloud (for "Speak in my voice"): pure, no Slack calls.

Slack's markup (https://api.slack.com/reference/surfaces/formatting): `<@U…>` mentions become the person's name
when known, else "someone"; `<#C…|name>` becomes "#name"; `<!here>` and friends a phrase; `<url|label>` its label,
a bare link "a link"; `:emoji:` codes are dropped (a person reading aloud skips them), unless the message is
nothing but emoji: then their names are read ("thumbs up"); the *bold*, _italic_, ~strike~ and `code` markers go;
quote marks and list bullets at the start of a line go; &amp; &lt; &gt; are unescaped last. A line that ends
without punctuation gets a full stop, so lines are not read as one run-on sentence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

SOMEONE = "someone"
A_LINK = "a link"
# Slack's special mentions (<!here>, <!channel>, <!everyone>) as words.
SPECIAL = {"here": "everyone here", "channel": "everyone in the channel", "everyone": "everyone"}
# Emoji whose names read badly.
EMOJI_WORDS = {"+1": "thumbs up", "-1": "thumbs down", "thumbsup": "thumbs up", "thumbsdown": "thumbs down"}

_ANGLE = re.compile(r"<([^<>\n]*)>")
_BARE_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>]+|\bwww\.[^\s<>]+\.[^\s<>]+", re.IGNORECASE)
_URL_LIKE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|www\.)", re.IGNORECASE)
_EMOJI = re.compile(r"(?<![A-Za-z0-9]):([a-z0-9_+'-]*[a-z+][a-z0-9_+'-]*):(?![A-Za-z0-9])", re.IGNORECASE)
_FENCE = re.compile(r"```")
# Slack formats *x*, _x_, ~x~ only at word edges (snake_case and 2*3*4 stay as they are).
_MARKERS = [re.compile(rf"(?<![\w{m}]){m}(?=\S)([^{m}\n]*?\S){m}(?![\w{m}])") for m in (r"\*", "_", "~")]
_CODE = re.compile(r"`([^`\n]*)`")
_LINE_START = re.compile(r"^\s*(?:&gt;|>)+\s?|^\s*(?:[•◦▪‣·]|[-*](?=\s))\s*", re.MULTILINE)
_ENDS_SENTENCE = re.compile(r"[.!?…:;,。！？：；，]['\"”’)\]]*$")


def speakable(text: str, names: Mapping[str, str] | None = None) -> str:
    """What a person would read aloud of the Slack message `text`; `names` maps user ids to names (a mention of
    anyone not in it is "someone"). Lines are kept (one per line, blank ones dropped), each ending in punctuation."""
    names = names or {}
    text = _FENCE.sub("\n", text or "")
    text = _ANGLE.sub(lambda m: _angle(m.group(1), names), text)
    text = _BARE_URL.sub(A_LINK, text)
    spoken = _lines(_EMOJI.sub("", text))
    if not spoken:  # nothing but emoji (or nothing at all): read the emoji's names
        spoken = _lines(_EMOJI.sub(lambda m: _emoji(m.group(1)), text))
    return spoken


def _lines(text: str) -> str:
    text = _CODE.sub(r"\1", text)
    for marker in _MARKERS:
        text = marker.sub(r"\1", text)
    text = _LINE_START.sub("", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1:
        lines = [line if _ENDS_SENTENCE.search(line) else line + "." for line in lines]
    return "\n".join(lines)


def _angle(inner: str, names: Mapping[str, str]) -> str:
    """One <…> token: a mention, a channel, a special mention, a link (with or without a label)."""
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        name = names.get(target[1:]) or label.lstrip("@")
        return name or SOMEONE
    if target.startswith("#"):
        return f"#{label}" if label else "a channel"
    if target.startswith("!"):
        word = target[1:]
        if word in SPECIAL:
            return SPECIAL[word]
        # <!subteam^S…|@team>, <!date^…|fallback>: the label is what Slack shows.
        return label.lstrip("@") if label else ""
    if label and not _URL_LIKE.match(label):
        return label
    return A_LINK if target else ""


def _emoji(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith("skin-tone-"):
        return ""
    return EMOJI_WORDS.get(lowered) or " ".join(part for part in re.split(r"[_-]+", lowered) if part)
