"""A wake-up call between the code that stores work and the loops that sleep until work may be due.

Created first and handed to both sides, so neither needs the other: the outbox rings the sender's, the job queue the
workers'. A ring is a hint only; the loops also look on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    """`ring()` wakes every loop sleeping on it; `ring(n)` only the n that have waited longest.

    A loop takes `waiter()` *before* it looks for work and then sleeps on that: a ring while it was looking is not
    lost (its event is set, so it looks again instead of sleeping), and one sleeper never swallows another's ring.
    A loop that found work calls `forget(waiter)`, so that a later `ring(n)` goes to loops that may sleep on theirs.

    Why `ring(n)`: eight idle workers all looking for the one job a share adds cost fifteen database round trips
    that find nothing (a third of a memo's own CPU in the bot). Waking one is enough when the woken one, on finding
    work, rings the next (WorkerPool._work): work is passed along for as long as there is some.
    """

    def __init__(self) -> None:
        # Insertion order is waiting order; a dict so that forget() is O(1).
        self._waiting: dict[asyncio.Event, None] = {}

    def ring(self, n: int | None = None) -> None:
        """Something may be due: every waiter looks now, or the `n` that have waited longest."""
        if n is None:
            woken, self._waiting = list(self._waiting), {}
        else:
            woken = list(self._waiting)[:n]
            for event in woken:
                del self._waiting[event]
        for event in woken:
            event.set()

    def waiter(self) -> asyncio.Event:
        """What to sleep on after looking: set by a later ring() that reaches it."""
        event = asyncio.Event()
        self._waiting[event] = None
        return event

    def forget(self, event: asyncio.Event) -> None:
        """The loop will not sleep on `event` (it found work, or its wait ended): rings go to the others."""
        self._waiting.pop(event, None)

    async def sleep(self, event: asyncio.Event, seconds: float) -> None:
        """Sleep on `event` (from waiter()) until a ring reaches it or `seconds` pass; then it is forgotten.

        Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives as the wait ends, and a loop
        that misses its cancellation never stops (seen in tests)."""
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await event.wait()
        finally:
            self.forget(event)
