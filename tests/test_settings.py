"""Settings: environment then .env, every problem named at once, secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import KNOWN_KEYS, TRTC_KEYS, Secret, load_settings, sqlite_path, unknown_keys

ROOT = Path(__file__).resolve().parent.parent


def test_missing_keys_are_all_named_at_once():
    with pytest.raises(ConfigError) as info:
        load_settings(TRTC_KEYS, environ={})
    assert set(info.value.problems) == set(TRTC_KEYS)
    assert all(key in str(info.value) for key in TRTC_KEYS)


def test_invalid_values_are_named_with_the_reason():
    env = {"TRTC_SDK_APP_ID": "abc", "PORT": "99999", "VOICECLONE_MODEL": "gpt", "SLACK_BOT_TOKEN": "nope"}
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    problems = info.value.problems
    assert problems["TRTC_SDK_APP_ID"] == "must be an integer, got 'abc'"
    assert problems["PORT"] == "must be between 1 and 65535, got 99999"
    assert "got 'gpt'" in problems["VOICECLONE_MODEL"]
    assert "nope" not in problems["SLACK_BOT_TOKEN"], "a secret's value is never shown"


def test_secrets_never_print():
    env = {"TENCENTCLOUD_SECRET_ID": "AKIDx", "TENCENTCLOUD_SECRET_KEY": "topsecretkey", "TRTC_SDK_APP_ID": "1400"}
    settings = load_settings(TRTC_KEYS, environ=env)
    assert "topsecretkey" not in repr(settings)
    assert "topsecretkey" not in str(settings.tencent_secret_key)
    assert repr(Secret("x")) == "'**********'"
    assert settings.tencent_secret_key.get() == "topsecretkey"
    assert settings.trtc_sdk_app_id == 1400


def test_environment_wins_over_dotenv(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("TRTC_ENDPOINT=from-file.example\nTRTC_SDK_APP_ID=7   # a comment\n")
    monkeypatch.setenv("TRTC_ENDPOINT", "from-env.example")
    monkeypatch.delenv("TRTC_SDK_APP_ID", raising=False)
    settings = load_settings(env_file=env_file)
    assert settings.trtc_endpoint == "from-env.example"
    assert settings.trtc_sdk_app_id == 7


def test_endpoint_forms():
    assert load_settings(environ={}).trtc_url == "https://trtc.intl.tencentcloudapi.com"
    local = load_settings(environ={"TRTC_ENDPOINT": "http://127.0.0.1:9000/"})
    assert local.trtc_url == "http://127.0.0.1:9000"
    with pytest.raises(ConfigError):
        load_settings(environ={"TRTC_ENDPOINT": "ftp://x"})


def test_database_urls():
    assert sqlite_path("sqlite:///voiceclone.db") == "voiceclone.db"
    assert sqlite_path("sqlite:////data/v.db") == "/data/v.db"
    assert sqlite_path("sqlite://") == ":memory:"
    with pytest.raises(ConfigError):
        load_settings(environ={"DATABASE_URL": "mysql://x/y"})
    with pytest.raises(ConfigError) as bad:
        load_settings(environ={"DATABASE_URL": "postgresql://bot:hunter2@db:notaport/y"})
    assert "hunter2" not in str(bad.value)
    pg = load_settings(environ={"DATABASE_URL": "postgresql://bot:hunter2@db:5432/voices"})
    assert pg.postgres and "hunter2" in pg.secrets() and "hunter2" not in pg.database_shown
    assert "hunter2" not in repr(pg) and "hunter2" not in str(pg)
    assert not load_settings(environ={}).postgres


def test_missing_invalid_and_unknown_keys_come_in_one_error():
    env = {"SLACK_BOT_TOKN": "xoxb-x", "TRTC_SDK_APP_ID": "my-trtc-app", "LOG_LEVL": "DEBUG", "TENCENTCLOUD_KEY": "k"}
    with pytest.raises(ConfigError) as info:
        load_settings(TRTC_KEYS, environ=env)
    problems = info.value.problems
    assert problems["TENCENTCLOUD_SECRET_ID"].startswith("is missing: set it in .env")
    assert problems["TRTC_SDK_APP_ID"] == "must be an integer, got 'my-trtc-app'"
    assert problems["SLACK_BOT_TOKN"].endswith("did you mean SLACK_BOT_TOKEN?")
    assert problems["LOG_LEVL"].endswith("did you mean LOG_LEVEL?")
    assert "TENCENTCLOUD_KEY" in problems
    assert all("xoxb-x" not in why for why in problems.values())


def test_other_programs_variables_are_not_ours():
    assert unknown_keys({"PATH": "/bin", "HOME": "/root", "HOSTNAME": "h", "PWD": "/", "LOGNAME": "me"}) == {}


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "error", "CRITICAL"])
def test_log_levels_are_case_insensitive(level):
    assert load_settings(environ={"LOG_LEVEL": level}).log_level == level.upper()


@pytest.mark.parametrize("level", ["verbose", "WARN", "5"])
def test_unknown_log_levels_are_refused(level):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"LOG_LEVEL": level})
    assert info.value.problems["LOG_LEVEL"].startswith("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")


def test_region_is_singapore_unless_overridden():
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"TRTC_REGION": "ap-beijing"})
    assert "TRTC_REGION_OVERRIDE=1" in info.value.problems["TRTC_REGION"]
    settings = load_settings(environ={"TRTC_REGION": "ap-beijing", "TRTC_REGION_OVERRIDE": "1"})
    assert settings.trtc_region == "ap-beijing" and settings.trtc_region_override


def test_default_language_is_checked_as_slack_checks_lang():
    assert load_settings(environ={"VOICECLONE_LANGUAGE": "EN"}).voiceclone_language == "en"
    with pytest.raises(ConfigError):
        load_settings(environ={"VOICECLONE_LANGUAGE": "english"})


def docker_env_file(path: Path) -> dict[str, str]:
    """Parse a file as `docker run --env-file` does: KEY=VALUE per line, whole-line # comments, no quote or
    inline-comment handling, leading whitespace dropped, the value kept byte for byte."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"Docker would pass {key!r} through from the host environment: give it a value"
        values[key] = value
    return values


