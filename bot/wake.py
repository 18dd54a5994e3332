"""A wake-up call between the code that stores work and the loops that sleep until work may be due.

Created first and handed to both sides, so neither needs the other: the outbox rings the sender's, the job queue the
workers'. A ring is a hint only; the loops also look on a timer.
"""

from __future__ import annotations

import asyncio


class Wakeup:
    """`ring()` wakes every loop sleeping on it.

    A loop takes `waiter()` *before* it looks for work and then sleeps on that: a ring while it was looking is not
    lost, and one sleeper never swallows another's ring (clearing one shared asyncio.Event would).
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        """Something may be due: every sleeper looks now."""
        self._event.set()
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        """What to sleep on after looking: set by the next ring()."""
        return self._event
