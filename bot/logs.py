"""Logging set-up with secret scrubbing: no configured secret reaches a log line, at any level, through any handler.

Scrubbing happens twice. A record factory (`logging.setLogRecordFactory`) cleans the message, its args, the
traceback and the stack when a record is made, so loggers with handlers of their own (uvicorn installs some on
"uvicorn", "uvicorn.error" and "uvicorn.access") or created later are covered too. A filter on root's handlers
cleans again what bypasses the factory (records rebuilt with `logging.makeLogRecord`, a pre-set `exc_text`).

Job fields (job_id, team, channel, stage, ...) come from `log_context(...)`, a contextvar, or from
`extra={...}` on one call; `LOG_FORMAT=json` prints them, the text format appends job_id only.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

MASK = "**********"
# Token shapes, scrubbed even when they are not this bot's own (a pasted token in an error, say).
# xwfp-: the short-lived token a Workflow Builder step's function_executed event carries.
_TOKEN_SHAPES = re.compile(r"\b(xox[abpre]-[A-Za-z0-9-]{6,}|xapp-[A-Za-z0-9-]{6,}|xwfp-[A-Za-z0-9-]{6,})")
# Libraries that log whole requests (headers with tokens, the audio) at DEBUG.
_CHATTY = ("tencentcloud_sdk_common", "httpx", "httpcore", "websockets", "aiohttp.access")
FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Job fields printed by the JSON format when known, in this order; any other context or extra field follows them.
JOB_FIELDS = ("job_id", "team", "channel", "stage", "duration")
# The record attribute that carries the log context captured when the record was made. One attribute, not one per
# field: `Logger.makeRecord` refuses an `extra` key already on the record, so stamping job_id there would make
# `extra={"job_id": ...}` raise inside a job.
_CONTEXT_ATTR = "log_context"
# Record attributes that are not worth a JSON field: uvicorn's ANSI-coloured copy of the message.
_SKIP_EXTRA = frozenset({_CONTEXT_ATTR, "color_message"})
# LogRecord's own attributes, which are not `extra` fields; read off a record rather than a library's list.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_PLAIN = (int, float, bool, type(None))


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

    def scrub_record(self, record: logging.LogRecord) -> None:
        """Cleans the record in place: message, args, traceback and stack."""
        self._scrub_message(record)
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now, scrubbed, and drop exc_info so that no formatter prints the raw one.
            record.exc_text = self.scrub(_PLAIN_FORMATTER.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)

    def _scrub_message(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - bad args: logging's own error report would print them raw
            record.msg, record.args = self.scrub(f"{record.msg} [unformattable args: {record.args!r}]"), None
            return
        if self.scrub(message) == message:
            return  # clean already, the usual case: one format and one scrub
        # Clean the parts, keeping args a tuple: uvicorn's access formatter unpacks record.args.
        if isinstance(record.msg, str):
            record.msg = self.scrub(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {key: self._scrub_arg(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(self._scrub_arg(arg) for arg in record.args)
        try:
            rebuilt = record.getMessage()
        except Exception:  # noqa: BLE001 - a scrubbed arg no longer fits its %d, say
            rebuilt = None
        if rebuilt is None or self.scrub(rebuilt) != rebuilt:
            # A secret split between msg and an arg, or hidden in a repr: give up the structure, keep the text.
            record.msg, record.args = self.scrub(message), None

    def _scrub_arg(self, arg: object) -> object:
        if isinstance(arg, str):
            return self.scrub(arg)
        if isinstance(arg, _PLAIN):
            return arg  # keeps %d and %.2f working
        text = str(arg)
        clean = self.scrub(text)
        return arg if clean == text else clean

    def filter(self, record: logging.LogRecord) -> bool:
        self.scrub_record(record)
        return True


_PLAIN_FORMATTER = logging.Formatter()
_filter = SecretFilter()
# Read-only mappings: a record keeps the one in force when it was made, so nobody may change it afterwards.
_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(**fields: object) -> Iterator[Mapping[str, object]]:
    """Adds `fields` (job_id=..., team=..., channel=..., stage=...) to every record made inside the block.

    Nestable (inner fields add to or override outer ones, and are dropped on exit); a contextvar, so it follows
    `await` within a task and is copied into tasks created inside the block, without leaking into other tasks.
    A field set to None is removed. Exit in the task (or thread) that entered.
    """
    merged = {**_context.get(), **fields}
    token = _context.set(MappingProxyType({key: value for key, value in merged.items() if value is not None}))
    try:
        yield _context.get()
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, object]:
    """The log context in force here (read-only)."""
    return _context.get()


def record_fields(record: logging.LogRecord) -> dict[str, object]:
    """The job fields of a record: its log context, overridden by `extra={...}` fields given on the call."""
    fields: dict[str, object] = dict(getattr(record, _CONTEXT_ATTR, None) or {})
    for name in JOB_FIELDS:
        if name in record.__dict__:
            fields[name] = record.__dict__[name]
    return fields


def _scrubbing_factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        context = _context.get()
        if context:
            setattr(record, _CONTEXT_ATTR, context)
        _filter.scrub_record(record)
        return record

    factory._voiceclone_previous = previous  # type: ignore[attr-defined]
    return factory


def _install_factory() -> None:
    """Wraps the current record factory once; a second configure_logging keeps the wrapper it has."""
    current = logging.getLogRecordFactory()
    if not hasattr(current, "_voiceclone_previous"):
        logging.setLogRecordFactory(_scrubbing_factory(current))


class TextFormatter(logging.Formatter):
    """Today's `time LEVEL logger: message`, with ` job_id=...` appended inside a job."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        job_id = record_fields(record).get("job_id")
        return f"{line} job_id={job_id}" if job_id is not None else line


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, the job fields when known, any other
    `extra` field, and "exc" (the scrubbed traceback) / "stack" when there is one. Values are scrubbed again,
    since an `extra` field may hold anything."""

    def __init__(self, scrubber: SecretFilter) -> None:
        super().__init__(json_ensure_ascii=False)
        self.scrubber = scrubber

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        fields = record_fields(record)
        for name in JOB_FIELDS:
            if name in fields:
                log_data[name] = fields[name]
        extras = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and k not in _SKIP_EXTRA}
        for key, value in {**fields, **extras, **message_dict}.items():
            if key in ("exc_info", "stack_info"):
                continue
            log_data.setdefault(key, value)  # the core fields above win over a context field named "level"
        exc = message_dict.get("exc_info") or record.exc_text
        if exc:
            log_data["exc"] = exc
        if message_dict.get("stack_info"):
            log_data["stack"] = message_dict["stack_info"]

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: self._clean(value) for key, value in log_data.items()}

    def _clean(self, value: object) -> object:
        if isinstance(value, str):
            return self.scrubber.scrub(value)
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, Mapping):
            return {str(k): self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v) for v in value]
        return self.scrubber.scrub(str(value))  # what json would have printed via default=str, scrubbed


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now (tests and tools swap it), not the one seen at start-up."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _level_number(level: str | int) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    name = str(level).strip().upper()
    if name not in LEVELS:
        raise ValueError(f"Unknown log level {level!r}: use one of {', '.join(LEVELS)} (any case)")
    return logging.getLevelNamesMapping()[name]


def configure_logging(level: str | int = "INFO", secrets: Iterable[str] = (), *, fmt: str = "text") -> SecretFilter:
    """Log to stderr at `level` in `fmt` ("text" or "json"), scrubbing `secrets` from every record of every logger;
    chatty libraries stay at INFO even under DEBUG. Raises ValueError for an unknown level or format, before
    changing anything. Calling it again changes the level and format and adds secrets."""
    number = _level_number(level)
    style = str(fmt).strip().lower()
    if style not in FORMATS:
        raise ValueError(f"Unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    _filter.add(*secrets)
    _install_factory()
    root = logging.getLogger()
    root.setLevel(number)
    ours = [h for h in root.handlers if getattr(h, "_voiceclone", False)]
    if not ours:
        handler = _StderrHandler()
        handler._voiceclone = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        ours = [handler]
    for handler in ours:
        handler.setFormatter(JsonLineFormatter(_filter) if style == "json" else TextFormatter())
    for handler in root.handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    return _filter


class Throttle:
    """At most one line per key every `interval` seconds; the next line says how many were held back. For what a
    stranger can make happen at will (refused requests): one line each would let a flood of them flood the log."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._state: dict[str, tuple[float, int]] = {}  # key -> (when last logged, held back since)

    def warning(self, logger: logging.Logger, key: str, msg: str, *args: object) -> None:
        """logger.warning(msg, *args), unless a line of this key went out less than `interval` ago."""
        now = self.clock()
        last, held = self._state.get(key, (None, 0))
        if last is not None and now - last < self.interval:
            self._state[key] = (last, held + 1)
            return
        if held:
            msg += " (and %d more like it in the last %.0f s, not logged)"
            args = (*args, held, now - last if last is not None else 0.0)
        if len(self._state) > 1000:  # keys are the callers' fixed phrases; this only guards against a misuse
            self._state.clear()
        self._state[key] = (now, 0)
        logger.warning(msg, *args)
