"""The operator's path: every mistake an installer makes ends in one message naming it, a non-zero exit, no
traceback and no secret. Each case runs `python -m bot` as a subprocess with a .env in its working directory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.harness import APP_ID, APP_TOKEN, BOT_TOKEN, SECRET_ID, SECRET_KEY, SIGNING_SECRET, free_port

from bot.testing import bot_environ
from bot.testing.standin_slack import SlackStandIn
from bot.testing.standin_trtc import TrtcStandIn

ROOT = Path(__file__).resolve().parent.parent
OURS = ("SLACK_", "TRTC_", "TENCENTCLOUD_", "VOICECLONE_")
EXIT_INPUT, EXIT_STARTUP = 2, 3


def clean_environ(**extra: str) -> dict[str, str]:
    """The caller's environment without any of the bot's settings, so only the test's .env counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def write_env(folder: Path, values: dict[str, str]) -> None:
    (folder / ".env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))


def bot(folder: Path, *args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    """`python -m bot ARGS` run from `folder`, as an operator runs it; stdout and stderr together."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=folder,
        env=clean_environ(**extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def assert_clean(output: str, *secrets: str) -> None:
    assert "Traceback" not in output, output
    assert "Unclosed" not in output, output
    for secret in secrets:
        assert secret not in output, f"secret printed: {output}"


@pytest.fixture(scope="module")
def standins():
    with (
        SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN, signing_secret=SIGNING_SECRET) as slack,
        TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID) as trtc,
    ):
        yield slack, trtc


@pytest.fixture
def good_env(standins, tmp_path) -> dict[str, str]:
    """A .env that runs the bot in HTTP mode against the stand-ins."""
    slack, trtc = standins
    slack.reset()
    trtc.reset()
    return {**bot_environ(slack, trtc, tmp_path / "jobs.db"), "PORT": str(free_port()), "LOG_LEVEL": "WARNING"}


# -- configuration -----------------------------------------------------------------------------------------


def test_a_mistyped_key_is_named_with_its_nearest_name_and_never_runs_the_demo(tmp_path):
    write_env(tmp_path, {"SLACK_BOT_TOKN": "xoxb-typo-secret-value", "TRTC_SDK_APP_ID": "my-trtc-app"})
    result = bot(tmp_path)
    assert result.returncode == EXIT_INPUT, result.stdout
    out = result.stdout
    assert "demo" not in out.lower()
    assert "SLACK_BOT_TOKN is not a setting of this bot: did you mean SLACK_BOT_TOKEN?" in out
    # Missing keys, the invalid value with what was found, all in the same message.
    assert "SLACK_BOT_TOKEN is missing" in out and "TENCENTCLOUD_SECRET_ID is missing" in out
    assert "TRTC_SDK_APP_ID must be an integer, got 'my-trtc-app'" in out
    assert "admin" not in out, "the reader is the admin"
    assert_clean(out, "xoxb-typo-secret-value")


def test_a_bot_token_of_the_wrong_kind_is_refused_without_printing_it(tmp_path, good_env):
    write_env(tmp_path, {**good_env, "SLACK_BOT_TOKEN": "xoxp-a-user-token-secret"})
    result = bot(tmp_path, "run")
    assert result.returncode == EXIT_INPUT
    assert "SLACK_BOT_TOKEN must start with xoxb-" in result.stdout
    assert_clean(result.stdout, "xoxp-a-user-token-secret", SECRET_KEY)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("LOG_LEVEL", "verbose", "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'verbose'"),
        ("TRTC_REGION", "ap-beijing", "TRTC_REGION must be ap-singapore"),
        ("WORKERS", "lots", "WORKERS must be an integer, got 'lots'"),
        ("VOICECLONE_LANGUAGE", "english", "VOICECLONE_LANGUAGE must be a two-letter ISO 639-1 code"),
    ],
)
def test_an_invalid_setting_is_one_message(tmp_path, good_env, key, value, expected):
    write_env(tmp_path, {**good_env, key: value})
    result = bot(tmp_path)
    assert result.returncode == EXIT_INPUT
    assert expected in result.stdout
    assert len(result.stdout.strip().splitlines()) == 3  # the heading, the problem, what to do
    assert_clean(result.stdout, SECRET_KEY, BOT_TOKEN)


def test_an_empty_env_file_means_run_the_bot_not_the_demo(tmp_path):
    (tmp_path / ".env").write_text("# copied from .env.example, not filled in yet\n")
    result = bot(tmp_path)
    assert result.returncode == EXIT_INPUT
    assert "SLACK_BOT_TOKEN is missing" in result.stdout and "demo" not in result.stdout.lower()


# -- start-up failures ---------------------------------------------------------------------------------------


def test_a_wrong_bot_token_is_one_line(tmp_path, good_env):
    write_env(tmp_path, {**good_env, "SLACK_BOT_TOKEN": "xoxb-wrong-but-well-formed"})
    result = bot(tmp_path)
    assert result.returncode == EXIT_STARTUP
    assert result.stdout.strip().splitlines() == [
        "voiceclone-bot could not start: Slack refused SLACK_BOT_TOKEN (invalid_auth): set it to the Bot User "
        "OAuth Token (xoxb-...) from OAuth & Permissions of this Slack app."
    ]
    assert_clean(result.stdout, "xoxb-wrong-but-well-formed", SECRET_KEY)


def test_slack_unreachable_is_retried_then_one_line(tmp_path, good_env):
    closed = free_port()  # nothing listens here
    write_env(tmp_path, {**good_env, "SLACK_API_URL": f"http://127.0.0.1:{closed}/api/"})
    started = time.monotonic()
    result = bot(tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == EXIT_STARTUP
    *retries, line = result.stdout.strip().splitlines()
    assert "Cannot reach Slack" in line and "SLACK_API_URL" in line and "after 3 retries" in line
    # One warning per retry while it waits (a blip passes), then the one line that ends it.
    assert len(retries) == 3 and all("Slack unreachable" in r and "trying again" in r for r in retries)
    assert 3 < elapsed < 30
    assert_clean(result.stdout, BOT_TOKEN)


def test_a_port_in_use_is_named(tmp_path, good_env):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_env(tmp_path, {**good_env, "PORT": str(port)})
        result = bot(tmp_path, "run")
    assert result.returncode == EXIT_STARTUP
    [line] = result.stdout.strip().splitlines()
    assert f"Port {port} is already in use" in line
    assert_clean(result.stdout, BOT_TOKEN)


def test_a_data_folder_that_cannot_be_made_is_named(tmp_path, good_env):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    write_env(tmp_path, {**good_env, "DATA_DIR": str(blocker / "data")})
    result = bot(tmp_path, "run")
    assert result.returncode == EXIT_STARTUP
    [line] = result.stdout.strip().splitlines()
    assert str(blocker / "data") in line and "DATA_DIR" in line
    assert_clean(result.stdout, BOT_TOKEN)


@pytest.mark.parametrize("where", ["under_a_file", "read_only_folder"])
def test_a_database_that_cannot_be_written_is_named(tmp_path, good_env, where):
    if where == "read_only_folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
        path = folder / "jobs.db"
    else:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where a folder should be")
        path = blocker / "jobs.db"
    write_env(tmp_path, {**good_env, "DATABASE_URL": f"sqlite:///{path}"})
    result = bot(tmp_path, "run")
    assert result.returncode == EXIT_STARTUP
    [line] = result.stdout.strip().splitlines()
    assert str(path) in line and "DATABASE_URL" in line
    assert_clean(result.stdout, BOT_TOKEN)


def test_a_wrong_app_token_stops_socket_mode_at_once(tmp_path, good_env):
    write_env(tmp_path, {**good_env, "SLACK_APP_TOKEN": "xapp-wrong-app-token"})
    started = time.monotonic()
    result = bot(tmp_path, timeout=30)
    assert result.returncode == EXIT_STARTUP
    [line] = result.stdout.strip().splitlines()
    assert "Slack refused SLACK_APP_TOKEN (invalid_auth)" in line
    assert time.monotonic() - started < 15, "no retry loop"
    assert_clean(result.stdout, "xapp-wrong-app-token", BOT_TOKEN)


@pytest.mark.parametrize("method", ["auth.test", "apps.connections.open"])
def test_sigterm_stops_the_bot_while_it_is_connecting(tmp_path, standins, good_env, method):
    slack, _ = standins
    slack.delay_next(method, 120)  # Slack never answers: the bot is stuck connecting
    write_env(tmp_path, {**good_env, "SLACK_APP_TOKEN": APP_TOKEN})
    process = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=clean_environ(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert slack.wait_for(lambda: any(c.method == method for c in slack.delayed_calls), 30), method
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        slack.release_stalls()
    assert process.returncode == 0, output
    assert stopped_in < 5
    assert_clean(output, APP_TOKEN, BOT_TOKEN)


# -- the command line --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--language", "english"), "--language 'english' can't be used: it should be a two-letter ISO 639-1"),
        (("--model", "gpt4"), "--model 'gpt4' can't be used: it should be one of flow_01_turbo"),
    ],
)
def test_clone_checks_options_as_slack_does(tmp_path, good_env, media, args, expected):
    write_env(tmp_path, good_env)
    shutil.copy(media.speech(15, ".wav"), tmp_path / "take.wav")
    result = bot(tmp_path, "clone", "take.wav", *args)
    assert result.returncode == EXIT_INPUT
    assert expected in result.stdout
    assert_clean(result.stdout, SECRET_KEY)


def test_unknown_tencent_codes_keep_their_code_and_request_id(tmp_path, standins, good_env, media):
    _, trtc = standins
    write_env(tmp_path, good_env)
    shutil.copy(media.speech(15, ".wav"), tmp_path / "take.wav")
    trtc.fail_next("FailedOperation.Whatever", times=5)
    result = bot(tmp_path, "clone", "take.wav")
    assert result.returncode == 1
    request_id = trtc.requests[-1].request_id
    assert "FailedOperation.Whatever" in result.stdout and request_id in result.stdout
    assert "`" not in result.stdout and "*" not in result.stdout, "plain text at a terminal"
    assert_clean(result.stdout, SECRET_KEY)


def test_scripts_run_takes_paths_from_where_it_is_run(tmp_path, standins, good_env, media):
    """scripts/run from the folder holding the file; its settings come from the repository's .env."""
    # A copy of the repository's layout whose bootstrap does nothing: the test must not pip-install.
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "run", repo / "scripts" / "run")
    (repo / "scripts" / "bootstrap").write_text("#!/bin/sh\nexit 0\n")
    (repo / "scripts" / "bootstrap").chmod(0o755)
    (repo / ".venv").symlink_to(Path(sys.prefix))
    write_env(repo, good_env)
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    shutil.copy(media.speech(15, ".wav"), recordings / "take.wav")
    result = subprocess.run(
        [str(repo / "scripts" / "run"), "clone", "take.wav", "--name", "from_here"],
        cwd=recordings,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("from_here_")
    assert_clean(result.stdout + result.stderr, SECRET_KEY)


def test_standins_command_lets_clone_run_locally(tmp_path, media):
    env_file = tmp_path / "standins.env"
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "standins", "--write", str(env_file)],
        cwd=tmp_path,
        env=clean_environ(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        intro = []
        for line in process.stdout:  # the stand-ins print their settings once they listen
            intro.append(line)
            if line.startswith("Written to"):
                break
        text = "".join(intro)
        assert "TRTC_ENDPOINT=http://127.0.0.1:" in text and "SLACK_API_URL=http://127.0.0.1:" in text
        shutil.copy(media.speech(15, ".wav"), tmp_path / "take.wav")
        result = bot(tmp_path, "--env-file", str(env_file), "clone", "take.wav", "--name", "local_try")
        assert result.returncode == 0, result.stdout
        assert result.stdout.strip().splitlines()[-1].startswith("local_try_")
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "Traceback" not in rest
