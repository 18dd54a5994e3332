"""Turns at a channel's posting pace, fair between its lanes (a lane: a channel and the user its records serve).

Order is kept within a lane; between the lanes of a channel, the least recently served goes first, so one user's long
backlog never holds another user's answer back by more than a post or two (bot.slack.sender asks for the order).
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.store.outbox import Record

Lane = tuple[str, str | None]


class Lanes:
    """Turns at a channel's posting pace, fairly between its lanes: remembers when each lane last got a post slot."""

    def __init__(self, memory: int = 10_000):
        self.memory = memory
        self._served: dict[Lane, int] = {}  # lane -> the turn it last got a post slot at
        self._turn = 0

    def order(self, due: Iterable[Record]) -> list[Record]:
        """`due` (each lane's records in their order) in the order to try them: every lane's first record, then
        every lane's second, ...; within each round the least recently served lane first (a lane never served before
        any served one), ties by the oldest record."""
        rank: dict[Lane, int] = {}
        oldest: dict[Lane, int] = {}
        keyed: list[tuple[int, int, int, Record]] = []
        for record in due:
            lane = record.lane
            n = rank.get(lane, 0)
            rank[lane] = n + 1
            first = oldest.setdefault(lane, record.id)
            keyed.append((n, self._served.get(lane, 0), first, record))
        keyed.sort(key=lambda item: item[:3])
        return [item[3] for item in keyed]

    def served(self, lane: Lane) -> None:
        """`lane` got a post slot now: it goes after every lane that has waited longer."""
        self._turn += 1
        self._served[lane] = self._turn
        if len(self._served) > self.memory:
            # Forget the least recently served half: as never served they go first, where they nearly were anyway.
            recent = sorted(self._served.items(), key=lambda item: item[1])[len(self._served) // 2:]
            self._served = dict(recent)
