"""New messages in one channel are spaced out; other channels are not held up."""

from __future__ import annotations

import time

from bot.worker import ChannelPacer


async def test_same_channel_waits_other_channels_do_not():
    pacer = ChannelPacer(interval=0.2)
    start = time.monotonic()
    await pacer.wait("C1")
    await pacer.wait("C2")
    assert time.monotonic() - start < 0.1
    await pacer.wait("C1")
    assert time.monotonic() - start >= 0.19


async def test_forgets_channels_whose_slot_has_passed():
    pacer = ChannelPacer(interval=0.0)
    for n in range(1500):
        await pacer.wait(f"C{n}")
    assert len(pacer._next) <= 1001
