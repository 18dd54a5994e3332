"""The load generator: many signed Slack requests at once, sent from a process of its own.

A separate process keeps the client's own CPU work (and GIL) out of the stand-ins' threads, so a slow
client does not pass for a slow bot. aiohttp rather than httpx: its client costs a fraction of the CPU per
request, which matters when 200 requests leave within milliseconds.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import aiohttp

Request = tuple[bytes, dict[str, str]]


@dataclass(frozen=True)
class Sent:
    """One request as the client saw it."""

    wall: float  # time.time() just before sending
    mono: float  # time.monotonic() at the same moment (one clock for every process on Linux)
    seconds: float  # until the whole response was read
    status: int  # HTTP status; 0 when the connection failed or timed out


async def _send_all(url: str, requests: list[Request], timeout: float) -> list[Sent]:
    connector = aiohttp.TCPConnector(limit=max(1, len(requests)))
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        go = asyncio.Event()

        async def one(body: bytes, headers: dict[str, str]) -> Sent:
            await go.wait()
            wall, mono = time.time(), time.monotonic()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            return Sent(wall, mono, time.monotonic() - mono, status)

        tasks = [asyncio.create_task(one(body, headers)) for body, headers in requests]
        await asyncio.sleep(0)  # every task now waits on `go`: they start together
        go.set()
        return list(await asyncio.gather(*tasks))


def send_burst(url: str, requests: list[Request], timeout: float = 30.0) -> list[Sent]:
    """POST every request at once (one connection each); results in request order."""
    return asyncio.run(_send_all(url, requests, timeout))


def _ready() -> bool:
    return True


def send_burst_from_child(url: str, requests: list[Request], timeout: float = 30.0) -> list[Sent]:
    """send_burst run in a fresh process, started and warmed up before the burst."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_ready).result()  # imports done before the clock starts
        return pool.submit(send_burst, url, requests, timeout).result()


# -- the floor: what the load generator and uvicorn alone take ----------------------------------------------


async def _empty_200(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def,type-arg]
    """An ASGI app that reads the request and answers an empty 200: no Bolt, no signature check, no database."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b""})


def _serve_empty(port: int) -> None:
    import uvicorn

    # uvicorn configured as bot.serve configures it for the bot (loop and HTTP parser "auto": uvloop, httptools).
    config = uvicorn.Config(
        _empty_200, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False, backlog=2048
    )
    uvicorn.Server(config).run()


def ack_floor(shares: int, body_bytes: int, runs: int = 3, timeout: float = 30.0) -> list[list[float]]:
    """Item 9's floor: `runs` bursts of `shares` POSTs of `body_bytes` each, from the same load generator, to a
    uvicorn process answering an empty 200 at once; per run, each request's seconds until its response was read."""
    import socket

    from bot.testing.driver import free_port

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve_empty, args=(port,), daemon=True)
    server.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or not server.is_alive():
                    raise RuntimeError("the floor server did not start") from None
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/slack/events"
        body = b'{"type":"event_callback","pad":"' + b"x" * max(0, body_bytes - 40) + b'"}'
        requests = [(body, {"Content-Type": "application/json"})] * shares
        out = []
        for _ in range(runs + 1):  # the first run warms the server and the connection path up: not counted
            sent = send_burst_from_child(url, requests, timeout)
            if any(s.status != 200 for s in sent):
                raise RuntimeError(f"the floor server did not answer every request: {sorted({s.status for s in sent})}")
            out.append([s.seconds for s in sent])
        return out[1:]
    finally:
        server.kill()
        server.join(5)
