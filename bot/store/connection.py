"""What the stores see of a database, whichever it is: a `Database` running functions of a `Connection` on its own
threads, and the connection running its dialect's named statements (bot.store.sql). The implementations are
bot.store.database (SQLite, and choosing one from DATABASE_URL) and bot.store.postgres.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from bot.store.sql import Command, Dialect, Params, Query, Table

T = TypeVar("T")
R = TypeVar("R")

# A plain dict (sqlite3 takes no other mapping), typed read-only so nobody fills the shared default.
NO_PARAMS: Params = {}


class DatabaseUnavailable(Exception):
    """The database cannot be opened or its tables made: one line naming it (no password) and what to check."""


class Connection(ABC):
    """One connection as the stores use it, only ever on the database's own thread."""

    sql: Dialect
    # Whether the open transaction is a batch of several writes (PostgreSQL's group commit): what one of them reads
    # may be worth keeping in cache() for the others.
    batched: bool = False

    @abstractmethod
    def one(self, query: Query[R], params: Params = NO_PARAMS) -> R | None:
        """The first row of `query`, or None."""

    @abstractmethod
    def all(self, query: Query[R], params: Params = NO_PARAMS) -> list[R]:
        """Every row of `query`."""

    @abstractmethod
    def run(self, command: Command, params: Params = NO_PARAMS) -> int:
        """Run `command`; return how many rows it touched."""

    def run_later(self, command: Command, params: Params = NO_PARAMS) -> None:
        """Run `command` before the open transaction commits, for a write whose row count nobody reads and that no
        later statement of the transaction reads back. In a batch (PostgreSQL's group commit) such writes of one
        statement go to the server together at the batch's end instead of one round trip each; else now."""
        self.run(command, params)

    @abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Commit the block's statements together (rolled back on an exception). Inside a transaction already (a
        caller's, or a batch's on PostgreSQL), the block joins it: the outer one decides."""

    @abstractmethod
    def notify(self, channel: str) -> None:
        """Tell other processes `channel` has news once this commits (one process: nothing to tell)."""

    @abstractmethod
    def cache(self) -> dict[Any, Any]:
        """A dict for what a caller read in the current transaction and may reuse until it ends (in a batch, one
        write's reads serve the next ones); emptied when the transaction ends; outside one, a new empty dict."""

    @abstractmethod
    def hold_lock(self, key: int) -> None:
        """In a transaction: hold lock `key` until it ends, so that transactions on other connections (and replicas)
        taking the same key go one at a time. Asking again in the same transaction costs nothing."""


class Listener(Protocol):
    """Calls back on the event loop when another process notifies a channel (bot.store.wakeup)."""

    def start(self) -> None:
        """Start listening (call on the event loop that is to get the calls)."""
        ...

    def stop(self) -> None:
        """Stop listening and close its connection."""
        ...


class LeaderLock(Protocol):
    """A lock held by at most one process; blocking calls, made from one thread."""

    def held(self, leading: bool) -> bool:
        """True while this process holds it (taking it when free); `leading`: it believed it held it."""
        ...

    def close(self) -> None:
        """Let go at once (the next process may take it)."""
        ...


class Database(ABC):
    """Where the stores' tables live; see the module docstring."""

    sql: Dialect
    # Whether other processes may use this database at the same time (replicas).
    shared: bool

    @abstractmethod
    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run fn(connection) on the database's thread."""

    @abstractmethod
    def call(self, fn: Callable[[Connection], T]) -> T:
        """run(fn), blocking for the answer (start-up, tools: no event loop)."""

    async def run_batched(self, fn: Callable[[Connection], T]) -> T:
        """run(fn), for a small write that may share one transaction with others made at the same time."""
        return await self.run(fn)

    @abstractmethod
    def create(self, table: Table) -> None:
        """Make `table` (and the columns an older database lacks); idempotent, safe for replicas starting at once."""

    @abstractmethod
    async def notify(self, channel: str) -> None:
        """Tell other processes `channel` has news (outside a write)."""

    def listener(self, callbacks: dict[str, Callable[[], None]]) -> Listener | None:
        """Something calling `callbacks[channel]()` on the event loop when another process notifies `channel`;
        None when no other process can write here."""
        return None

    def leader_lock(self, key: int) -> LeaderLock | None:
        """The lock electing one leader among the processes sharing this database; None when this process is the
        only one there can be (it always leads)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Close every connection and thread."""
