"""Shared fixtures. Test audio: `media`, a session-wide cache of generated files (see tests/media.py)."""

from __future__ import annotations

import logging

import pytest
from media import MediaCache


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaCache:
    """Test media built once per session: `media.speech(15, ".m4a", "-c:a", "aac")`, `media.get(...)`."""
    return MediaCache(tmp_path_factory.mktemp("media"))


@pytest.fixture(autouse=True)
def _root_log_level():
    """In-process CLI runs configure logging (the `clone` command sets ERROR): give the next test the level back."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.fixture
def postgres_url():
    """The URL of an empty PostgreSQL database made for this test (dropped after it)."""
    from pg import fresh_database

    with fresh_database() as url:
        yield url
