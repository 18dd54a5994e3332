"""`python -m bot standins`: the Slack and TRTC stand-ins on loopback, for trying `clone` and the bot locally.

Prints the settings that aim the bot at them; lines typed on stdin (a file path and options) are shared with
the bot in a channel, and the bot's answers are printed as plain text. Runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import mimetypes
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from bot.testing import bot_environ
from bot.testing.standin_slack import SlackStandIn
from bot.testing.standin_trtc import TrtcStandIn
from bot.ui.texts import plain_text

# The stand-ins' own credentials: they open nothing but these loopback servers.
BOT_TOKEN = "xoxb-standin-local-bot-token"
APP_TOKEN = "xapp-standin-local-app-token"
SIGNING_SECRET = "standin-local-signing-secret"
SECRET_ID = "AKID-standin-local"
SECRET_KEY = "standin-local-secret-key"
APP_ID = 1400000001
CHANNEL = "C0LOCAL"


def standin_settings(slack: SlackStandIn, trtc: TrtcStandIn) -> dict[str, str]:
    """KEY=VALUE settings for a bot (Socket Mode) or `clone` aimed at these stand-ins."""
    env = bot_environ(slack, trtc, "unused.db", SLACK_APP_TOKEN=slack.app_token)
    # The operator's own DATABASE_URL (or the default) applies: the stand-ins do not own the job store.
    env.pop("DATABASE_URL", None)
    return env


def serve_standins(write: Path | None = None) -> int:
    """Run both stand-ins until SIGTERM/SIGINT; returns the exit status."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with (
            SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN, signing_secret=SIGNING_SECRET) as slack,
            TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID) as trtc,
        ):
            env = standin_settings(slack, trtc)
            lines = [f"{key}={value}" for key, value in env.items()]
            if write is not None:
                header = "# Written by `python -m bot standins`; valid while it runs.\n"
                write.write_text(header + "\n".join(lines) + "\n")
            _print_intro(slack, trtc, lines, write)
            threading.Thread(target=_read_shares, args=(slack, stop), daemon=True).start()
            threading.Thread(target=_echo_answers, args=(slack, stop), daemon=True).start()
            while not stop.wait(0.5):
                pass
            print("Stopping the stand-ins.", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _print_intro(slack: SlackStandIn, trtc: TrtcStandIn, lines: list[str], write: Path | None) -> None:
    env_file = str(write) if write is not None else "standins.env"
    print(f"Slack stand-in: {slack.url}   TRTC stand-in: {trtc.url}   (Ctrl-C stops them)")
    print()
    print("Settings for them (KEY=VALUE, usable as an env file):")
    print("\n".join(lines))
    print()
    if write is None:
        print("Save the lines above as standins.env (or start with --write standins.env), then in another terminal:")
    else:
        print(f"Written to {write}. In another terminal:")
    print(f"  python -m bot --env-file {env_file} clone take.m4a --name alice    clone a file against the stand-in")
    print(f"  python -m bot --env-file {env_file} run                            the bot, in Socket Mode")
    print("With the bot running, type a file path here (options after it: name=alice lang=en) to share it.")
    print(flush=True)


def _read_shares(slack: SlackStandIn, stop: threading.Event) -> None:
    """Each stdin line `PATH [options]` shares PATH in the channel, as a person dropping a file in Slack."""
    for line in sys.stdin:
        if stop.is_set():
            return
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        if not words:
            continue
        path = Path(words[0]).expanduser()
        if not path.is_file():
            print(f"No such file: {path} (looked in {Path.cwd()})", flush=True)
            continue
        mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        file = slack.add_file(path.read_bytes(), path.name, mimetype, path.suffix.lstrip(".") or "bin")
        body = slack.user_message(CHANNEL, files=[file], text=" ".join(words[1:]))
        slack.send_envelope("events_api", body)
        print(f"#local  you: [{path.name}] {' '.join(words[1:])}".rstrip(), flush=True)


def _echo_answers(slack: SlackStandIn, stop: threading.Event) -> None:
    """Print what the bot posts or edits, as plain text."""
    shown = 0
    while not stop.is_set():
        slack.wait_for(lambda seen=shown: len(slack.calls) > seen or stop.is_set(), 1.0)
        calls = list(slack.calls)
        for _, method, params in calls[shown:]:
            if method in ("chat.postMessage", "chat.update") and params.get("text"):
                print(f"#local  voiceclone: {plain_text(str(params['text']))}", flush=True)
        shown = len(calls)
