"""Which token speaks for a workspace: SLACK_BOT_TOKEN (one workspace), or each workspace's installation (OAuth).

Everything that calls Slack outside a request (the outbox sender, downloads, files.info on the workers) asks
here with the job's team id, so a job is always served with the token of the workspace it came from.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiohttp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings

# (team_id) -> the workspace's bot token, or None when the app is not installed there.
TokenLookup = Callable[[str | None], Awaitable[str | None]]

# Calls the outbox makes: no retries of their own (the outbox retries), a short limit.
OUTBOX = "outbox"
# Calls the workers make (files.info): slack_sdk's retries are fine off the acknowledgement path.
WORKER = "worker"
# How long a looked-up token is trusted: an uninstall is also applied at once through forget().
TOKEN_CACHE_SECONDS = 60.0


def create_web_client(
    settings: Settings,
    session: aiohttp.ClientSession | None = None,
    *,
    token: str | None = None,
    anonymous: bool = False,
    retries: bool = True,
    timeout: float = 30,
) -> AsyncWebClient:
    """A Slack Web API client on SLACK_API_URL; `retries`: slack_sdk retries 429, 5xx and dropped connections.

    Its token: `token`, else SLACK_BOT_TOKEN; `anonymous`: none (each call, or Bolt for each request, gives one).
    """
    if anonymous:
        token = None
    elif token is None and settings.slack_bot_token:
        token = settings.slack_bot_token.get()
    return AsyncWebClient(
        token=token,
        base_url=settings.slack_api_url,
        # One session for every call: without it slack_sdk opens (and TLS-handshakes) a connection per call.
        session=session,
        timeout=int(timeout) if timeout >= 1 else 1,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=3),
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=3),
        ]
        if retries
        else [],
    )


class Workspaces:
    """Slack clients per workspace and purpose, over one HTTP session."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession, lookup: TokenLookup | None = None):
        self.settings = settings
        self.session = session
        self.lookup = lookup
        self._tokens: dict[str | None, tuple[str | None, float]] = {}
        self._clients: dict[tuple[str, str], AsyncWebClient] = {}

    @property
    def single(self) -> bool:
        """True in single-workspace mode (SLACK_BOT_TOKEN for every call)."""
        return self.lookup is None

    async def token(self, team_id: str | None) -> str | None:
        """The bot token for `team_id`; None when the app is not installed there (any more)."""
        if self.lookup is None:
            return self.settings.slack_bot_token.get() if self.settings.slack_bot_token else None
        cached = self._tokens.get(team_id)
        if cached is not None and time.monotonic() - cached[1] < TOKEN_CACHE_SECONDS:
            return cached[0]
        token = await self.lookup(team_id)
        self._tokens[team_id] = (token, time.monotonic())
        return token

    async def client(self, team_id: str | None, purpose: str = WORKER) -> AsyncWebClient | None:
        """A client holding `team_id`'s token, made for `purpose` (OUTBOX or WORKER); None when not installed."""
        token = await self.token(team_id)
        if token is None:
            return None
        key = (token, purpose)
        client = self._clients.get(key)
        if client is None:
            if purpose == OUTBOX:
                client = create_web_client(self.settings, self.session, token=token, retries=False, timeout=15)
            else:
                client = create_web_client(self.settings, self.session, token=token)
            if len(self._clients) > 1000:  # tokens rotate and workspaces leave: keep the cache bounded
                self._clients.clear()
            self._clients[key] = client
        return client

    def forget(self, team_id: str | None) -> None:
        """Drop what is cached for a workspace that uninstalled the app or revoked its tokens."""
        cached = self._tokens.pop(team_id, None)
        if cached and cached[0]:
            for key in [k for k in self._clients if k[0] == cached[0]]:
                del self._clients[key]
