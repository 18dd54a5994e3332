"""The sliding-window limiter of bot.tencent.limiter, shared by every process through Redis (REDIS_URL).

Tencent's 20 requests a second is a limit per account and per action, not per process: with several replicas each
one's in-process limiter would let 20 through, together 20 x replicas. This one keeps the count in a Redis sorted
set; `per_action_from_url` gives each action its own set (`voiceclone-bot:trtc-calls:VoiceClone`, ...).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from types import TracebackType

from redis.asyncio import Redis

from bot.tencent.limiter import PerActionLimiter

log = logging.getLogger(__name__)

# The sorted set every replica counts in; per action, this and ":<Action>" (action_key). One per Redis, on purpose:
# the cap is per Tencent account, and two bots on different accounts sharing a Redis only share a cap (the safe
# direction); give them their own REDIS_URL database (redis://host/1) to separate them.
DEFAULT_KEY = "voiceclone-bot:trtc-calls"


def action_key(action: str, prefix: str = DEFAULT_KEY) -> str:
    """The sorted set one TRTC action's calls are counted in: voiceclone-bot:trtc-calls:VoiceClone."""
    return f"{prefix}:{action}"

# Written here rather than taken from `limits` (its moving-window strategy on Redis): `limits` counts a hit at the
# moment it is taken and cannot keep a running call's place until it ends, then count it for `period` after, which
# is the guarantee our in-process limiter gives (a server counting arrivals never sees more than max_calls in a
# window). The scripts are the usual sorted-set sliding window, plus held entries with an expiry.
#
# One member per counted call; its score is when it stops counting, in microseconds of the Redis server's clock
# (one clock for every replica). A call running under `async with` scores now + hold_ttl: if its process dies,
# the slot comes back after hold_ttl instead of never.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return -1
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(first[2]) - now
"""
# A held call ended: it now counts for `period` from this moment. 0 when its entry had already expired.
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > now then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""


def _check(max_calls: int, period: float, hold_ttl: float) -> None:
    if max_calls < 1:
        raise ValueError("max_calls must be at least 1")
    if period <= 0:
        raise ValueError("period must be greater than zero")
    if hold_ttl <= period:
        raise ValueError("hold_ttl must be longer than period")


class RedisSlidingWindowLimiter:
    """SlidingWindowLimiter's interface and guarantee, across every process using the same Redis key.

    Never more than `max_calls` calls counted in any window of `period` seconds; `async with` counts a call from
    its start until `period` after its end (and so caps concurrency at max_calls), `await acquire()` from its
    start. A held slot whose process died is freed `hold_ttl` seconds after the call began: set it above the
    longest a call can run (the TRTC timeout) plus `period`. Waiters in one process are served FIFO; across
    processes whoever asks first once a slot frees.
    """

    def __init__(
        self,
        redis: Redis,
        max_calls: int,
        period: float,
        *,
        key: str = DEFAULT_KEY,
        hold_ttl: float = 60.0,
        poll: float = 0.05,
    ):
        _check(max_calls, period, hold_ttl)
        self.redis = redis
        self.max_calls = max_calls
        self.period = period
        self.key = key
        self.hold_ttl = hold_ttl
        # While the oldest counted call is still running its end is unknown: ask again this often (a call ending in
        # this process wakes the waiters at once).
        self.poll = poll
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._release_script = redis.register_script(_RELEASE)
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()
        self._held: dict[asyncio.Task[object] | None, list[str]] = {}
        self._key_ttl_ms = int((hold_ttl + period) * 1000) + 1000

    @classmethod
    def from_url(cls, url: str, max_calls: int, period: float, **kwargs: object) -> RedisSlidingWindowLimiter:
        """A limiter with its own connection pool to `url` (closed by `aclose()`)."""
        return cls(Redis.from_url(url), max_calls, period, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def per_action_from_url(
        cls, url: str, max_calls: int, period: float, *, prefix: str = DEFAULT_KEY, hold_ttl: float = 60.0,
        poll: float = 0.05,
    ) -> PerActionLimiter:
        """One limiter per action, each `max_calls` in `period` under its own key (action_key(action, prefix)),
        all on one connection pool to `url` (closed by the PerActionLimiter's `aclose()`)."""
        _check(max_calls, period, hold_ttl)  # now, not at the first call
        redis = Redis.from_url(url)
        return PerActionLimiter(
            lambda action: cls(redis, max_calls, period, key=action_key(action, prefix), hold_ttl=hold_ttl, poll=poll),
            close=redis.aclose,
        )

    async def acquire(self) -> None:
        """Wait until a call may start; it counts for `period` from now."""
        await self._take(uuid.uuid4().hex, held=False)

    async def _take(self, token: str, held: bool) -> None:
        count_us = int((self.hold_ttl if held else self.period) * 1_000_000)
        async with self._lock:
            while True:
                try:
                    wait_us = await self._acquire_script(
                        keys=[self.key], args=[self.max_calls, token, count_us, self._key_ttl_ms]
                    )
                except asyncio.CancelledError:
                    # The script may have run without our hearing the answer: give the place back.
                    await asyncio.shield(self.redis.zrem(self.key, token))
                    raise
                if wait_us < 0:
                    return
                wait = wait_us / 1_000_000
                # Beyond `period` the oldest entry is a running call: it may end (and count from then) any moment.
                timeout = wait if wait <= self.period else self.poll
                self._released.clear()
                try:
                    async with asyncio.timeout(timeout):
                        await self._released.wait()
                except TimeoutError:
                    pass

    async def _release(self, token: str) -> None:
        period_us = int(self.period * 1_000_000)
        try:
            counted = await asyncio.shield(
                self._release_script(keys=[self.key], args=[token, period_us, self._key_ttl_ms])
            )
        except Exception:
            log.warning("could not release a rate-limit slot in Redis; it frees itself within %.0f s", self.hold_ttl,
                        exc_info=True)
            return
        finally:
            self._released.set()
        if not counted:
            log.warning("a rate-limited call ran longer than %.0f s (hold_ttl): raise it above TRTC_TIMEOUT",
                        self.hold_ttl)

    async def __aenter__(self) -> RedisSlidingWindowLimiter:
        token = uuid.uuid4().hex
        await self._take(token, held=True)
        self._held.setdefault(asyncio.current_task(), []).append(token)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = asyncio.current_task()
        tokens = self._held[task]
        token = tokens.pop()
        if not tokens:
            del self._held[task]
        await self._release(token)

    async def aclose(self) -> None:
        """Close the Redis connections."""
        await self.redis.aclose()
