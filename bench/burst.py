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
