"""Socket Mode end to end: the real `python -m bot` process against the Slack stand-in's WebSocket."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.harness import APP_ID, APP_TOKEN, BOT_TOKEN, SECRET_ID, SECRET_KEY, SIGNING_SECRET, bot_environ

from bot.testing.standin_slack import SlackStandIn
from bot.testing.standin_trtc import TrtcStandIn

CHANNEL = "C0SOCKET"


@pytest.fixture
def running(tmp_path, media):
    with SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN, signing_secret=SIGNING_SECRET) as slack, TrtcStandIn(
        SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID
    ) as trtc:
        env = {**os.environ, **bot_environ(slack, trtc, tmp_path / "jobs.db", SLACK_APP_TOKEN=APP_TOKEN)}
        env.pop("SLACK_SIGNING_SECRET")  # Socket Mode needs none
        process = subprocess.Popen(
            [sys.executable, "-m", "bot"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert slack.wait_for_socket(20), "the bot never opened a Socket Mode connection"
            yield slack, trtc, process
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=30)
            assert BOT_TOKEN not in output and APP_TOKEN not in output
            assert "Traceback" not in output, output


def test_share_over_socket_mode_is_acked_and_answered_once(running, media):
    slack, trtc, _ = running
    speech = media.speech(15, ".m4a", "-c:a", "aac", "-b:a", "48k").read_bytes()
    file = slack.add_file(speech, "audio_message.m4a", "audio/mp4", "m4a", subtype="slack_audio")
    body = slack.user_message(CHANNEL, files=[file], text="name=socket_voice")
    envelope = slack.send_envelope("events_api", body)
    assert slack.wait_for_ack(envelope, 5) is not None
    ts = body["event"]["ts"]
    assert slack.wait_for(lambda: "white_check_mark" in slack.reactions(CHANNEL, ts), 60)
    # Slack redelivers an envelope it thinks was lost: same event, no second clone, no second answer.
    again = slack.redeliver(envelope)
    assert slack.wait_for_ack(again, 5) is not None
    assert len(trtc.requests) == 1 and trtc.requests[0].voice_name == "socket_voice"
    replies = [m for m in slack.thread(CHANNEL, ts) if m["ts"] != ts]
    assert len(replies) == 1 and replies[0]["text"].startswith("Voice cloned: socket_voice_")


def test_clone_help_over_socket_mode(running):
    slack, _, _ = running
    envelope = slack.send_envelope("slash_commands", slack.slash_command(text="help"))
    ack = slack.wait_for_ack(envelope, 3)
    assert ack is not None and "/clone" in str(ack.get("payload"))