def test_env_example_works_with_docker_env_file():
    values = docker_env_file(ROOT / ".env.example")
    for key, value in values.items():
        assert "#" not in value and not value.startswith(("'", '"')), f"{key}={value!r} would reach the bot as is"
    # Docker passes every line, empty ones included, into the container's environment: they must all load.
    settings = load_settings(environ=values)
    assert "DATABASE_URL" not in values, "the image's /data job store must not be overridden"
    assert settings.database_url == "sqlite:///voiceclone.db"


def test_env_example_documents_every_setting():
    text = (ROOT / ".env.example").read_text()
    documented = {line.lstrip("# ").split("=", 1)[0] for line in text.splitlines() if "=" in line}
    assert set(KNOWN_KEYS) - {"VOICECLONE_ENV_FILE"} <= documented


# A Fernet key: 32 bytes, URL-safe base64 ("voiceclone-bot oauth test key 32").
TOKEN_KEY = "dm9pY2VjbG9uZS1ib3Qgb2F1dGggdGVzdCBrZXkgMzI="
OAUTH = {"SLACK_CLIENT_ID": "123.456", "SLACK_CLIENT_SECRET": "client-secret-1"}


def test_oauth_needs_a_token_encryption_key_and_keeps_it_secret():
    with pytest.raises(ConfigError) as info:
        load_settings(environ=OAUTH)
    assert list(info.value.problems) == ["TOKEN_ENCRYPTION_KEY"]
    assert info.value.problems["TOKEN_ENCRYPTION_KEY"].startswith("is missing: set it to a Fernet key")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={**OAUTH, "TOKEN_ENCRYPTION_KEY": "not-a-fernet-key-secret-7"})
    assert info.value.problems["TOKEN_ENCRYPTION_KEY"].startswith("must be a Fernet key (44 characters")
    assert "not-a-fernet-key-secret-7" not in str(info.value)
    settings = load_settings(environ={**OAUTH, "TOKEN_ENCRYPTION_KEY": TOKEN_KEY})
    assert settings.token_encryption_key.get() == TOKEN_KEY
    assert TOKEN_KEY not in repr(settings) and TOKEN_KEY in settings.secrets()
    # One workspace (SLACK_BOT_TOKEN) keeps no token in the database: no key needed.
    assert load_settings(environ={}).token_encryption_key is None


def test_admins_are_scoped_to_their_workspace():
    settings = load_settings(environ={**OAUTH, "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
                                      "ADMIN_USERS": "T0AAA:U0ONE, T0BBB:W0TWO"})
    assert settings.admins_in("T0AAA") == frozenset({"U0ONE"})
    assert settings.admins_in("T0BBB") == frozenset({"W0TWO"})
    assert settings.admins_in("T0CCC") == frozenset()
    with pytest.raises(ConfigError) as info:
        load_settings(environ={**OAUTH, "TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "ADMIN_USERS": "T0AAA:U0ONE,U0BARE"})
    assert info.value.problems == {
        "ADMIN_USERS": "must name each admin's workspace as T...:U... when the app installs into many workspaces "
        "(SLACK_CLIENT_ID is set): an admin of one workspace is no admin of another; got U0BARE"
    }
    # One workspace: a bare U... is an admin of it, whatever its id.
    single = load_settings(environ={"ADMIN_USERS": "U0BARE,T0AAA:U0ONE"})
    assert single.admins_in("T0AAA") == frozenset({"U0BARE", "U0ONE"})
    assert single.admins_in("T0ZZZ") == frozenset({"U0BARE"})
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"ADMIN_USERS": "t0aaa:U0ONE,T0AAA:,T0AAA:U0ONE:U0X"})
    assert info.value.problems == {
        "ADMIN_USERS": "must be Slack user IDs scoped to their workspace, T...:U... (or a bare U... or W... with one "
        "workspace), comma-separated; got T0AAA:, T0AAA:U0ONE:U0X, t0aaa:U0ONE"
    }
