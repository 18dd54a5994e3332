"""Each workspace's installation (its bot token), kept by slack_sdk's SQLAlchemy stores in the bot's own database.

OAuth mode only (SLACK_CLIENT_ID and SLACK_CLIENT_SECRET set). The installation store and the OAuth state store
live in DATABASE_URL, beside the jobs: one SQLite file, or the PostgreSQL database every replica shares (so a
workspace installed through one replica is served by all, and an install started on one can finish on another).

Tokens at rest: every token column (bot, user, refresh) holds a Fernet token made with TOKEN_ENCRYPTION_KEY, never
the xoxb-/xoxp- itself (EncryptedInstallationStore encrypts on save and decrypts on find). Start-up encrypts any
token an older version stored in the clear, and re-encrypts those made with an older key (rotation: new key first).
A token that no key decrypts (the key was lost) is treated as not installed: the workspace installs again.

Enterprise Grid: workspace-level installs inside a Grid org are found by team id like any other; org-wide
installs (`is_enterprise_install`, no team id) are not supported (manifest.yml has org_deploy_enabled: false).
"""

from __future__ import annotations

import copy
import logging
import zlib
from typing import Any

import sqlalchemy
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bot.settings import Settings, is_postgres_url, masked_url, sqlite_path

log = logging.getLogger(__name__)

# How long an install link (its state) stays valid: Bolt's default.
STATE_SECONDS = 600
# Serialises table creation between replicas starting together on one PostgreSQL: create_all checks, then
# creates, and two processes racing between the two would both try CREATE TABLE (one failing on DuplicateTable).
_CREATE_LOCK = zlib.crc32(b"voiceclone-bot: slack installation tables")
# The columns holding a token, per table; a Fernet token is longer than slack_sdk's VARCHAR(200) allows for a
# rotating token, so they are TEXT (PostgreSQL enforces the length; SQLite does not).
TOKEN_COLUMNS = {
    "slack_installations": ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token"),
    "slack_bots": ("bot_token", "bot_refresh_token"),
}
# Every Fernet token starts with its version byte 0x80, base64url-encoded: "gAAAAA".
_FERNET_PREFIX = "gAAAAA"


class TokenCipher:
    """Fernet with TOKEN_ENCRYPTION_KEY: the first key encrypts, every key decrypts."""

    def __init__(self, keys: str):
        fernets = [Fernet(k.strip()) for k in keys.split(",") if k.strip()]
        self._first = fernets[0]
        self._fernet = MultiFernet(fernets)

    def __repr__(self) -> str:
        return "TokenCipher('**********')"

    def encrypt(self, token: str | None) -> str | None:
        return None if token is None else self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, stored: str | None) -> str | None:
        """The token; raises InvalidToken when no key opens it."""
        return None if stored is None else self._fernet.decrypt(stored.encode()).decode()

    def current(self, stored: str) -> str | None:
        """`stored` as it should be kept now (encrypted with the first key), or None when it already is.

        A token in the clear (an older version's) is encrypted; one made with an older key is re-encrypted.
        """
        if not stored.startswith(_FERNET_PREFIX):
            return self.encrypt(stored)
        try:
            self._first.decrypt(stored.encode())
            return None
        except InvalidToken:
            pass
        try:
            return self._fernet.rotate(stored.encode()).decode()
        except InvalidToken:
            return None  # no key opens it: left as it is (a look-up logs it and treats the workspace as not installed)


