"""Shared fixtures, each defined once: test audio (`media`), the running bot against the Slack and TRTC stand-ins
(`running_bot`, and `bot` for one test), the stand-ins on their own (`standins`), a PostgreSQL database
(`postgres_url`). The helpers they are built on live in tests/support/."""

from __future__ import annotations

import logging

import pytest
from support.driving import standins as start_standins
from support.harness import BotHarness
from support.media import MediaCache


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
    from support.postgres import fresh_database

    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def running_bot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The real bot serving HTTP against the Slack and TRTC stand-ins, one per test module (starting one takes
    about a second). A module sets it up with BOT_ENV (settings over the harness's defaults: CONSENT=attested,
    PREVIEW=off) and BOT_OPTIONS (BotHarness's own knobs, such as max_backoff)."""
    module = request.module
    folder = tmp_path_factory.mktemp(module.__name__.rsplit(".", 1)[-1])
    env = dict(getattr(module, "BOT_ENV", {}))
    with BotHarness(folder, extra_env=env, **getattr(module, "BOT_OPTIONS", {})) as harness:
        yield harness


@pytest.fixture
def bot(running_bot: BotHarness):
    """The module's running bot, with what its stand-ins recorded and were scripted to do cleared for this test;
    afterwards every job the test left is finished and answered before the next test starts."""
    running_bot.slack.reset()
    running_bot.trtc.reset()
    yield running_bot
    running_bot.drain()


@pytest.fixture
def standins():
    """A Slack stand-in and a TRTC stand-in, running, with the harness's credentials (for a bot of the test's own)."""
    with start_standins() as pair:
        yield pair
