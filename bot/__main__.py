"""Command line: `python -m bot [run|clone|check|say|voices|audit|demo|standins]` (also installed as `voiceclone-bot`).

Everything printed here is for the operator at a terminal: plain text, one message per failure, no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from bot.cli import voices_cli as cli_voices
from bot.errors import ApiError, BotError, ConfigError, InputError, OptionError, StartupError
from bot.logs import configure_logging
from bot.settings import (
    TRTC_KEYS,
    Settings,
    load_settings,
    read_environment,
    run_requirements,
    slack_configured,
)
from bot.ui.texts import config_report, describe_for_operator
from bot.vocabulary import MODELS, check_language, check_model

EXIT_OK, EXIT_API, EXIT_INPUT, EXIT_STARTUP, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_ENV_FILE = ".env"
# How much lower a --role worker process runs than the web replicas it shares a machine with (nice(2)).
WORKER_NICENESS = 10

EXIT_CODES = """exit status:
  0    done (the bot stopped on SIGTERM/SIGINT, or the command succeeded)
  1    Tencent Cloud refused the clone (clone)
  2    bad input or configuration: the message names every problem (check: the recording is not usable)
  3    the bot could not start: token refused, Slack unreachable, port in use, database not writable
  130  interrupted before the bot was running"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="voiceclone-bot",
        description="A Slack app that turns a voice recording into a Tencent Cloud TRTC cloned voice. "
        "With no command: run the bot, unless there is no .env file and no SLACK_* variable at all, "
        "in which case the offline demo runs.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--env-file",
        default=None,
        help="settings file read before the environment, which wins (default: $VOICECLONE_ENV_FILE, else .env "
        "in the current directory; scripts/run sets VOICECLONE_ENV_FILE to the repository's .env)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the Slack bot (Socket Mode when SLACK_APP_TOKEN is set, else HTTP)",
        description="Run the Slack bot. Socket Mode when SLACK_APP_TOKEN is set and --http is not given; "
        "otherwise an HTTP server with POST /slack/events and GET /healthz.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--http", action="store_true", help="serve HTTP even when SLACK_APP_TOKEN is set")
    run.add_argument("--port", type=int, default=None, help="HTTP port (default: PORT, else 3000)")
    run.add_argument("--host", default="0.0.0.0", help="HTTP interface to bind (default 0.0.0.0)")
    run.add_argument(
        "--role",
        choices=("all", "web", "worker"),
        default="all",
        help="all (default): everything in this process; web: verify, store and acknowledge Slack requests only; "
        "worker: downloads, audio, API calls and Slack answers, serving only /healthz and /metrics. "
        "web and worker need DATABASE_URL=postgresql://... shared by every replica",
    )

    clone = commands.add_parser(
        "clone",
        help="clone a voice from a local recording and print its VoiceId",
        description="Convert FILE to a 16 kHz mono WAV (first 3 minutes at most) and clone it. Prints the "
        "VoiceId as the last line of stdout. FILE is relative to the current directory.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    clone.add_argument("file", type=Path, help="any audio or video file (m4a, mp3, ogg, webm, flac, wav, mp4...)")
    clone.add_argument("--name", help="voice name: letters, digits, _ (default: from the file name)")
    clone.add_argument("--text", help="what the recording says (dropped if the recording is trimmed)")
    clone.add_argument("--model", help=f"one of {', '.join(MODELS)} (default: VOICECLONE_MODEL, else the API's)")
    clone.add_argument("--language", help="ISO 639-1 code such as en, zh (default: VOICECLONE_LANGUAGE, else auto)")
    clone.add_argument("--denoise", choices=("on", "off"), help="background-noise reduction (default: when noisy)")

    check = commands.add_parser(
        "check",
        help="print the report card of a recording (what would be sent, what is wrong) without cloning",
        description="Analyse FILE as the bot would before cloning it and print the report card. Calls no API "
        "and needs no settings. Exit 0 when the recording is usable, 2 when it is not.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", type=Path, help="any audio or video file (m4a, mp3, ogg, webm, flac, wav, mp4...)")
    check.add_argument("--denoise", choices=("on", "off"), help="background-noise reduction (default: when noisy)")

    commands.add_parser(
        "demo",
        help="run the bot offline against built-in stand-ins of Slack and TRTC and print the thread",
        description="Needs no credentials and no network: starts local stand-ins of Slack and of the TRTC "
        "API, shares a generated speech clip and prints the thread as a user would see it.",
    )
    audit = commands.add_parser(
        "audit",
        help="print the consent audit: one line per clone attempt (who consented, how, what was sent)",
        description="Prints the append-only consent audit from the bot's database (DATABASE_URL): time, workspace, "
        "the consenting user and how (button, form, attested, operator), file, SHA-256 and seconds of the audio "
        "sent, VoiceName, VoiceId, RequestId and outcome.",
    )
    audit.add_argument("--since", metavar="DATE", help="only lines from this date on (YYYY-MM-DD, UTC, or ISO 8601)")
    audit.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json lines")
    audit.add_argument(
        "--team", metavar="T...", help="only this workspace's lines (its VoiceIds and RequestIds stay after it "
        "uninstalls the app, for Tencent support)",
    )
    cli_voices.add_parsers(commands)
    standins = commands.add_parser(
        "standins",
        help="start local stand-ins of Slack and TRTC and print the settings to use with them",
        description="Starts the Slack and TRTC stand-ins on loopback until Ctrl-C or SIGTERM, and prints the "
        "settings (KEY=VALUE lines) that aim `clone` or the bot at them. With --write FILE the same lines are "
        "written to FILE, for `--env-file FILE`.",
    )
    standins.add_argument("--write", type=Path, metavar="FILE", help="also write the settings to FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.env_file is not None and not Path(args.env_file).is_file():
        print(f"No settings file {args.env_file} (from --env-file): check the path.", file=sys.stderr)
        return EXIT_INPUT
    # scripts/run names the repository's .env this way; unlike --env-file, it may not exist (fresh clone: demo).
    env_file = args.env_file or os.environ.get("VOICECLONE_ENV_FILE") or DEFAULT_ENV_FILE
    command = args.command
    try:
        if command is None:
            # Once an operator has started configuring (a .env, or any SLACK_* variable), never fall back to the
            # demo: a typo must end in a message naming it, not in a demo that exits 0.
            if not Path(env_file).is_file() and not slack_configured(read_environment(None)):
                print("No .env here and no SLACK_* settings (see README): running the offline demo.\n", flush=True)
                command = "demo"
            else:
                command = "run"
        if command == "clone":
            return _clone(args, env_file)
        if command == "check":
            return _check(args)
        if command == "audit":
            return _audit(args, env_file)
        if command == "say":
            return cli_voices.say(args, env_file)
        if command == "voices":
            return cli_voices.voices(args, env_file)
        if command == "demo":
            from bot.testing.demo import run_demo

            return run_demo()
        if command == "standins":
            from bot.testing.server import serve_standins

            return serve_standins(write=args.write)
        return _run(args, env_file)
    except ConfigError as exc:
        source = str(Path(env_file).resolve()) if Path(env_file).is_file() else None
        print(config_report(exc, source), file=sys.stderr)
        return EXIT_INPUT
    except StartupError as exc:
        print(f"voiceclone-bot could not start: {exc.reason}", file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _logging(settings: Settings, level: str | None = None) -> None:
    configure_logging(level or settings.log_level, settings.secrets(), fmt=settings.log_format)


def _denoise(args: argparse.Namespace) -> bool | None:
    return None if args.denoise is None else args.denoise == "on"


def _check(args: argparse.Namespace) -> int:
    """The report card of a recording, as plain text; exit 0 usable, 2 not."""
    from bot.voice.audio import prepare_audio_sync
    from bot.voice.report_card import report_lines

    if not args.file.is_file():
        print(f"No such file: {args.file} (looked in {Path.cwd()})", file=sys.stderr)
        return EXIT_INPUT
    try:
        prepared = prepare_audio_sync(args.file, denoise=_denoise(args))
    except InputError as exc:
        print(f"{args.file.name}: not usable")
        print(describe_for_operator(exc))
        return EXIT_INPUT
    except OSError as exc:
        print(f"Cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INPUT
    summary, *warnings = report_lines(prepared.report, option_hint="--denoise on")
    print(f"{args.file.name}: usable")  # the card below says how much would be sent: one figure, not two
    print(summary)
    for warning in warnings:
        print(f"Warning: {warning}")
    return EXIT_OK


def _audit(args: argparse.Namespace, env_file: str) -> int:
    """Print the consent audit."""
    from datetime import UTC, datetime

    from bot.store.audit import Audit, render
    from bot.store.database import missing_database, open_database

    settings = load_settings(env_file=env_file)
    since = None
    if args.since:
        try:
            when = datetime.fromisoformat(args.since)
        except ValueError:
            raise ConfigError({"--since": f"must be a date such as 2026-11-01, got {args.since!r}"}) from None
        since = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if args.team is not None and not (args.team[:1] == "T" and args.team[1:].isalnum() and args.team.isupper()):
        raise ConfigError({"--team": f"must be a Slack workspace ID such as T0123ABCD, got {args.team!r}"})
    if (missing := missing_database(settings.database_url)) is not None:
        print(f"No database at {missing} (DATABASE_URL): nothing was cloned there.", file=sys.stderr)
        return EXIT_INPUT
    db = open_database(settings.database_url)
    try:
        sys.stdout.write(render(Audit(db).entries(since, args.team), args.format))
    finally:
        db.close()
    return EXIT_OK


def _audit_operator_clone(settings: Settings, file: Path, prompt: Any, request: Any, outcome: str, **done: Any) -> None:
    """The operator's own clone is a consent act too: it goes into the same audit as the bot's."""
    import getpass
    import hashlib

    from bot.store.audit import OPERATOR, Audit, AuditEntry
    from bot.store.database import open_database

    db = open_database(settings.database_url)
    try:
        Audit(db).record_sync(
            AuditEntry(
                consent=OPERATOR, outcome=outcome, user_id=getpass.getuser(), file_name=file.name,
                audio_sha256=hashlib.sha256(prompt.wav).hexdigest(), seconds=prompt.seconds,
                voice_name=request.name, **done,
            )
        )
    finally:
        db.close()


def _clone(args: argparse.Namespace, env_file: str) -> int:
    from bot.tencent.voiceclone import VoiceCloneClient, default_voice_name
    from bot.voice.pipeline import CloneRequest, clone_prompt, prepare_prompt

    settings = load_settings(TRTC_KEYS, env_file=env_file)
    _logging(settings, "ERROR")
    try:
        # The same checks as Slack's `lang=` and `model=`, so a value refused there is refused here.
        language = check_language(args.language, "--language") if args.language else None
        model = check_model(args.model, "--model") if args.model else None
    except OptionError as exc:
        print(describe_for_operator(exc), file=sys.stderr)
        return EXIT_INPUT
    if not args.file.is_file():
        print(f"No such file: {args.file} (looked in {Path.cwd()})", file=sys.stderr)
        return EXIT_INPUT
    request = CloneRequest(
        name=args.name or default_voice_name(args.file.name),
        text=args.text,
        model=model,
        language=language,
        denoise=_denoise(args),
    )

    async def clone() -> int:
        prompt = await prepare_prompt(args.file, request)
        async with VoiceCloneClient(settings) as client:
            try:
                result = await clone_prompt(prompt, request, client)
            except ApiError as exc:
                _audit_operator_clone(settings, args.file, prompt, request, exc.code, request_id=exc.request_id)
                raise
        _audit_operator_clone(
            settings, args.file, prompt, request, "cloned", voice_id=result.voice_id, request_id=result.request_id
        )
        from bot.voice.report_card import report_lines

        if result.report is not None:
            summary, *warnings = report_lines(result.report, option_hint="--denoise on")
            print(summary)
            for warning in warnings:
                print(f"Warning: {warning}")
        if result.text_dropped:
            print("Note: the transcript was not sent, because it no longer matches the trimmed audio.")
        print(f"Voice name: {result.name}; RequestId: {result.request_id}")
        print(result.voice_id)
        return EXIT_OK

    try:
        return asyncio.run(clone())
    except ApiError as exc:
        print(describe_for_operator(exc), file=sys.stderr)
        return EXIT_API
    except InputError as exc:
        print(describe_for_operator(exc), file=sys.stderr)
        return EXIT_INPUT
    except BotError as exc:
        print(describe_for_operator(exc), file=sys.stderr)
        return EXIT_API


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop's event loop where it is installed (uvicorn[standard] brings it on Linux and macOS): in a burst of
    Slack requests each acknowledgement spends a good part of its time in the loop itself."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _run(args: argparse.Namespace, env_file: str) -> int:
    from bot.serve import serve_http, serve_socket

    # Whatever the bot writes (database, journals, recordings, speech) is readable by its own user only.
    os.umask(0o077)
    env = read_environment(env_file)
    role = getattr(args, "role", "all")
    socket_mode, required = run_requirements(env, http=getattr(args, "http", False))
    if role == "worker":
        # A worker takes no Slack requests: no signing secret, no Socket Mode connection.
        socket_mode = False
        required = tuple(k for k in required if k not in ("SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"))
        # Conversions yield the cores to a web replica beside it on the machine: Slack wants its answer within 3 s,
        # a clone can wait a few milliseconds. (Children, ffmpeg included, inherit it.)
        with contextlib.suppress(OSError):
            os.nice(WORKER_NICENESS)
    settings = load_settings(required, environ=env)
    from bot.store.database import serves_many_processes

    if role != "all" and not serves_many_processes(settings.database_url):
        raise ConfigError({"--role": f"{role} needs DATABASE_URL=postgresql://... shared by every replica "
                           "(SQLite serves one process: use --role all)"})
    _logging(settings)
    host = getattr(args, "host", "0.0.0.0")
    port = getattr(args, "port", None)
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError({"--port": f"must be between 1 and 65535, got {port}"})
    serve = serve_socket(settings, host=host, port=port, role=role, settle=True) if socket_mode else serve_http(
        settings, host=host, port=port, role=role, settle=True
    )
    _event_loop_runner()(serve)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
