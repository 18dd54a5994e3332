"""Wake-ups between replicas: PostgreSQL LISTEN on a connection of its own, turned into calls on the event loop.

A NOTIFY is a hint, never the only way work is found: workers and the sender also look on a timer, so a
notification lost while the connection was down only costs that timer's delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from bot.store.sql import postgresql as pg_sql

log = logging.getLogger(__name__)


class Listener:
    """Calls `callbacks[channel]()` on the loop for every NOTIFY on that channel, LISTENing on connections from
    `connect` (a new one after each loss; PostgresDatabase.connect, which closes them with the database)."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], callbacks: dict[str, Callable[[], None]]):
        self.connect = connect
        self.callbacks = callbacks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listening = threading.Event()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="postgres-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            conn = None
            try:
                conn = self.connect()
                for channel in self.callbacks:
                    conn.execute(pg_sql.listen(channel))
                self.listening.set()
                delay = 0.5
                # Anything may have happened while we were not listening: look once.
                self._deliver(set(self.callbacks))
                while not self._stop.is_set():
                    channels = {n.channel for n in conn.notifies(timeout=0.5, stop_after=64)}
                    if channels:
                        self._deliver(channels)
            except Exception as exc:  # noqa: BLE001 - the server went away: listen again after a pause
                self.listening.clear()
                if not self._stop.is_set():
                    log.warning("lost the PostgreSQL notification connection (%s); reconnecting",
                                type(exc).__name__)
                    self._stop.wait(delay)
                    delay = min(delay * 2, 10.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):  # already broken
                        conn.close()

    def _deliver(self, channels: set[str]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for channel in channels:
            callback = self.callbacks.get(channel)
            if callback is not None:
                try:
                    loop.call_soon_threadsafe(callback)
                except RuntimeError:  # the loop closed while we were delivering
                    return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
