"""The one backoff (bot.retry): its delays written out as literals, and the retry loop's counts and errors."""

from __future__ import annotations

import logging

import pytest

from bot.errors import ApiError
from bot.retry import backoff_delay, jittered_delay, retrying
from bot.serve import CONNECT_BACKOFF_BASE, CONNECT_BACKOFF_MAX, CONNECT_RETRIES
from bot.tencent.limiter import SlidingWindowLimiter
from bot.tencent.voiceclone import with_retries

# -- the delays (a pure function) ----------------------------------------------------------------------------


def ceilings(base: float, cap: float, retries: int) -> list[float]:
    return [backoff_delay(n, base=base, cap=cap, draw=1.0) for n in range(1, retries + 1)]


def test_the_ceiling_doubles_from_base_up_to_the_cap() -> None:
    # The TRTC clients' defaults (backoff_base=0.5, backoff_max=8.0).
    assert ceilings(0.5, 8.0, 7) == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    # The job runner: 2 s, doubling, up to max_backoff (300 s by default).
    assert ceilings(2.0, 300.0, 10) == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    # The outbox sender: 1 s, doubling, up to max_backoff (60 s by default).
    assert ceilings(1.0, 60.0, 8) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_start_up_waits_half_a_second_then_one_then_two() -> None:
    assert CONNECT_RETRIES == 3
    assert ceilings(CONNECT_BACKOFF_BASE, CONNECT_BACKOFF_MAX, CONNECT_RETRIES) == [0.5, 1.0, 2.0]


def test_the_draw_picks_between_half_the_ceiling_and_all_of_it() -> None:
    assert backoff_delay(1, base=0.5, cap=8.0, draw=0.0) == 0.25
    assert backoff_delay(3, base=0.5, cap=8.0, draw=0.0) == 1.0
    assert backoff_delay(3, base=0.5, cap=8.0, draw=0.5) == 1.5
    assert backoff_delay(3, base=0.5, cap=8.0, draw=1.0) == 2.0
    assert backoff_delay(20, base=1.0, cap=60.0, draw=0.0) == 30.0
    assert backoff_delay(20, base=1.0, cap=60.0, draw=1.0) == 60.0


def test_a_huge_retry_number_is_the_cap_not_an_overflow() -> None:
    assert backoff_delay(5000, base=1.0, cap=60.0, draw=1.0) == 60.0
    assert backoff_delay(5000, base=2.0, cap=300.0, draw=0.0) == 150.0


@pytest.mark.parametrize("retry, draw", [(0, 0.5), (-1, 0.5), (1, -0.1), (1, 1.5)])
def test_nonsense_is_refused(retry: int, draw: float) -> None:
    with pytest.raises(ValueError):
        backoff_delay(retry, base=1.0, cap=60.0, draw=draw)


def test_jittered_delay_draws_from_its_rng() -> None:
    assert jittered_delay(4, base=1.0, cap=60.0, rng=lambda: 0.0) == 4.0
    assert jittered_delay(4, base=1.0, cap=60.0, rng=lambda: 1.0) == 8.0
    for _ in range(200):
        assert 4.0 <= jittered_delay(4, base=1.0, cap=60.0) <= 8.0


# -- the loop ------------------------------------------------------------------------------------------------


class Failing:
    """Fails with `errors` in turn, then answers "ok"."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_retries_until_an_answer_announcing_each_retry() -> None:
    call = Failing(OSError("a"), OSError("b"))
    announced: list[tuple[int, str, float]] = []
    result = await retrying(
        call, attempts=4, delay=lambda n: n / 1000, retry_on=lambda e: isinstance(e, OSError),
        on_retry=lambda n, e, s: announced.append((n, str(e), s)),
    )
    assert result == "ok" and call.calls == 3
    assert announced == [(1, "a", 0.001), (2, "b", 0.002)]


async def test_the_last_attempts_error_is_raised_as_it_is() -> None:
    call = Failing(*(OSError(f"failure {n}") for n in range(1, 11)))
    with pytest.raises(OSError) as caught:
        await retrying(call, attempts=4, delay=lambda n: 0.0, retry_on=lambda e: True)
    assert call.calls == 4
    assert str(caught.value) == "failure 4"
    assert caught.value.__context__ is None and caught.value.__cause__ is None


async def test_an_error_not_to_retry_is_raised_at_once() -> None:
    call = Failing(ValueError("refused"))
    with pytest.raises(ValueError):
        await retrying(call, attempts=4, delay=lambda n: 0.0, retry_on=lambda e: isinstance(e, OSError))
    assert call.calls == 1


async def test_one_attempt_means_no_retry() -> None:
    call = Failing(OSError("down"))
    with pytest.raises(OSError):
        await retrying(call, attempts=1, delay=lambda n: 0.0, retry_on=lambda e: True)
    assert call.calls == 1
    with pytest.raises(ValueError):
        await retrying(call, attempts=0, delay=lambda n: 0.0, retry_on=lambda e: True)


# -- the TRTC clients' retries -------------------------------------------------------------------------------


async def test_trtc_retries_wait_within_backoff_base_and_backoff_max(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.tencent.voiceclone")
    call = Failing(*(ApiError("InternalError", "busy", f"req-{n}") for n in range(10)))
    with pytest.raises(ApiError) as caught:
        await with_retries(
            "VoiceClone", SlidingWindowLimiter(100, 1.0), call, max_attempts=4, backoff_base=0.01, backoff_max=0.02
        )
    assert call.calls == 4 and caught.value.request_id == "req-3"
    retries = [r.args for r in caplog.records if r.name == "bot.tencent.voiceclone"]
    assert [(a[1], a[2], a[3], a[4]) for a in retries] == [
        (1, 4, "InternalError", "req-0"), (2, 4, "InternalError", "req-1"), (3, 4, "InternalError", "req-2")
    ]
    waits = [a[5] for a in retries]
    # Ceilings 0.01, 0.02 (capped), 0.02: each wait is between half of it and all of it.
    assert 0.005 <= waits[0] <= 0.01 and 0.01 <= waits[1] <= 0.02 and 0.01 <= waits[2] <= 0.02


async def test_trtc_refusals_are_not_retried() -> None:
    call = Failing(ApiError("InvalidParameter", "no"))
    with pytest.raises(ApiError):
        await with_retries("VoiceClone", SlidingWindowLimiter(100, 1.0), call, max_attempts=4)
    assert call.calls == 1
