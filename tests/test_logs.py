"""Logging: every record scrubbed whatever logger or handler writes it, LOG_FORMAT=json with job fields from
log_context or extra, the text format as before, and clear errors for an unknown level or format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot import logs
from bot.logs import MASK, SecretFilter, configure_logging, log_context

SECRET = "s3cr3t-signing-value"
# Built at run time so that no token-shaped literal sits in the source for secret scanners to flag.
TOKEN = "xox" + "b-" + "1234567890-abcdefghijklmn"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leaves the global logging state as found: record factory, root's handlers, filters and level, library
    levels, the scrubber's secrets. Root's handler list is not restored wholesale: pytest swaps its own capture
    handlers between setup, call and teardown, and putting back the setup ones would leave stale handlers."""
    root = logging.getLogger()
    factory = logging.getLogRecordFactory()
    handlers = list(root.handlers)
    filtered = {id(h) for h in handlers if logs._filter in h.filters}
    formatters = {id(h): h.formatter for h in handlers}
    level = root.level
    chatty = {name: logging.getLogger(name).level for name in logs._CHATTY}
    secrets = list(logs._filter.secrets)
    yield
    logging.setLogRecordFactory(factory)
    for handler in list(root.handlers):
        if getattr(handler, "_voiceclone", False) and handler not in handlers:
            root.removeHandler(handler)
        elif logs._filter in handler.filters and id(handler) not in filtered:
            handler.removeFilter(logs._filter)
        if id(handler) in formatters:
            handler.setFormatter(formatters[id(handler)])
    root.setLevel(level)
    for name, chatty_level in chatty.items():
        logging.getLogger(name).setLevel(chatty_level)
    logs._filter.secrets = secrets


class Stderr:
    """What reached sys.stderr so far, read through capsys (pytest re-installs its own sys.stderr at each phase,
    undoing a monkeypatch made in a fixture)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys, self.text = capsys, ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Stderr:
    """What the bot's handler writes: it writes to whatever sys.stderr is at the time."""
    return Stderr(capsys)


@pytest.fixture
def own_handler() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A library-style logger with a StreamHandler of its own, not propagating to root (as uvicorn's are)."""
    logger = logging.getLogger("test_logs.library")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.NOTSET
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def _raise(message: str) -> None:
    raise RuntimeError(message)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- scrubbing, whatever the handler --------------------------------------------------------------------


def test_a_logger_with_its_own_handler_is_scrubbed(own_handler: tuple[logging.Logger, io.StringIO]):
    logger, stream = own_handler
    configure_logging("INFO", [SECRET])
    logger.info("signing secret is %s", SECRET)  # in the args
    logger.warning(f"pasted {TOKEN} here")  # in the message, token-shaped, not configured
    later = logging.getLogger("test_logs.created_later")  # a logger made after configure_logging
    later.addHandler(logging.StreamHandler(stream))
    later.propagate = False
    try:
        later.error("later %s", SECRET)
    finally:
        later.handlers.clear()
        later.propagate = True
    out = stream.getvalue()
    assert SECRET not in out and TOKEN not in out
    assert out.splitlines() == [
        f"INFO test_logs.library: signing secret is {MASK}",
        f"WARNING test_logs.library: pasted {MASK} here",
        f"later {MASK}",
    ]


def test_an_exception_message_is_scrubbed_in_every_handler(
    stderr: Stderr, own_handler: tuple[logging.Logger, io.StringIO]
):
    logger, stream = own_handler
    configure_logging("INFO", [SECRET])
    for log in (logger, logging.getLogger("test_logs.root_handler")):
        try:
            _raise(f"rejected {SECRET} and {TOKEN}")
        except RuntimeError:
            log.exception("call failed")
    for out in (stream.getvalue(), stderr.getvalue()):
        assert "Traceback (most recent call last)" in out
        assert f"RuntimeError: rejected {MASK} and {MASK}" in out
        assert SECRET not in out and TOKEN not in out


def test_args_are_scrubbed_and_stay_a_tuple_for_formatters_that_unpack_them(
    own_handler: tuple[logging.Logger, io.StringIO],
):
    """uvicorn's access formatter unpacks record.args: scrubbing must not flatten them into the message."""
    logger, stream = own_handler

    class AccessFormatter(logging.Formatter):
        def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
            client, method, path, status = record.args  # type: ignore[misc]
            return f"{client} {method} {path} -> {status:d}"

    logger.handlers[0].setFormatter(AccessFormatter())
    configure_logging("INFO", [SECRET])
    logger.info("%s %s %s %d", "10.0.0.1", "GET", f"/files?t={TOKEN}&k={SECRET}", 200)
    assert stream.getvalue() == f"10.0.0.1 GET /files?t={MASK}&k={MASK} -> 200\n"


def test_a_secret_split_between_message_and_args_or_inside_an_object_is_scrubbed(stderr: Stderr):
    configure_logging("INFO", [SECRET])
    log = logging.getLogger("test_logs.split")
    log.info(SECRET[:8] + "%s", SECRET[8:])  # neither part alone is the secret
    log.info("headers %r", {"Authorization": f"Bearer {TOKEN}"})  # a dict arg: %r of it holds the token
    log.info("count %d of %.1f", 3, 2.5)  # numbers untouched
    lines = stderr.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        MASK,
        f"headers {{'Authorization': 'Bearer {MASK}'}}",
        "count 3 of 2.5",
    ]


