"""A fresh PostgreSQL database per test on the machine's server (127.0.0.1:5432, user postgres, trust auth).

TEST_POSTGRES_URL points elsewhere (a server URL whose database is used only to create and drop others).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest

SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin():
    import psycopg

    return psycopg.connect(SERVER, autocommit=True, connect_timeout=5)


@contextlib.contextmanager
def fresh_database(prefix: str = "vcb_test") -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (and any connection a killed bot left) afterwards."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        admin = _admin()
    except psycopg.OperationalError as exc:
        # Like Redis (tests/test_ratelimit_redis.py): every session and CI run has it, so its absence fails loudly
        # rather than letting the multi-replica tests pass by not running.
        pytest.fail(f"PostgreSQL is required for these tests (TEST_POSTGRES_URL or {SERVER}): cannot reach it: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = SERVER.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
