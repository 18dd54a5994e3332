"""Many workspaces by OAuth: install through the Slack stand-in's authorize page and oauth.v2.access, serve a share
in the new workspace with its own token, and forget everything of it on app_uninstalled (the audit stays)."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from cryptography.fernet import Fernet
from support.harness import BotHarness

from bot.settings import load_settings
from bot.slack.oauth import BOT_SCOPES, authorization_url, oauth_flow
from bot.store.audit import Audit, AuditEntry
from bot.store.installations import Installations, async_database_url
from bot.testing.standin_slack import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, SlackStandIn

ROOT = Path(__file__).resolve().parent.parent
NEW_TEAM = "T0NEWTEAM"
CHANNEL = "C0NEWCHAN"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# A Fernet key: 32 bytes, URL-safe base64 ("voiceclone-bot oauth test key 32").
TOKEN_KEY = "dm9pY2VjbG9uZS1ib3Qgb2F1dGggdGVzdCBrZXkgMzI="
OLD_KEY = "dm9pY2VjbG9uZS1ib3QgdGhlIG9sZGVyIGtleSEgMzI="
OAUTH_ENV = {
    "SLACK_CLIENT_ID": DEFAULT_CLIENT_ID,
    "SLACK_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
    "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
    "SLACK_BOT_TOKEN": "",  # no single token: every call must use an installation's
}


# -- helpers --------------------------------------------------------------------------------------------------


def start_install(bot: BotHarness) -> tuple[str, str]:
    """GET /slack/install: (the authorize URL behind "Add to Slack", the state cookie Bolt set)."""
    page = bot.http.get(f"http://127.0.0.1:{bot.port}/slack/install")
    assert page.status_code == 200, page.text
    cookie = page.headers["set-cookie"].split(";")[0]
    assert cookie.startswith("slack-app-oauth-state=")
    href = html.unescape(re.search(r'href="([^"]*/oauth/v2/authorize[^"]*)"', page.text).group(1))
    return href, cookie


def authorize(bot: BotHarness, url: str) -> str:
    """The browser at the stand-in's authorize page: the signed-in user approves; returns the redirect."""
    answer = bot.http.get(url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def finish(bot: BotHarness, location: str, cookie: str | None) -> httpx.Response:
    """Follow Slack's redirect back to the bot. The cookie is sent by hand: Bolt marks it Secure (https only)."""
    assert location.startswith(f"http://127.0.0.1:{bot.port}/slack/oauth_redirect?")
    return bot.http.get(location, headers={"Cookie": cookie} if cookie else {})


def rows(db: Path | str, sql: str, *params: object) -> list[tuple]:
    """Rows as stored, read beside the bot: `db` is the SQLite file or a postgresql:// URL."""
    if isinstance(db, str):
        import psycopg

        with psycopg.connect(db) as conn:
            return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), params).fetchall()]
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def no_plain_token(db: Path | str) -> list[tuple]:
    """Every value of the installation tables holding a Slack token in the clear (xoxb-, xoxp-, xoxe-): none."""
    found = []
    for table in ("slack_bots", "slack_installations"):
        for row in rows(db, f"SELECT * FROM {table}"):
            found += [(table, value) for value in row if isinstance(value, str) and "xox" in value]
    return found


def count(db: Path | str, table: str, team: str) -> int:
    return rows(db, f"SELECT COUNT(*) FROM {table} WHERE team_id = ?", team)[0][0]