def test_unformattable_args_do_not_leak_through_loggings_error_report(stderr: Stderr):
    configure_logging("INFO", [SECRET])
    logging.getLogger("test_logs.bad").info("value %d", SECRET)
    out = stderr.getvalue()
    assert SECRET not in out and "--- Logging error ---" not in out
    assert f"value %d [unformattable args: ('{MASK}',)]" in out


def test_stack_info_is_scrubbed(own_handler: tuple[logging.Logger, io.StringIO]):
    logger, stream = own_handler
    configure_logging("INFO", ["s3cr3t-in-source"])

    def log_here(note: str) -> None:
        logger.info("here", stack_info=True)

    log_here("s3cr3t-in-source")  # the stack prints this source line
    out = stream.getvalue()
    assert "Stack (most recent call last)" in out and 'log_here("' in out
    assert "s3cr3t-in-source" not in out and MASK in out


def test_root_handler_filter_scrubs_records_made_without_the_factory(stderr: Stderr):
    """Records rebuilt from a dict (logging.makeLogRecord, a socket listener) skip the record factory."""
    configure_logging("INFO", [SECRET])
    record = logging.makeLogRecord(
        {
            "name": "test_logs.rebuilt",
            "levelno": logging.ERROR,
            "levelname": "ERROR",
            "msg": "key %s",
            "args": (SECRET,),
        }
    )
    record.exc_text = f"Traceback (most recent call last):\nRuntimeError: {SECRET}"
    logging.getLogger("test_logs.rebuilt").handle(record)
    out = stderr.getvalue()
    assert SECRET not in out
    assert f"ERROR test_logs.rebuilt: key {MASK}\n" in out and f"RuntimeError: {MASK}" in out


def test_secrets_added_to_the_returned_filter_are_scrubbed(stderr: Stderr):
    scrubber = configure_logging("INFO")
    assert isinstance(scrubber, SecretFilter)
    scrubber.add("late-added-secret")
    logging.getLogger("test_logs.late").warning("late-added-secret")
    assert stderr.getvalue().endswith(f"WARNING test_logs.late: {MASK}\n")


def test_token_shapes_never_configured_are_scrubbed_too(stderr: Stderr):
    """A workspace's bot token from an installation, or a Workflow Builder step's own token from its event, is known
    to no filter in advance: its shape is enough."""
    configure_logging("INFO")
    logging.getLogger("test_logs.shapes").warning(
        "tokens %s %s %s", "xoxb-1234-5678-abcdefgh", "xapp-1-A0-99-ffffffff", "xwfp-7777-8888-abcdef"
    )
    assert stderr.getvalue().endswith(f"WARNING test_logs.shapes: tokens {MASK} {MASK} {MASK}\n")


# -- text format ------------------------------------------------------------------------------------------


def test_text_format_is_unchanged_and_appends_job_id_in_a_job(stderr: Stderr):
    configure_logging("INFO")
    log = logging.getLogger("test_logs.text")
    log.info("hello %s", "there")
    with log_context(job_id="J42", stage="clone"):
        log.info("in a job")
    lines = stderr.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(rf"{stamp} INFO test_logs\.text: hello there", lines[0]), lines[0]
    assert re.fullmatch(rf"{stamp} INFO test_logs\.text: in a job job_id=J42", lines[1]), lines[1]


def test_configuring_twice_keeps_one_handler_and_one_factory(stderr: Stderr):
    configure_logging("INFO", [SECRET])
    factory = logging.getLogRecordFactory()
    configure_logging("INFO", [SECRET])
    assert logging.getLogRecordFactory() is factory
    logging.getLogger("test_logs.twice").warning("once")
    assert stderr.getvalue().count("once") == 1


# -- JSON format ----------------------------------------------------------------------------------------


