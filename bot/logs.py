"""Logging set-up with secret scrubbing: no configured secret reaches a log line, at any level."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

MASK = "**********"
# Token shapes, scrubbed even when they are not this bot's own (a pasted token in an error, say).
_TOKEN_SHAPES = re.compile(r"\b(xox[abpre]-[A-Za-z0-9-]{6,}|xapp-[A-Za-z0-9-]{6,})")
# Libraries that log whole requests (headers with tokens, the audio) at DEBUG.
_CHATTY = ("tencentcloud_sdk_common", "httpx", "httpcore", "websockets", "aiohttp.access")


class SecretFilter(logging.Filter):
    """Replaces every known secret, and anything shaped like a Slack token, with a mask."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def add(self, *secrets: str) -> None:
        """Scrub these too."""
        self.secrets = sorted({*self.secrets, *(s for s in secrets if s and len(s) >= 6)}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """The text with secrets masked."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return _TOKEN_SHAPES.sub(MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.scrub(message)
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now, scrubbed, so the handler does not print the raw one.
            formatter = logging.Formatter()
            record.exc_text = self.scrub(formatter.formatException(record.exc_info))
            record.exc_info = None
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now (tests and tools swap it), not the one seen at start-up."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


_filter = SecretFilter()


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> SecretFilter:
    """Log to stderr at `level`, scrubbing `secrets`; chatty libraries stay at INFO even under DEBUG."""
    _filter.add(*secrets)
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_voiceclone", False) for h in root.handlers):
        handler = _StderrHandler()
        handler._voiceclone = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    return _filter
