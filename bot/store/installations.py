"""Each workspace's installation (its bot token), kept by slack_sdk's SQLAlchemy stores in the bot's own database.

OAuth mode only (SLACK_CLIENT_ID and SLACK_CLIENT_SECRET set). The installation store and the OAuth state store
live in DATABASE_URL, beside the jobs: one SQLite file, or the PostgreSQL database every replica shares (so a
workspace installed through one replica is served by all, and an install started on one can finish on another).

Enterprise Grid: workspace-level installs inside a Grid org are found by team id like any other; org-wide
installs (`is_enterprise_install`, no team id) are not supported (manifest.yml has org_deploy_enabled: false).
"""

from __future__ import annotations

import logging
import zlib

import sqlalchemy
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.settings import Settings, is_postgres_url, masked_url, sqlite_path

log = logging.getLogger(__name__)

# How long an install link (its state) stays valid: Bolt's default.
STATE_SECONDS = 600
# Serialises table creation between replicas starting together on one PostgreSQL: create_all checks, then
# creates, and two processes racing between the two would both try CREATE TABLE (one failing on DuplicateTable).
_CREATE_LOCK = zlib.crc32(b"voiceclone-bot: slack installation tables")


def async_database_url(url: str) -> str:
    """DATABASE_URL as an SQLAlchemy async URL naming the same database the bot's stores open.

    sqlite:///rel.db stays relative to the working folder, as bot.store.database opens it; :memory: is a database of
    its own (in-memory SQLite is not shared between connections). PostgreSQL goes through psycopg 3, the driver
    bot.store.database uses.
    """
    if is_postgres_url(url):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    path = sqlite_path(url)
    if path == ":memory:":
        return "sqlite+aiosqlite://"
    return "sqlite+aiosqlite:///" + path


class Installations:
    """The installation and OAuth state stores on DATABASE_URL, with the look-ups and deletions the bot needs."""

    def __init__(self, settings: Settings, *, engine: AsyncEngine | None = None):
        if not settings.oauth or settings.slack_client_id is None:
            raise ValueError("Installations need SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
        self.client_id = settings.slack_client_id
        self._shown = masked_url(settings.database_url)
        # pool_pre_ping: a PostgreSQL restart leaves dead pooled connections; the first look-up after it would fail.
        self.engine = engine or create_async_engine(async_database_url(settings.database_url), pool_pre_ping=True)
        self.store = AsyncSQLAlchemyInstallationStore(client_id=self.client_id, engine=self.engine, logger=log)
        self.states = AsyncSQLAlchemyOAuthStateStore(expiration_seconds=STATE_SECONDS, engine=self.engine, logger=log)

    def __repr__(self) -> str:
        return f"Installations(client_id={self.client_id!r}, database={self._shown!r})"

    async def create_tables(self) -> None:
        """Create slack_installations, slack_bots and slack_oauth_states when missing (any number of replicas)."""
        async with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # Held until this transaction ends: the second replica waits, then finds the tables there.
                await conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})
            await conn.run_sync(self.store.metadata.create_all)
            await conn.run_sync(self.states.metadata.create_all)

    async def bot_token(self, team_id: str | None) -> str | None:
        """The newest bot token installed for `team_id` (the Workspaces look-up); None when not installed.

        By team id alone, whatever the enterprise id: a workspace's id is unique across Grid orgs too.
        """
        if not team_id:
            return None  # an org-wide install has no team id: not supported (see the module's docstring)
        bots = self.store.bots
        query = (
            sqlalchemy.select(bots.c.bot_token)
            .where(bots.c.client_id == self.client_id, bots.c.team_id == team_id, bots.c.bot_token.is_not(None))
            .order_by(bots.c.installed_at.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    async def installed(self, team_id: str) -> bool:
        """True when the workspace has an installation row (tests, the operator)."""
        table = self.store.installations
        query = sqlalchemy.select(sqlalchemy.func.count()).where(
            table.c.client_id == self.client_id, table.c.team_id == team_id
        )
        async with self.engine.connect() as conn:
            return bool((await conn.execute(query)).scalar_one())

    async def delete_workspace(self, team_id: str) -> int:
        """Delete every installation and bot row of `team_id` (the app left it); returns how many rows went.

        By team id alone, like bot_token(): async_delete_installation/async_delete_bot match the enterprise id
        exactly, so a Grid workspace's rows would stay if the event's enterprise id differed from the stored one.
        """
        removed = 0
        async with self.engine.begin() as conn:
            for table in (self.store.installations, self.store.bots):
                result = await conn.execute(
                    table.delete().where(table.c.client_id == self.client_id, table.c.team_id == team_id)
                )
                removed += result.rowcount or 0
        return removed

    async def aclose(self) -> None:
        """Close the engine's pooled connections."""
        await self.engine.dispose()