def test_json_lines_carry_time_level_logger_message_and_job_fields(stderr: Stderr):
    configure_logging("info", [SECRET], fmt="json")
    log = logging.getLogger("test_logs.json")
    before = datetime.now(UTC)
    log.info("before any job")
    with log_context(job_id="J1", team="T1", channel="C1"):
        with log_context(stage="clone"):
            log.info("cloned with %s", SECRET, extra={"duration": 1.25, "request_id": "R-9"})
        log.warning("between stages")
    log.info('quote " and\nnewline')
    after = datetime.now(UTC)
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 4  # one object per line, even with a newline in the message
    records = [json.loads(line) for line in lines]
    for record in records:
        stamp = datetime.fromisoformat(record["time"])
        assert stamp.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= stamp <= after
        assert record["logger"] == "test_logs.json"
    assert {k: v for k, v in records[0].items() if k != "time"} == {
        "level": "INFO",
        "logger": "test_logs.json",
        "message": "before any job",
    }
    assert {k: v for k, v in records[1].items() if k != "time"} == {
        "level": "INFO",
        "logger": "test_logs.json",
        "message": f"cloned with {MASK}",
        "job_id": "J1",
        "team": "T1",
        "channel": "C1",
        "stage": "clone",
        "duration": 1.25,
        "request_id": "R-9",
    }
    assert records[2]["level"] == "WARNING" and records[2]["job_id"] == "J1" and "stage" not in records[2]
    assert records[3]["message"] == 'quote " and\nnewline' and "job_id" not in records[3]


def test_json_exception_is_scrubbed_in_exc(stderr: Stderr):
    configure_logging("INFO", [SECRET], fmt="json")
    with log_context(job_id="J2"):
        try:
            _raise(f"TRTC said {SECRET}")
        except RuntimeError:
            logging.getLogger("test_logs.json").exception("clone failed")
    (record,) = _json_lines(stderr.getvalue())
    assert record["message"] == "clone failed" and record["job_id"] == "J2"
    assert record["exc"].startswith("Traceback (most recent call last)")
    assert record["exc"].endswith(f"RuntimeError: TRTC said {MASK}")
    assert SECRET not in stderr.getvalue()


def test_json_extra_fields_are_scrubbed_too(stderr: Stderr):
    configure_logging("INFO", [SECRET], fmt="json")
    logging.getLogger("test_logs.json").info("fetched", extra={"url": f"https://files/x?t={TOKEN}", "n": [SECRET]})
    (record,) = _json_lines(stderr.getvalue())
    assert record["url"] == f"https://files/x?t={MASK}" and record["n"] == [MASK]


def test_extra_on_one_call_overrides_the_context_without_error(stderr: Stderr):
    """makeRecord refuses an extra key already on the record: the context must not sit there under job_id."""
    configure_logging("INFO", fmt="json")
    log = logging.getLogger("test_logs.json")
    with log_context(job_id="J3", stage="download"):
        log.info("one call", extra={"stage": "convert", "job_id": "J3b", "duration": 0.5})
        log.info("next call")
    first, second = _json_lines(stderr.getvalue())
    assert (first["job_id"], first["stage"], first["duration"]) == ("J3b", "convert", 0.5)
    assert (second["job_id"], second["stage"]) == ("J3", "download") and "duration" not in second


async def test_log_context_follows_each_task_across_await(stderr: Stderr):
    configure_logging("INFO", fmt="json")
    log = logging.getLogger("test_logs.tasks")
    go_b, go_a = asyncio.Event(), asyncio.Event()

    async def job(job_id: str, wait: asyncio.Event, release: asyncio.Event) -> None:
        with log_context(job_id=job_id):
            log.info("start")
            release.set()
            await wait.wait()  # the other task runs, and logs, in between
            log.info("end")
            child = asyncio.create_task(asyncio.to_thread(log.info, "child"))  # copies the context
            await child

    await asyncio.gather(job("A", go_a, go_b), job("B", go_b, go_a))
    log.info("outside")
    seen = [(r["message"], r.get("job_id")) for r in _json_lines(stderr.getvalue())]
    assert sorted(seen[:-1]) == sorted([(m, j) for j in "AB" for m in ("start", "end", "child")])
    assert seen[-1] == ("outside", None)
    assert seen.index(("start", "B")) < seen.index(("end", "A"))  # the tasks did interleave


# -- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "expected"), [("debug", logging.DEBUG), ("Warning", logging.WARNING), ("ERROR", 40)])
def test_level_names_are_case_insensitive(level: str, expected: int, stderr: Stderr):
    configure_logging(level)
    assert logging.getLogger().level == expected


def test_chatty_libraries_stay_at_info_under_debug(stderr: Stderr):
    configure_logging("DEBUG")
    assert logging.getLogger("httpcore").level == logging.INFO


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"level": "LOUD"}, ["level", "'LOUD'", "DEBUG", "INFO"]),
        ({"level": "INFO", "fmt": "xml"}, ["format", "'xml'", "json"]),
    ],
)
def test_an_unknown_level_or_format_is_a_clear_value_error_and_changes_nothing(kwargs: dict, words: list[str]):
    root = logging.getLogger()
    handlers, level, factory = list(root.handlers), root.level, logging.getLogRecordFactory()
    with pytest.raises(ValueError) as raised:
        configure_logging(secrets=[SECRET], **kwargs)
    for word in words:
        assert word in str(raised.value)
    assert (root.handlers, root.level, logging.getLogRecordFactory()) == (handlers, level, factory)
    assert SECRET not in logs._filter.secrets
