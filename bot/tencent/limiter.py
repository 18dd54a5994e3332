"""A strict sliding-window rate limiter for asyncio: at most N calls in any window of T seconds."""

from __future__ import annotations

import asyncio
import contextlib
import math
from types import TracebackType


class SlidingWindowLimiter:
    """Never more than `max_calls` calls in any window of `period` seconds; waiters are served FIFO.

    `await acquire()` counts a call from the moment it starts. `async with limiter:` also keeps the call's
    place while it runs and counts it for `period` after it ends: a server counts requests when they
    arrive, which is after we start them (by network and queueing delays we cannot bound), but never after
    we get the answer, so a server counting arrivals never sees more than max_calls in a window. It also
    caps concurrency at max_calls.

    Hand-written because aiolimiter's leaky bucket lets a full bucket drain and refill inside one second,
    so right after a burst it admits about twice the rate in a 1 s window.
    """

    def __init__(self, max_calls: int, period: float):
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        if period <= 0:
            raise ValueError("period must be greater than zero")
        self.max_calls = max_calls
        self.period = period
        # When each counted call stops counting; math.inf while a call made with `async with` runs.
        self._free_at: list[float] = []
        # asyncio.Lock hands itself to waiters in arrival order, which makes the limiter FIFO-fair.
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()

    async def acquire(self) -> None:
        """Wait until a call may start; it counts for `period` from now."""
        await self._take(held=False)

    async def _take(self, held: bool) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:
            while True:
                now = loop.time()
                self._free_at = [at for at in self._free_at if at > now]
                if len(self._free_at) < self.max_calls:
                    self._free_at.append(math.inf if held else now + self.period)
                    return
                soonest = min(self._free_at)
                self._released.clear()
                # Wake when the oldest call leaves the window, or when a running call ends.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if soonest == math.inf else soonest - now):
                        await self._released.wait()

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        # Running calls are interchangeable here: any one of their places now counts from this moment.
        self._free_at.remove(math.inf)
        self._free_at.append(loop.time() + self.period)
        self._released.set()

    async def __aenter__(self) -> SlidingWindowLimiter:
        await self._take(held=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()
