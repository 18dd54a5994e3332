"""Settings: environment then .env, every problem named at once, secrets masked."""

from __future__ import annotations

import pytest

from bot.errors import ConfigError
from bot.settings import TRTC_KEYS, Secret, load_settings, sqlite_path


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
    assert "integer" in problems["TRTC_SDK_APP_ID"]
    assert {"PORT", "VOICECLONE_MODEL", "SLACK_BOT_TOKEN"} <= set(problems)


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
    env_file.write_text("TRTC_REGION=from-file\nTRTC_SDK_APP_ID=7   # a comment\n")
    monkeypatch.setenv("TRTC_REGION", "from-env")
    monkeypatch.delenv("TRTC_SDK_APP_ID", raising=False)
    settings = load_settings(env_file=env_file)
    assert settings.trtc_region == "from-env"
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
        load_settings(environ={"DATABASE_URL": "postgresql://x/y"})