def audit_cli(folder: Path, db: Path | str, *args: str) -> list[dict]:
    """`python -m bot audit ARGS --format json` as the operator runs it (its own process, no .env), parsed."""
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    env = {k: v for k, v in os.environ.items() if k != "VOICECLONE_ENV_FILE"}
    done = subprocess.run([sys.executable, "-m", "bot", "audit", *args], capture_output=True, text=True,
                          env={**env, "DATABASE_URL": url}, cwd=folder, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def on_bot_loop(bot: BotHarness, coro):
    return asyncio.run_coroutine_threadsafe(coro, bot._loop).result(30)


def pg_database() -> Iterator[str]:
    """A database of its own on the local PostgreSQL, dropped afterwards (fails, naming it, when none answers)."""
    from support.postgres import fresh_database

    with fresh_database("oauth_test") as url:
        yield url


def oauth_bot(tmp_path: Path, **env: str) -> Iterator[BotHarness]:
    harness = BotHarness(tmp_path, extra_env={**OAUTH_ENV, **env})
    with harness:
        harness.slack.configure_oauth([f"http://127.0.0.1:{harness.port}/slack/oauth_redirect"])
        harness.slack.request_url = harness.url
        yield harness


@pytest.fixture
def bot(tmp_path):
    yield from oauth_bot(tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_bot(request, tmp_path):
    """The bot on SQLite, and on PostgreSQL (installation, state, jobs, outbox and voices all there)."""
    if request.param == "sqlite":
        for harness in oauth_bot(tmp_path):
            yield harness, tmp_path / "jobs.db"
        return
    for url in pg_database():
        bots = oauth_bot(tmp_path, DATABASE_URL=url)
        harness = next(bots)
        yield harness, url
        next(bots, None)


# -- end to end ----------------------------------------------------------------------------------------------


def test_install_then_share_in_the_new_workspace_then_uninstall(any_bot, media):
    bot, db = any_bot
    slack = bot.slack
    default_token = slack.bot_token
    url, cookie = start_install(bot)
    assert url.startswith(slack.url + "/oauth/v2/authorize?")
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == [DEFAULT_CLIENT_ID] and query["scope"] == [",".join(BOT_SCOPES)]

    slack.sign_in(NEW_TEAM, team_name="New Workspace", user="U0ADMIN")
    done = finish(bot, authorize(bot, url), cookie)
    assert done.status_code == 200 and "New Workspace" in done.text, done.text
    [install] = slack.installs
    assert install["team_id"] == NEW_TEAM and install["scopes"] == list(BOT_SCOPES)
    new_token = next(ws for ws in slack.workspaces() if ws.team_id == NEW_TEAM).bot_token
    assert new_token != default_token
    # Stored encrypted with TOKEN_ENCRYPTION_KEY: the row holds no xoxb- token, only its Fernet text.
    [(team, sealed, bot_user)] = rows(db, "SELECT team_id, bot_token, bot_user_id FROM slack_bots")
    assert (team, bot_user) == (NEW_TEAM, next(w.bot_user_id for w in slack.workspaces() if w.team_id == NEW_TEAM))
    assert sealed.startswith("gAAAAA") and Fernet(TOKEN_KEY).decrypt(sealed.encode()).decode() == new_token
    assert no_plain_token(db) == []
    # oauth.v2.access went to the stand-in with the client credentials, and no secret was recorded.
    [exchange] = slack.calls_to("oauth.v2.access")
    assert "client_secret" not in exchange and exchange["code"]

    # A share in the new workspace is served with its token, end to end.
    slack.reset()
    with slack.workspace(NEW_TEAM):
        response, body = bot.share(media.speech(15, ".wav").read_bytes(), "take.wav", "audio/wav", "wav",
                                   channel=CHANNEL)
    assert response.status_code == 200 and body["team_id"] == NEW_TEAM
    ts = body["event"]["ts"]
    assert bot.wait_final(CHANNEL, ts) == "white_check_mark"
    bot.drain()
    assert [m for m in bot.replies(CHANNEL, ts) if "Voice cloned" in m["text"]]
    used = {c.method for c in slack.calls}
    assert {"chat.postMessage", "reactions.add"} <= used, used
    assert {c.team for c in slack.calls} == {NEW_TEAM}, [(c.method, c.team) for c in slack.calls]
    downloads = [r for r in slack.file_requests if r.status == 200]
    assert downloads and all(r.team == NEW_TEAM for r in slack.file_requests)
    assert count(db, "jobs", NEW_TEAM) == 1 and count(db, "voices", NEW_TEAM) == 1
    assert count(db, "outbox", NEW_TEAM) >= 1
    audited = count(db, "audit", NEW_TEAM)
    assert audited >= 1

    # The workspace uninstalls: Slack revokes the token and sends app_uninstalled.
    answer = slack.deliver_event(slack.uninstall(NEW_TEAM))
    assert answer.status_code == 200
    assert rows(db, "SELECT COUNT(*) FROM slack_bots")[0][0] == 0
    assert rows(db, "SELECT COUNT(*) FROM slack_installations")[0][0] == 0
    assert count(db, "jobs", NEW_TEAM) == 0 and count(db, "voices", NEW_TEAM) == 0
    assert count(db, "outbox", NEW_TEAM) == 0
    assert count(db, "audit", NEW_TEAM) == audited  # the consent audit is the legal record: kept
    # What the operator needs for Tencent support stays: the workspace's VoiceIds with dates and RequestIds,
    # from the command line, that workspace's alone.
    [voice_id] = list(bot.trtc.voices)
    [clone] = [r for r in bot.trtc.requests if r.action == "VoiceClone"]
    assert voice_id.startswith("take_") and clone.outcome == "ok" and clone.request_id
    other = AuditEntry(consent="attested", outcome="cloned", team_id="T0OTHER", voice_id="other_0001",
                       request_id="rid-of-another-workspace")
    on_bot_loop(bot, Audit(bot.runtime.db).record(other))
    listed = audit_cli(bot.tmp, db, "--team", NEW_TEAM, "--format", "json")
    assert [(e["team_id"], e["voice_id"], e["request_id"], e["outcome"]) for e in listed] == [
        (NEW_TEAM, voice_id, clone.request_id, "cloned")
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", listed[0]["at"]), listed[0]["at"]
    assert on_bot_loop(bot, bot.runtime.runner.workspaces.token(NEW_TEAM)) is None

    # Anything still arriving for that workspace is not served: no call is made with any token.
    slack.reset()
    with slack.workspace(NEW_TEAM):
        response, body = bot.share(media.speech(15, ".wav").read_bytes(), "again.wav", "audio/wav", "wav",
                                   channel=CHANNEL)
    assert response.status_code == 200
    bot.drain()
    assert count(db, "jobs", NEW_TEAM) == 0
    assert [c for c in slack.calls if c.team is not None] == []


def test_tokens_revoked_for_the_bot_is_an_uninstall_and_for_users_only_is_not(bot):
    slack, db = bot.slack, bot.tmp / "jobs.db"
    url, cookie = start_install(bot)
    slack.sign_in(NEW_TEAM)
    assert finish(bot, authorize(bot, url), cookie).status_code == 200
    assert slack.deliver_event(slack.tokens_revoked_event(NEW_TEAM, bot=False, users=["U0ADMIN"])).status_code == 200
    assert rows(db, "SELECT team_id FROM slack_bots") == [(NEW_TEAM,)]
    assert slack.deliver_event(slack.tokens_revoked_event(NEW_TEAM)).status_code == 200
    assert rows(db, "SELECT team_id FROM slack_bots") == []


def test_redirect_with_a_wrong_or_missing_state_is_refused(bot):
    slack, db = bot.slack, bot.tmp / "jobs.db"
    url, cookie = start_install(bot)
    slack.sign_in(NEW_TEAM)
    location = authorize(bot, url)
    state = parse_qs(urlsplit(location).query)["state"][0]
    forged = location.replace(state, str(uuid.uuid4()))
    # Another state than the browser's cookie (CSRF), a state unknown to the store, no state, no cookie.
    for attempt, with_cookie in ((forged, cookie), (forged, f"slack-app-oauth-state={forged.split('state=')[1]}"),
                                 (location.split("&state=")[0], cookie), (location, None)):
        refused = finish(bot, attempt, with_cookie)
        assert refused.status_code in (400, 401), refused.text
        assert "did not complete" in refused.text
    assert rows(db, "SELECT COUNT(*) FROM slack_bots")[0][0] == 0
    # The genuine redirect still works once, and not twice (the state is consumed).
    assert finish(bot, location, cookie).status_code == 200
    assert finish(bot, location, cookie).status_code == 401


def test_cancelled_install_shows_why_and_stores_nothing(bot):
    url, cookie = start_install(bot)
    bot.slack.deny_next_install()
    location = authorize(bot, url)
    assert "error=access_denied" in location
    page = finish(bot, location, cookie)
    assert "cancelled" in page.text and 'href="/slack/install"' in page.text
    assert rows(bot.tmp / "jobs.db", "SELECT COUNT(*) FROM slack_bots")[0][0] == 0


# -- the stand-in's OAuth, as Slack answers it ---------------------------------------------------------------


async def test_standin_oauth_errors_and_per_workspace_tokens():
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    with SlackStandIn() as slack:
        slack.configure_oauth(["https://bot.example/slack/oauth_redirect"])
        async with httpx.AsyncClient() as http:
            bad = await http.get(f"{slack.url}/oauth/v2/authorize", params={"client_id": "nope"})
            assert bad.status_code == 400 and "invalid_client_id" in bad.text
            bad = await http.get(f"{slack.url}/oauth/v2/authorize",
                                 params={"client_id": DEFAULT_CLIENT_ID, "redirect_uri": "https://evil.example/x"})
            assert bad.status_code == 400 and "bad_redirect_uri" in bad.text
            slack.sign_in("T0OTHER", team_name="Other")
            ok = await http.get(f"{slack.url}/oauth/v2/authorize",
                                params={"client_id": DEFAULT_CLIENT_ID, "scope": "chat:write", "state": "s1"})
            target = urlsplit(ok.headers["location"])
            assert target.netloc == "bot.example" and parse_qs(target.query)["state"] == ["s1"]
            code = parse_qs(target.query)["code"][0]
        client = AsyncWebClient(base_url=slack.api_url)
        for kwargs, error in (({"client_id": "x", "client_secret": DEFAULT_CLIENT_SECRET}, "invalid_client_id"),
                              ({"client_id": DEFAULT_CLIENT_ID, "client_secret": "wrong"}, "bad_client_secret"),
                              ({"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET,
                                "redirect_uri": "https://bot.example/slack/oauth_redirect"}, "bad_redirect_uri")):
            with pytest.raises(SlackApiError) as failed:
                await client.oauth_v2_access(code=code, **kwargs)
            assert failed.value.response["error"] == error
        answer = await client.oauth_v2_access(client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET,
                                              code=code)
        assert answer["token_type"] == "bot" and answer["team"] == {"id": "T0OTHER", "name": "Other"}
        assert answer["enterprise"] is None and answer["is_enterprise_install"] is False
        assert answer["authed_user"]["id"] and answer["scope"] == "chat:write"
        with pytest.raises(SlackApiError) as reused:
            await client.oauth_v2_access(client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET, code=code)
        assert reused.value.response["error"] == "invalid_code"

        token = answer["access_token"]
        other = await client.auth_test(token=token)
        default = await client.auth_test(token=slack.bot_token)
        assert (other["team_id"], other["team"]) == ("T0OTHER", "Other") and default["team_id"] == slack.team_id
        assert other["user_id"] == answer["bot_user_id"] != default["user_id"]
        # A file belongs to its workspace: the other workspace's token cannot see or download it.
        with slack.workspace("T0OTHER"):
            file = slack.add_file(b"RIFF....WAVE", "x.wav", "audio/wav", "wav")
        assert file["user_team"] == "T0OTHER" and f"/T0OTHER-{file['id']}/" in file["url_private_download"]
        assert (await client.files_info(token=token, file=file["id"]))["file"]["id"] == file["id"]
        with pytest.raises(SlackApiError) as hidden:
            await client.files_info(token=slack.bot_token, file=file["id"])
        assert hidden.value.response["error"] == "file_not_found"
        async with httpx.AsyncClient() as http:
            wrong = await http.get(file["url_private_download"], headers={"Authorization": f"Bearer {slack.bot_token}"})
            right = await http.get(file["url_private_download"], headers={"Authorization": f"Bearer {token}"})
        assert wrong.status_code == 302 and right.status_code == 200

        event = slack.uninstall("T0OTHER")
        assert event["team_id"] == "T0OTHER" and event["event"]["type"] == "app_uninstalled"
        with pytest.raises(SlackApiError) as revoked:
            await client.auth_test(token=token)
        assert revoked.value.response["error"] == "token_revoked"
        slack.reset()  # an uninstall is not a fault that reset() forgets
        with pytest.raises(SlackApiError):
            await client.auth_test(token=token)
        assert (await client.auth_test(token=slack.bot_token))["ok"]


# -- units ---------------------------------------------------------------------------------------------------


def test_authorization_url_follows_the_api_url():
    assert authorization_url("https://slack.com/api/") == "https://slack.com/oauth/v2/authorize"
    assert authorization_url("http://127.0.0.1:8123/api/") == "http://127.0.0.1:8123/oauth/v2/authorize"


def test_bot_scopes_are_the_manifests():
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert list(BOT_SCOPES) == manifest["oauth_config"]["scopes"]["bot"]
    assert {"app_uninstalled", "tokens_revoked"} <= set(manifest["settings"]["event_subscriptions"]["bot_events"])


def test_database_url_maps_to_the_same_database():
    assert async_database_url("sqlite:///voiceclone.db") == "sqlite+aiosqlite:///voiceclone.db"
    assert async_database_url("sqlite:////var/lib/bot/v.db") == "sqlite+aiosqlite:////var/lib/bot/v.db"
    assert async_database_url("postgresql://u:pw@db:5432/bot") == "postgresql+psycopg://u:pw@db:5432/bot"
    assert async_database_url("postgres://u@db/bot") == "postgresql+psycopg://u@db/bot"


def test_no_secret_in_reprs(tmp_path):
    settings = load_settings(environ={**OAUTH_ENV, "DATABASE_URL": "postgresql://u:hunter22@db/bot"})
    shown = repr(Installations(settings))
    assert "hunter22" not in shown and DEFAULT_CLIENT_SECRET not in shown and "db/bot" in shown


# -- PostgreSQL: the same stores shared by replicas -----------------------------------------------------------


@pytest.fixture
def pg_url():
    yield from pg_database()


async def test_postgresql_two_replicas_install_and_uninstall(pg_url):
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.web.async_client import AsyncWebClient

    with SlackStandIn() as slack:
        slack.configure_oauth(["https://bot.example/slack/oauth_redirect"])
        settings = load_settings(environ={**OAUTH_ENV, "DATABASE_URL": pg_url, "SLACK_API_URL": slack.api_url})
        one, two = Installations(settings), Installations(settings)
        try:
            # Two replicas starting at once: neither fails on tables the other is creating.
            await asyncio.gather(one.create_tables(), two.create_tables(), one.create_tables())
            client = AsyncWebClient(base_url=slack.api_url)
            start, finish_ = oauth_flow(settings, one, client), oauth_flow(settings, two, client)
            # The install starts on one replica and finishes on the other: state and installation are shared.
            page = await start.handle_installation(AsyncBoltRequest(body="", query={}, headers={}))
            cookie = page.headers["set-cookie"][0].split(";")[0]
            url = html.unescape(re.search(r'href="([^"]*/oauth/v2/authorize[^"]*)"', page.body).group(1))
            slack.sign_in(NEW_TEAM, team_name="PG Workspace")
            async with httpx.AsyncClient() as http:
                location = (await http.get(url)).headers["location"]
            query = urlsplit(location).query
            done = await finish_.handle_callback(AsyncBoltRequest(body="", query=query, headers={"cookie": cookie}))
            assert done.status == 200 and "PG Workspace" in done.body
            token = await one.bot_token(NEW_TEAM)
            assert token == next(w.bot_token for w in slack.workspaces() if w.team_id == NEW_TEAM)
            assert await two.installed(NEW_TEAM)
            assert await two.delete_workspace(NEW_TEAM) == 2  # its installation row and its bot row
            assert await one.bot_token(NEW_TEAM) is None and not await one.installed(NEW_TEAM)
            # A replayed redirect is refused: the state was consumed in the shared store.
            again = await start.handle_callback(AsyncBoltRequest(body="", query=query, headers={"cookie": cookie}))
            assert again.status == 401
        finally:
            await one.aclose()
            await two.aclose()


async def test_tokens_stored_in_the_clear_or_with_an_older_key_are_sealed_with_the_new_key_at_start_up(tmp_path):
    from slack_sdk.oauth.installation_store.models.installation import Installation

    url = f"sqlite:///{tmp_path / 'bot.db'}"
    old = Installations(load_settings(environ={**OAUTH_ENV, "DATABASE_URL": url, "TOKEN_ENCRYPTION_KEY": OLD_KEY}))
    await old.create_tables()
    await old.store.async_save(Installation(
        app_id="A0APP", enterprise_id=None, team_id="T0OLDKEY", user_id="U0ONE", bot_token="xoxb-old-key-token",
        bot_id="B0ONE", bot_user_id="U0BOT1", bot_scopes=["chat:write"], user_token="xoxp-old-key-user-token",
    ))
    await old.aclose()
    db = tmp_path / "bot.db"
    with sqlite3.connect(db) as conn:  # a row an older version wrote, token in the clear
        conn.execute("INSERT INTO slack_bots (client_id, app_id, team_id, bot_token, bot_id, bot_user_id, bot_scopes,"
                     " is_enterprise_install, installed_at) VALUES (?, 'A0APP', 'T0PLAIN', 'xoxb-plain-token', 'B0TWO',"
                     " 'U0BOT2', 'chat:write', 0, CURRENT_TIMESTAMP)", (DEFAULT_CLIENT_ID,))
    assert len(no_plain_token(db)) == 1

    both = f"{TOKEN_KEY},{OLD_KEY}"  # the new key first: it encrypts; the old one still decrypts
    new = Installations(load_settings(environ={**OAUTH_ENV, "DATABASE_URL": url, "TOKEN_ENCRYPTION_KEY": both}))
    try:
        await new.create_tables()
        assert no_plain_token(db) == []
        sealed = [r[0] for r in rows(db, "SELECT bot_token FROM slack_bots ORDER BY team_id")]
        assert [Fernet(TOKEN_KEY).decrypt(t.encode()).decode() for t in sealed] == [
            "xoxb-old-key-token", "xoxb-plain-token"]
        [user_token] = [r[0] for r in rows(db, "SELECT user_token FROM slack_installations")]
        assert Fernet(TOKEN_KEY).decrypt(user_token.encode()).decode() == "xoxp-old-key-user-token"
        assert await new.bot_token("T0OLDKEY") == "xoxb-old-key-token"
        assert await new.bot_token("T0PLAIN") == "xoxb-plain-token"
        found = await new.store.async_find_installation(enterprise_id=None, team_id="T0OLDKEY")
        assert (found.bot_token, found.user_token) == ("xoxb-old-key-token", "xoxp-old-key-user-token")
        bot = await new.store.async_find_bot(enterprise_id=None, team_id="T0OLDKEY")
        assert bot.bot_token == "xoxb-old-key-token"
    finally:
        await new.aclose()
    # With the old key alone the tokens cannot be read: the workspace is as good as not installed (never an error).
    lost = Installations(load_settings(environ={**OAUTH_ENV, "DATABASE_URL": url, "TOKEN_ENCRYPTION_KEY": OLD_KEY}))
    try:
        assert await lost.bot_token("T0OLDKEY") is None
        assert await lost.store.async_find_bot(enterprise_id=None, team_id="T0OLDKEY") is None
    finally:
        await lost.aclose()


async def test_postgresql_token_columns_of_an_older_version_are_widened_for_encrypted_tokens(pg_url):
    from slack_sdk.oauth.installation_store.models.installation import Installation
    from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore

    settings = load_settings(environ={**OAUTH_ENV, "DATABASE_URL": pg_url})
    older = AsyncSQLAlchemyInstallationStore(client_id=DEFAULT_CLIENT_ID, engine=Installations(settings).engine)
    await older.create_tables()  # as an older version made them: VARCHAR(200) tokens
    await older.engine.dispose()
    assert rows(pg_url, "SELECT data_type FROM information_schema.columns WHERE table_name = 'slack_bots'"
                " AND column_name = 'bot_token'") == [("character varying",)]
    installations = Installations(settings)
    try:
        await installations.create_tables()
        types = rows(pg_url, "SELECT table_name, column_name, data_type FROM information_schema.columns"
                     " WHERE table_name IN ('slack_bots', 'slack_installations') AND right(column_name, 5) = 'token'"
                     " ORDER BY 1, 2")
        assert types == [
            ("slack_bots", "bot_refresh_token", "text"), ("slack_bots", "bot_token", "text"),
            ("slack_installations", "bot_refresh_token", "text"), ("slack_installations", "bot_token", "text"),
            ("slack_installations", "user_refresh_token", "text"), ("slack_installations", "user_token", "text"),
        ]
        # A rotating token (xoxe.xoxb-..., ~180 characters) is over 200 once encrypted: it fits now.
        rotating = "xoxe.xoxb-1-" + "A1b2C3d4" * 21
        await installations.store.async_save(Installation(
            app_id="A0APP", enterprise_id=None, team_id="T0LONG", user_id="U0ONE", bot_token=rotating,
            bot_id="B0ONE", bot_user_id="U0BOT1", bot_scopes=["chat:write"], bot_refresh_token="xoxe-1-" + "r" * 140,
        ))
        assert await installations.bot_token("T0LONG") == rotating
        assert no_plain_token(pg_url) == []
    finally:
        await installations.aclose()
