"""`python -m bot clone` end to end against the TRTC stand-in."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys

import pytest
from support.expected_text import OPERATOR_API_SENTENCES
from support.harness import APP_ID, SECRET_ID, SECRET_KEY

from bot.__main__ import main
from bot.testing.standin_trtc import TrtcStandIn
from bot.ui.texts import API_MESSAGES

TRTC_ENV_KEYS = ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TRTC_SDK_APP_ID", "TRTC_ENDPOINT")


@pytest.fixture(scope="module")
def trtc():
    with TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID) as standin:
        yield standin


@pytest.fixture
def env(trtc, monkeypatch, tmp_path):
    trtc.reset()
    monkeypatch.chdir(tmp_path)  # no stray .env
    values = {
        "TENCENTCLOUD_SECRET_ID": SECRET_ID,
        "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
        "TRTC_SDK_APP_ID": str(APP_ID),
        "TRTC_ENDPOINT": trtc.url,
        "TRTC_TIMEOUT": "5",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a separate process."""
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_clone_prints_the_voice_id_last(env, trtc, media):
    memo = media.speech(14, ".m4a", "-c:a", "aac", "-b:a", "48k")
    result = run_cli("clone", str(memo), "--name", "alice", "--language", "en", env=env)
    assert result.returncode == 0, result.stderr
    voice_id = result.stdout.strip().splitlines()[-1]
    [request] = trtc.requests
    assert voice_id.startswith("alice_") and request.voice_name == "alice" and request.language == "en"
    assert request.sample_rate == 16000 and request.channels == 1
    assert "Traceback" not in result.stderr


def test_name_defaults_to_the_file_name(env, trtc, media, tmp_path, capsys):
    memo = tmp_path / "Voice Memo 12.m4a"
    memo.write_bytes(media.speech(15, ".m4a", "-c:a", "aac", "-b:a", "48k").read_bytes())
    assert main(["clone", str(memo)]) == 0
    assert trtc.requests[0].voice_name == "Voice_Memo_12"
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("Voice_Memo_12_")


def test_long_recording_is_trimmed_and_transcript_dropped(env, trtc, media, capsys):
    long = media.speech(200, ".mp3", "-c:a", "libmp3lame", "-b:a", "32k")
    assert main(["clone", str(long), "--name", "long", "--text", "Hello there."]) == 0
    out = capsys.readouterr().out
    # 200 s of speech: the best 180 s window at most is sent, and the transcript (of all 200 s) is not.
    assert "best part" in out and "transcript was not sent" in out
    [request] = trtc.requests
    assert 150 < request.audio_seconds <= 180.05
    assert not request.prompt_text


def test_transcript_is_sent_when_not_trimmed(env, trtc, media):
    memo = media.speech(15, ".wav")
    assert main(["clone", str(memo), "--name", "t", "--text", "Hello there."]) == 0
    assert trtc.requests[0].prompt_text == "Hello there."


REFUSALS = {
    "too_short": (lambda m, d: m.speech(5, ".wav"), "5 seconds"),
    "silence": (lambda m, d: _signal(d / "silence.wav", "anullsrc=r=16000:cl=mono"), "voice"),
    "not_audio": (lambda m, d: _bytes(d / "notes.m4a", b"this is not audio at all " * 100), "audio"),
    "empty": (lambda m, d: _bytes(d / "empty.mp3", b""), "audio"),
}


def _signal(path, source):
    from support.media import make_signal

    return make_signal(path, source, 15)


def _bytes(path, content):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_input_is_refused_without_calling_the_api(env, trtc, media, tmp_path, capsys, case):
    build, expected = REFUSALS[case]
    path = build(media, tmp_path)
    assert main(["clone", str(path), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert trtc.requests == []


def test_refusal_messages_differ(env, trtc, media, tmp_path, capsys):
    seen = set()
    cases = [c for c in sorted(REFUSALS) if c != "empty"]  # an empty file is "not audio" too
    for case in cases:
        build, _ = REFUSALS[case]
        main(["clone", str(build(media, tmp_path)), "--name", "x"])
        seen.add(capsys.readouterr().err)
    assert len(seen) == len(cases)


def test_bad_name_is_refused_before_decoding(env, trtc, media, capsys):
    assert main(["clone", str(media.speech(15, ".wav")), "--name", "not ok!"]) == 2
    assert "letters" in capsys.readouterr().err.lower()
    assert trtc.requests == []


@pytest.mark.parametrize("code", sorted(API_MESSAGES))
def test_every_api_error_prints_its_message_and_request_id(env, trtc, media, capsys, code):
    trtc.fail_next(code, times=10)
    assert main(["clone", str(media.speech(15, ".wav")), "--name", "x"]) == 1
    err = capsys.readouterr().err.strip()
    request_id = trtc.requests[-1].request_id
    assert request_id
    assert err == f"{OPERATOR_API_SENTENCES[code]} (RequestId: {request_id})"


def test_api_messages_are_distinct():
    assert len(set(API_MESSAGES.values())) == len(API_MESSAGES)


def test_missing_config_names_every_key(monkeypatch, tmp_path, media):
    monkeypatch.chdir(tmp_path)
    for key in TRTC_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    result = run_cli("clone", str(media.speech(15, ".wav")), env={k: "" for k in TRTC_ENV_KEYS})
    assert result.returncode == 2
    for key in ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TRTC_SDK_APP_ID"):
        assert key in result.stderr
    assert "Traceback" not in result.stderr


def test_help_documents_every_command():
    result = subprocess.run([sys.executable, "-m", "bot", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("run", "clone", "demo"):
        assert command in result.stdout
    clone_help = subprocess.run([sys.executable, "-m", "bot", "clone", "--help"], capture_output=True, text=True)
    assert "--name" in clone_help.stdout and "--language" in clone_help.stdout


def test_the_operators_clone_is_audited_and_the_audit_command_prints_it(env, trtc, media, tmp_path):
    memo = media.speech(14, ".wav")
    assert run_cli("clone", str(memo), "--name", "opvoice", env=env).returncode == 0
    trtc.fail_next("InvalidParameter.AudioPrompt")
    assert run_cli("clone", str(memo), "--name", "opvoice2", env=env).returncode == 1
    result = run_cli("audit", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["consent"] for line in lines] == ["operator", "operator"]
    assert [line["outcome"] for line in lines] == ["cloned", "InvalidParameter.AudioPrompt"]
    assert lines[0]["voice_name"] == "opvoice" and lines[0]["voice_id"].startswith("opvoice_")
    assert lines[1]["voice_id"] is None and lines[1]["request_id"] == trtc.requests[1].request_id
    assert lines[0]["user_id"] == getpass.getuser() and lines[0]["file_name"] == memo.name
    assert len(lines[0]["audio_sha256"]) == 64 and 10 < lines[0]["seconds"] <= 14
    csv_out = run_cli("audit", env=env).stdout.splitlines()
    assert csv_out[0].startswith("at,team_id,user_id,consent") and len(csv_out) == 3
    assert run_cli("audit", "--since", "2999-01-01", env=env).stdout.splitlines() == [csv_out[0]]
    bad = run_cli("audit", "--since", "yesterday", env=env)
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr
    # The operator's clones belong to no workspace: a workspace's audit does not list them.
    assert run_cli("audit", "--team", "T0SOMEONE", env=env).stdout.splitlines() == [csv_out[0]]
    bad = run_cli("audit", "--team", "someone", env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "  --team must be a Slack workspace ID such as T0123ABCD, got 'someone'" in bad.stderr.splitlines()
