"""What the stores see of a database, whichever it is: a `Database` running functions of a `Connection` on its own
threads, and the connection running its dialect's named statements (bot.store.sql). The implementations are
bot.store.database (SQLite, and choosing one from DATABASE_URL) and bot.store.postgres; both write a burst's small
writes together through `GroupCommit`.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

from bot.store.sql import Command, Dialect, Params, Query, Table

T = TypeVar("T")
R = TypeVar("R")

# A plain dict (sqlite3 takes no other mapping), typed read-only so nobody fills the shared default.
NO_PARAMS: Params = {}
# One write of a batch and what it returned or raised.
Outcome = tuple[bool, Any]
Write = Callable[["Connection"], Any]


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
        later statement of the transaction reads back. In a batch on PostgreSQL such writes of one statement go to
        the server together at the batch's end instead of one round trip each; else (and on SQLite) now."""
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

    def run_batch(self, batch: list[Write]) -> list[Outcome]:
        """Every write of `batch` in one transaction; if any fails, each again on its own so only it fails."""
        if len(batch) == 1:
            try:
                return [(True, batch[0](self))]
            except Exception as exc:  # noqa: BLE001 - handed to the caller's future
                return [(False, exc)]
        results: list[Outcome] = []
        try:
            with self.transaction():
                self._batch_began()
                self.batched = True
                for fn in batch:
                    results.append((True, fn(self)))
                self.batched = False
                self._batch_written()
            return results
        except Exception:  # noqa: BLE001, S110 - rolled back: retried one by one below
            pass
        finally:
            # Whatever ended the batch (a BaseException too), nothing it deferred may outlive it on this connection.
            self.batched = False
            self._batch_ended()
        results = []
        for fn in batch:
            try:
                results.append((True, fn(self)))
            except Exception as exc:  # noqa: BLE001 - handed to the caller's future
                results.append((False, exc))
        return results

    def _batch_began(self) -> None:  # noqa: B027 - a hook; SQLite defers nothing
        """A batch's transaction is open: what the connection defers to its end starts here."""

    def _batch_written(self) -> None:  # noqa: B027 - a hook; SQLite defers nothing
        """Every write of the batch ran: send what was deferred (still inside its transaction)."""

    def _batch_ended(self) -> None:  # noqa: B027 - a hook; SQLite defers nothing
        """The batch committed, or failed and was rolled back: forget anything still deferred."""


class GroupCommit:
    """Writes made in the same turn of the event loop, or while the batch before them was being written, share one
    transaction and one trip to the database's thread (Connection.run_batch). In a burst of Slack requests each
    acknowledgement otherwise paid for its own BEGIN/COMMIT and thread hand-off, and those, not the database, were
    most of its time; the thread hand-offs cost most while the event loop is busy parsing the rest of the burst (the
    database thread waits for the GIL at each one). Batches go one at a time through `executor`, where
    `call(fn)` runs fn(connection) on that thread's connection."""

    def __init__(self, executor: Executor, call: Callable[[Callable[[Connection], list[Outcome]]], list[Outcome]]):
        self.executor = executor
        self.call = call
        self._batch: list[tuple[Write, asyncio.Future[Any]]] = []
        # The event loop whose batch is being written (None: none is); the next batch waits for it.
        self._writing: asyncio.AbstractEventLoop | None = None

    async def run(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._batch.append((fn, future))
        writing = self._writing
        if len(self._batch) == 1 and (writing is None or writing is not loop or writing.is_closed()):
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        self._writing = loop
        writes = [fn for fn, _ in batch]
        try:
            done = loop.run_in_executor(self.executor, self.call, lambda conn: conn.run_batch(writes))
        except RuntimeError as exc:  # the database was closed (its executor shut down): fail these, not hang
            self._writing = None
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return

        def deliver(outcome: asyncio.Future[list[Outcome]]) -> None:
            if outcome.cancelled() or outcome.exception() is not None:
                error = outcome.exception() if not outcome.cancelled() else asyncio.CancelledError()
                results: list[Outcome] = [(False, error)] * len(batch)
            else:
                results = outcome.result()
            try:
                for (_, future), (ok, value) in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
            finally:
                self._writing = None
                # What gathered meanwhile is the next batch.
                self._flush(loop)

        done.add_done_callback(deliver)


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
