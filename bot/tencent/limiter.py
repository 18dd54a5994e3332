"""A strict sliding-window rate limiter for asyncio (at most N calls in any window of T seconds), and one such
limit per TRTC action (PerActionLimiter)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol


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


class RateLimiter(Protocol):
    """What the TRTC clients need of a limiter: SlidingWindowLimiter, or its Redis twin (bot.tencent.redis_limiter)."""

    async def acquire(self) -> None: ...

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class PerActionLimiter:
    """One limit per TRTC action (VoiceClone, TextToSpeech...), each counted in its own window.

    Tencent Cloud API frequency limits count each action separately (VoiceClone 20/s, TextToSpeech 20/s): one
    window for both would let previews take half of the clones' rate. `make(action)` builds an action's limiter
    the first time that action is called; `close` (if given) releases what they share (a Redis connection pool).
    """

    def __init__(self, make: Callable[[str], RateLimiter], *, close: Callable[[], Awaitable[None]] | None = None):
        self._make = make
        self._close = close
        self._limiters: dict[str, RateLimiter] = {}

    @classmethod
    def in_process(cls, max_calls: int, period: float) -> PerActionLimiter:
        """A SlidingWindowLimiter(max_calls, period) per action, counted in this process."""
        SlidingWindowLimiter(max_calls, period)  # the arguments are checked now, not at the first call
        return cls(lambda _action: SlidingWindowLimiter(max_calls, period))

    def for_action(self, action: str) -> RateLimiter:
        """The limiter of `action` (the same one for every call of that action)."""
        limiter = self._limiters.get(action)
        if limiter is None:
            limiter = self._limiters[action] = self._make(action)
        return limiter

    @property
    def limiters(self) -> dict[str, RateLimiter]:
        """The limiters made so far, by action (a copy)."""
        return dict(self._limiters)

    async def aclose(self) -> None:
        """Release what the limiters share (nothing in process)."""
        if self._close is not None:
            await self._close()


def limiter_for(limiter: RateLimiter | PerActionLimiter, action: str) -> RateLimiter:
    """The limiter a call of `action` goes through: its own window from a PerActionLimiter; a single limiter is
    one window for every action (what a caller passing one asked for)."""
    return limiter.for_action(action) if isinstance(limiter, PerActionLimiter) else limiter
