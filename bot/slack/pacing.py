"""Pacing for Slack calls: token buckets per (kind, scope), as Slack's limits are per channel or per workspace.

Written here rather than taken from a library: the sender needs a non-blocking "when may this go?" answer per
key (to skip a throttled channel and send another one's message), plus Retry-After penalties; the rate-limit
libraries on PyPI (limits, aiolimiter) answer "wait" or "no", not "when".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """`per_second` on average, with up to `burst` calls at once."""

    per_second: float
    burst: float = 1.0


# Slack: chat.postMessage about 1 a second per channel, short bursts tolerated. chat.update and reactions.* are
# Tier 3 (50+ a minute per workspace, bursts allowed): not paced ahead, but a 429 blocks that kind of call for the
# workspace for its Retry-After. None = unpaced.
SLACK_RATES: dict[str, Rate | None] = {
    # A shade under 1/s: at exactly 1/s, network jitter makes Slack count two posts inside one second (a 429).
    "post": Rate(0.95, 3),
    "update": None,
    "react": None,
}


class Pacer:
    """Token buckets keyed by any hashable; `delay(key)` is how long until one call may go, `take(key)` spends it."""

    def __init__(self, rates: dict[str, Rate | None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.rates = dict(SLACK_RATES if rates is None else rates)
        self.clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (tokens, at)
        self._blocked: dict[tuple[str, str], float] = {}  # key -> not before (Retry-After)

    def _tokens(self, key: tuple[str, str], now: float) -> float:
        rate = self.rates.get(key[0])
        assert rate is not None
        tokens, at = self._buckets.get(key, (rate.burst, now))
        return min(rate.burst, tokens + (now - at) * rate.per_second)

    def delay(self, kind: str, scope: str) -> float:
        """Seconds until a `kind` call in `scope` (a channel, a workspace) may be made; 0 = now."""
        key = (kind, scope)
        now = self.clock()
        blocked = max(0.0, self._blocked.get(key, 0.0) - now)
        rate = self.rates.get(kind)
        if rate is None:
            return blocked
        tokens = self._tokens(key, now)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / rate.per_second
        return max(blocked, wait)

    def take(self, kind: str, scope: str) -> None:
        """Spend one call."""
        key = (kind, scope)
        if self.rates.get(kind) is None:
            return
        now = self.clock()
        self._buckets[key] = (self._tokens(key, now) - 1, now)
        if len(self._buckets) > 10_000:
            self._forget(now)

    def block(self, kind: str, scope: str, seconds: float) -> None:
        """Slack said 429 with Retry-After: nothing of this kind goes to this scope for `seconds`."""
        key = (kind, scope)
        self._blocked[key] = max(self._blocked.get(key, 0.0), self.clock() + seconds)

    def _forget(self, now: float) -> None:
        # Full buckets carry no information: drop them so a long-running bot does not grow without end.
        full = [k for k in self._buckets if self._tokens(k, now) >= self.rates[k[0]].burst]  # type: ignore[union-attr]
        for key in full:
            del self._buckets[key]
        self._blocked = {k: t for k, t in self._blocked.items() if t > now}
