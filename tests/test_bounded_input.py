"""Bounded input on the Slack port, against the bot as a real process: a body over 1 MB is refused with 413 before
it is read (declared with Content-Length) or the moment it passes 1 MB (streamed, chunked), and the process's memory
stays flat while 200 MB are thrown at it; malformed signature headers get 401 with one WARNING line and no
traceback; Slack's own signed requests, up to the limit, still work."""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psutil
import pytest
from support.driving import BotProcess, standins
from support.harness import SIGNING_SECRET

from bot.logs import Throttle
from bot.testing.standin_slack import sign

MB = 1024 * 1024
HUGE = 200 * MB


@pytest.fixture(scope="module")
def process(tmp_path_factory: pytest.TempPathFactory):
    """The bot as `python -m bot run --http`, against the stand-ins."""
    with standins() as (slack, trtc):
        bot = BotProcess(slack, trtc, tmp_path_factory.mktemp("bounded")).start()
        try:
            yield bot
        finally:
            bot.close()


@pytest.fixture
def fresh_process(tmp_path: Path):
    """A bot process of this test's own: its refusal log lines are not held back by another test's (a refused
    request logs one line per reason every 10 s at most)."""
    with standins() as (slack, trtc):
        bot = BotProcess(slack, trtc, tmp_path).start()
        try:
            yield bot
        finally:
            bot.close()