class EncryptedInstallationStore(AsyncSQLAlchemyInstallationStore):
    """slack_sdk's SQLAlchemy installation store, with every token encrypted before it is written and decrypted
    when it is read (Bolt's authorization, the OAuth flow's saves)."""

    def __init__(self, cipher: TokenCipher, **kwargs: Any):
        super().__init__(**kwargs)
        self.cipher = cipher
        for table in (self.installations, self.bots):
            for name in TOKEN_COLUMNS[table.name]:
                table.c[name].type = sqlalchemy.Text()

    def _sealed(self, entity: Any, fields: tuple[str, ...]) -> Any:
        """A copy of `entity` with its tokens encrypted (any already encrypted left as it is)."""
        sealed = copy.copy(entity)
        for name in fields:
            value = getattr(entity, name, None)
            if value is not None and not value.startswith(_FERNET_PREFIX):
                setattr(sealed, name, self.cipher.encrypt(value))
        return sealed

    def _opened(self, entity: Any, fields: tuple[str, ...]) -> Any:
        """`entity` with its encrypted tokens decrypted; None (logged, no token) when no key opens one."""
        if entity is None:
            return None
        try:
            for name in fields:
                value = getattr(entity, name, None)
                if value is not None and value.startswith(_FERNET_PREFIX):
                    setattr(entity, name, self.cipher.decrypt(value))
        except InvalidToken:
            log.error(
                "the stored token of workspace %s cannot be decrypted with TOKEN_ENCRYPTION_KEY (was the key "
                "changed? put the old one after the new one): treated as not installed", entity.team_id,
            )
            return None
        return entity

    async def async_save(self, installation: Installation) -> None:
        # The parent saves the installation row, then its bot row through async_save_bot (the copy's to_bot()).
        await super().async_save(self._sealed(installation, TOKEN_COLUMNS["slack_installations"]))

    async def async_save_bot(self, bot: Bot) -> None:
        await super().async_save_bot(self._sealed(bot, TOKEN_COLUMNS["slack_bots"]))

    async def async_find_bot(self, **kwargs: Any) -> Bot | None:
        return self._opened(await super().async_find_bot(**kwargs), TOKEN_COLUMNS["slack_bots"])

    async def async_find_installation(self, **kwargs: Any) -> Installation | None:
        # The parent may copy the newest bot row's token in through async_find_bot (decrypted already): _opened
        # decrypts only what is still encrypted.
        return self._opened(await super().async_find_installation(**kwargs), TOKEN_COLUMNS["slack_installations"])


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
        if not settings.token_encryption_key:
            raise ValueError("Installations need TOKEN_ENCRYPTION_KEY")
        self.client_id = settings.slack_client_id
        self.cipher = TokenCipher(settings.token_encryption_key.get())
        self._shown = masked_url(settings.database_url)
        # pool_pre_ping: a PostgreSQL restart leaves dead pooled connections; the first look-up after it would fail.
        self.engine = engine or create_async_engine(async_database_url(settings.database_url), pool_pre_ping=True)
        self.store = EncryptedInstallationStore(self.cipher, client_id=self.client_id, engine=self.engine, logger=log)
        self.states = AsyncSQLAlchemyOAuthStateStore(expiration_seconds=STATE_SECONDS, engine=self.engine, logger=log)

    def __repr__(self) -> str:
        return f"Installations(client_id={self.client_id!r}, database={self._shown!r})"

    async def create_tables(self) -> None:
        """Create slack_installations, slack_bots and slack_oauth_states when missing (any number of replicas), and
        encrypt the tokens an older version kept in the clear (or re-encrypt those of an older key)."""
        async with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # Held until this transaction ends: the second replica waits, then finds the tables there.
                await conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})
            await conn.run_sync(self.store.metadata.create_all)
            await conn.run_sync(self.states.metadata.create_all)
            if self.engine.dialect.name == "postgresql":
                await self._widen_token_columns(conn)
            sealed = await self._seal_stored_tokens(conn)
        if sealed:
            log.info("encrypted %d stored token(s) with the first TOKEN_ENCRYPTION_KEY", sealed)

    async def _widen_token_columns(self, conn: AsyncConnection) -> None:
        """Tables an older version made have VARCHAR(200) token columns: a rotating token's Fernet text is longer."""
        found = await conn.execute(
            sqlalchemy.text(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name IN ('slack_installations', 'slack_bots') AND data_type <> 'text'"
            )
        )
        for table, column in found.all():
            if column in TOKEN_COLUMNS.get(table, ()):
                await conn.execute(sqlalchemy.text(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE text'))

    async def _seal_stored_tokens(self, conn: AsyncConnection) -> int:
        """Encrypt each stored token not encrypted with the first key; returns how many were."""
        changed = 0
        for table in (self.store.installations, self.store.bots):
            columns = [table.c[name] for name in TOKEN_COLUMNS[table.name]]
            rows = (await conn.execute(sqlalchemy.select(table.c.id, *columns))).all()
            for row in rows:
                values = {}
                for column in columns:
                    stored = getattr(row, column.name)
                    current = self.cipher.current(stored) if stored else None
                    if current is not None:
                        values[column.name] = current
                if values:
                    await conn.execute(table.update().where(table.c.id == row.id).values(**values))
                    changed += len(values)
        return changed

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
            stored = (await conn.execute(query)).scalar_one_or_none()
        try:
            return self.cipher.decrypt(stored)
        except InvalidToken:
            log.error(
                "the stored bot token of workspace %s cannot be decrypted with TOKEN_ENCRYPTION_KEY (was the key "
                "changed? put the old one after the new one): treated as not installed", team_id,
            )
            return None

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
