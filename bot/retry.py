"""The one backoff of the bot: how long to wait before a retry, and a loop that retries a call.

Every wait is "equal jitter" on a capped exponential: retry n waits between half and all of
min(cap, base * 2 ** (n - 1)). The fixed half means a retry never comes at once; the random half means the many
callers that failed together (an outage ends) do not all come back in the same instant.

Used by the job runner (a job waiting out Slack or Tencent), the outbox sender (Slack 5xx or unreachable; a 429
waits for Retry-After instead), the TRTC clients (transient ApiErrors, each attempt under the rate limiter) and
start-up (Slack unreachable; no jitter, one process).

Hand-written rather than tenacity: the runner and the sender do not loop, they store the next try's time in the
database, so what they need is the delay as a number; tenacity has no equal jitter (wait_random_exponential is
full jitter, wait_exponential_jitter adds 0..jitter seconds on top); and the loop is a dozen lines.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# 2.0 ** 1024 overflows; far below that any cap has long been reached.
_MAX_EXPONENT = 1000


def backoff_delay(retry: int, *, base: float, cap: float, draw: float) -> float:
    """Seconds to wait before retry number `retry` (1 = the first retry); a pure function.

    The ceiling is min(cap, base * 2 ** (retry - 1)); `draw` in [0, 1] picks the delay from [ceiling / 2, ceiling]
    (ceiling * (1 + draw) / 2): random.random() for jitter (see jittered_delay), 1.0 for exactly the ceiling.
    """
    if retry < 1:
        raise ValueError(f"retry must be at least 1, not {retry}")
    if not 0.0 <= draw <= 1.0:
        raise ValueError(f"draw must be in [0, 1], not {draw}")
    ceiling = min(cap, base * 2.0 ** min(retry - 1, _MAX_EXPONENT))
    return ceiling * (1.0 + draw) / 2.0


def jittered_delay(retry: int, *, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """backoff_delay with a random draw: uniform in [ceiling / 2, ceiling]."""
    return backoff_delay(retry, base=base, cap=cap, draw=rng())


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    delay: Callable[[int], float],
    retry_on: Callable[[Exception], bool],
    on_retry: Callable[[int, Exception, float], None] | None = None,
) -> T:
    """`await call()`, at most `attempts` times in all.

    After a failure `retry_on` accepts, retry n (1, 2, ...) comes `delay(n)` seconds later, announced first by
    `on_retry(n, error, seconds)` (to log it). Any other failure, and the last attempt's, is raised as it is.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    retry = 0
    while True:
        try:
            return await call()
        except Exception as error:
            retry += 1
            if retry >= attempts or not retry_on(error):
                raise
            seconds = delay(retry)
            if on_retry is not None:
                on_retry(retry, error, seconds)
        # Outside the except block: the next attempt's error does not carry this one as its __context__.
        await asyncio.sleep(seconds)
