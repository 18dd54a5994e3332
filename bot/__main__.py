"""Command line: `python -m bot [run|clone|demo]` (also installed as `voiceclone-bot`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.errors import ApiError, BotError, ConfigError, InputError
from bot.logs import configure_logging
from bot.messages import describe
from bot.settings import MODELS, SLACK_HTTP_KEYS, SLACK_SOCKET_KEYS, TRTC_KEYS, Settings, load_settings

EXIT_OK, EXIT_API, EXIT_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="voiceclone-bot",
        description="A Slack app that turns a voice recording into a Tencent Cloud TRTC cloned voice. "
        "With no command: run the bot if Slack credentials are configured, else the offline demo.",
    )
    parser.add_argument("--env-file", default=".env", help="settings file read after the environment (default .env)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the Slack bot (Socket Mode when SLACK_APP_TOKEN is set, else HTTP)",
        description="Run the Slack bot. Socket Mode when SLACK_APP_TOKEN is set and --http is not given; "
        "otherwise an HTTP server with POST /slack/events and GET /healthz.",
    )
    run.add_argument("--http", action="store_true", help="serve HTTP even when SLACK_APP_TOKEN is set")
    run.add_argument("--port", type=int, default=None, help="HTTP port (default: PORT, else 3000)")
    run.add_argument("--host", default="0.0.0.0", help="HTTP interface to bind (default 0.0.0.0)")

    clone = commands.add_parser(
        "clone",
        help="clone a voice from a local recording and print its VoiceId",
        description="Convert FILE to a 16 kHz mono WAV (first 3 minutes at most) and clone it. Prints the "
        "VoiceId as the last line of stdout. Exit status: 0 done, 1 API error, 2 bad input or configuration.",
    )
    clone.add_argument("file", type=Path, help="any audio or video file (m4a, mp3, ogg, webm, flac, wav, mp4...)")
    clone.add_argument("--name", help="voice name: letters, digits, _ (default: from the file name)")
    clone.add_argument("--text", help="what the recording says (dropped if the recording is trimmed)")
    clone.add_argument("--model", choices=MODELS, help="Model (default: VOICECLONE_MODEL, else the API's)")
    clone.add_argument("--language", help="ISO 639-1 code such as en, zh (default: VOICECLONE_LANGUAGE, else auto)")

    commands.add_parser(
        "demo",
        help="run the bot offline against built-in stand-ins of Slack and TRTC and print the thread",
        description="Needs no credentials and no network: starts local stand-ins of Slack and of the TRTC "
        "API, shares a generated speech clip and prints the thread as a user would see it.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    command = args.command
    if command is None:
        settings = _try_settings(args.env_file)
        command = "run" if settings and settings.slack_bot_token else "demo"
        if command == "demo":
            print("No Slack credentials configured (see README): running the offline demo.\n", flush=True)
    try:
        if command == "clone":
            return _clone(args)
        if command == "demo":
            from bot.demo import run_demo

            return run_demo()
        return _run(args)
    except ConfigError as exc:
        print(describe(exc), file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130


def _try_settings(env_file: str) -> Settings | None:
    try:
        return load_settings(env_file=env_file)
    except ConfigError:
        return None


def _clone(args: argparse.Namespace) -> int:
    from bot.pipeline import CloneRequest, clone_recording
    from bot.trtc import VoiceCloneClient, default_voice_name

    settings = load_settings(TRTC_KEYS, env_file=args.env_file)
    configure_logging("ERROR", settings.secrets())
    if not args.file.is_file():
        print(f"No such file: {args.file}", file=sys.stderr)
        return EXIT_INPUT
    request = CloneRequest(
        name=args.name or default_voice_name(args.file.name),
        text=args.text,
        model=args.model,
        language=args.language,
    )

    async def clone() -> int:
        async with VoiceCloneClient(settings) as client:
            result = await clone_recording(args.file, request, client)
        if result.trimmed:
            source = f"{result.source_seconds:.0f} s" if result.source_seconds else "longer"
            print(f"Note: the recording ({source}) was cut to its first {result.seconds:.0f} s.")
        if result.text_dropped:
            print("Note: the transcript was not sent, because it no longer matches the trimmed audio.")
        print(f"Voice name: {result.name}; audio used: {result.seconds:.1f} s; RequestId: {result.request_id}")
        print(result.voice_id)
        return EXIT_OK

    try:
        return asyncio.run(clone())
    except ApiError as exc:
        print(describe(exc), file=sys.stderr)
        return EXIT_API
    except InputError as exc:
        print(describe(exc), file=sys.stderr)
        return EXIT_INPUT
    except BotError as exc:
        print(describe(exc), file=sys.stderr)
        return EXIT_API


def _run(args: argparse.Namespace) -> int:
    from bot.serve import serve_http, serve_socket

    env = load_settings(env_file=args.env_file)
    socket_mode = bool(env.slack_app_token) and not getattr(args, "http", False)
    required = (*TRTC_KEYS, *(SLACK_SOCKET_KEYS if socket_mode else SLACK_HTTP_KEYS))
    settings = load_settings(required, env_file=args.env_file)
    configure_logging(settings.log_level, settings.secrets())
    if socket_mode:
        asyncio.run(serve_socket(settings))
    else:
        asyncio.run(serve_http(settings, host=getattr(args, "host", "0.0.0.0"), port=getattr(args, "port", None)))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
