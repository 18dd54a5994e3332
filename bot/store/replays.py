"""Requests already taken: each command and interaction runs once, however often its signed request arrives.

A signed request stays valid for Slack's 5-minute window, so anyone who sees one (a proxy's log, a tap) could
send it again and again within it. Each command and interaction is remembered by a key (Slack's trigger_id, or a
hash of the signed body when it has none) in the shared database, so every replica knows it; a key is kept a
little longer than the window (clocks differ) and housekeeping sweeps the expired ones.
"""

from __future__ import annotations

import time

from bot.store.database import Database

# Slack's window is 5 minutes either side of the request's timestamp; a key outlives any request that could carry it.
KEEP_SECONDS = 600.0


class Replays:
    """The keys of the requests taken in the last KEEP_SECONDS (in the bot's database)."""

    def __init__(self, db: Database, keep_seconds: float = KEEP_SECONDS):
        self.db = db
        self.sql = db.sql.replays
        self.keep_seconds = keep_seconds
        db.create(self.sql.table)

    async def first(self, key: str, now: float | None = None) -> bool:
        """Remember `key`; True when no live sighting of it was stored before (this request is to run)."""
        now = time.time() if now is None else now
        params = {"key": key, "now": now, "until": now + self.keep_seconds}
        # On the acknowledgement path: one small write, sharing a transaction with others made at the same time.
        return await self.db.run_batched(lambda conn: conn.run(self.sql.first, params)) == 1

    async def sweep(self, now: float | None = None) -> int:
        """Forget the keys whose window has passed; how many."""
        params = {"now": time.time() if now is None else now}
        return await self.db.run(lambda conn: conn.run(self.sql.sweep, params))