class PeakRss:
    """Samples a process's resident memory on a thread of its own until stopped; the highest value seen."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, self.process.memory_info().rss)


def throw_body(port: int, total: int, *, chunked: bool) -> tuple[bytes, int]:
    """POST /slack/events with a `total`-byte unsigned body (chunked, or with its Content-Length), sent as fast as
    the socket takes it until the bot answers or closes; (the answer's first line, bytes of body sent by then)."""
    head = "POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    piece = b"{" * (256 * 1024)
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        pending = memoryview(b"")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 1.0)
            if readable:
                break
            if writable:
                if not pending:
                    pending = memoryview(frame)
                try:
                    done = sock.send(pending)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break  # the bot closed the connection: its answer is waiting, or it reset it
                pending = pending[done:]
                sent += done
        sock.setblocking(True)
        sock.settimeout(10)
        try:
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    return answer.split(b"\r\n", 1)[0], sent


@pytest.mark.parametrize("chunked", [True, False], ids=["streamed-chunked", "content-length"])
def test_a_200_mb_body_is_refused_with_413_and_memory_stays_flat(process, chunked):
    assert process.proc is not None
    baseline = psutil.Process(process.proc.pid).memory_info().rss
    with PeakRss(process.proc.pid) as rss:
        status, sent = throw_body(process.port, HUGE, chunked=chunked)
    growth = (rss.peak - baseline) / MB
    print(f"\n{'chunked' if chunked else 'Content-Length'}: {status!r} after {sent / MB:.1f} MB sent; "
          f"RSS {baseline / MB:.1f} MB -> peak {rss.peak / MB:.1f} MB (+{growth:.1f} MB)")
    assert status.startswith(b"HTTP/1.1 413 "), status
    # Refused early: far less than the 200 MB went out before the answer (what did went into socket buffers).
    assert sent < 40 * MB
    assert growth < 40, f"peak RSS grew by {growth:.1f} MB"
    # And the bot still serves.
    assert httpx.get(f"http://127.0.0.1:{process.port}/healthz", timeout=5).status_code == 200


def _log_after(process: BotProcess, offset: int) -> str:
    return Path(process.logs[-1]).read_text(errors="replace")[offset:]


def _log_size(process: BotProcess) -> int:
    return len(Path(process.logs[-1]).read_text(errors="replace"))


MALFORMED = {
    "no-headers": ({}, "no X-Slack-Request-Timestamp or X-Slack-Signature header"),
    "no-signature": ({"X-Slack-Request-Timestamp": "1700000000"},
                     "no X-Slack-Request-Timestamp or X-Slack-Signature header"),
    "words-for-timestamp": ({"X-Slack-Request-Timestamp": "yesterday", "X-Slack-Signature": "v0=00"},
                            "an X-Slack-Request-Timestamp that is not a number"),
    "negative-timestamp": ({"X-Slack-Request-Timestamp": "-5", "X-Slack-Signature": "v0=00"},
                           "an X-Slack-Request-Timestamp that is not a number"),
    "float-timestamp": ({"X-Slack-Request-Timestamp": "1700000000.5", "X-Slack-Signature": "v0=00"},
                        "an X-Slack-Request-Timestamp that is not a number"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_signature_headers_get_401_and_one_warning_without_a_traceback(fresh_process, case):
    process = fresh_process
    headers, reason = MALFORMED[case]
    offset = _log_size(process)
    response = httpx.post(process.url, content=b'{"type": "event_callback"', timeout=10,
                          headers={"Content-Type": "application/json", **headers})
    assert response.status_code == 401
    assert response.json() == {"error": "invalid request"}
    logged = _log_after(process, offset)
    assert "Traceback" not in logged
    warnings = [line for line in logged.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, logged
    assert warnings[0].endswith(f"refused a request to /slack/events from 127.0.0.1: {reason}")
    assert " ERROR " not in logged


def test_an_unsigned_body_that_is_not_json_gets_401_without_a_traceback(fresh_process):
    process = fresh_process
    offset = _log_size(process)
    stamp = str(int(time.time()))
    response = httpx.post(process.url, content=b"\xff\xfe{not json", timeout=10, headers={
        "Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=beef"})
    assert response.status_code == 401
    logged = _log_after(process, offset)
    assert "Traceback" not in logged and " ERROR " not in logged
    [warning] = [line for line in logged.splitlines() if " WARNING " in line]
    assert warning.endswith("a signature that does not match (SLACK_SIGNING_SECRET, or not from Slack)")


def _signed_event(text: str) -> tuple[bytes, dict[str, str]]:
    body = {
        "type": "event_callback", "team_id": "T0TEAM", "api_app_id": "A0APP", "event_id": f"Ev{time.time_ns()}",
        "event": {"type": "message", "channel": "C0GENERAL", "user": "U0USER", "text": text, "ts": "1700000000.1"},
    }
    content = json.dumps(body).encode()
    return content, {"Content-Type": "application/json", **sign(content, SIGNING_SECRET)}


def test_slacks_signed_requests_still_work_up_to_the_limit(process):
    # A slash command, as Slack sends it: answered by Bolt as before.
    form = urlencode({"command": "/clone", "text": "help", "team_id": "T0TEAM", "user_id": "U0USER",
                      "channel_id": "C0GENERAL", "trigger_id": f"{time.time_ns()}.help"}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(form, SIGNING_SECRET)}
    response = httpx.post(process.url, content=form, headers=headers, timeout=10)
    assert response.status_code == 200 and "/clone" in response.text
    # A signed event just under 1 MB gets through; one just over it is refused, signed or not.
    content, headers = _signed_event("a" * (MB - 400))
    assert MB - 1000 < len(content) <= MB
    assert httpx.post(process.url, content=content, headers=headers, timeout=10).status_code == 200
    content, headers = _signed_event("a" * (MB + 10))
    assert len(content) > MB
    response = httpx.post(process.url, content=content, headers=headers, timeout=10)
    assert response.status_code == 413


def test_a_flood_of_unsigned_requests_logs_one_line_not_one_per_request(process):
    offset = _log_size(process)
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": str(int(time.time())),
               "X-Slack-Signature": "v0=beef"}
    with httpx.Client(timeout=10) as client:
        statuses = {client.post(process.url, content=b"{}", headers=headers).status_code for _ in range(200)}
    assert statuses == {401}
    logged = _log_after(process, offset)
    assert len([line for line in logged.splitlines() if " WARNING " in line]) <= 1, logged


def test_the_throttle_says_how_many_lines_it_held_back(caplog):
    now = [100.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    logger = logging.getLogger("test.throttle")
    caplog.set_level(logging.WARNING, logger="test.throttle")
    for step in (0.0, 1.0, 1.0, 1.0, 8.0, 0.5):
        now[0] += step
        throttle.warning(logger, "bad", "refused: %s", "bad signature")
    assert [r.getMessage() for r in caplog.records] == [
        "refused: bad signature",
        "refused: bad signature (and 3 more like it in the last 11 s, not logged)",
    ]
