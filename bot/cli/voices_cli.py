"""`python -m bot say VOICE_ID "text" -o out.mp3` and `python -m bot voices [--user U]`: the voice library from a
terminal (operator use: no owner check; the library is read from DATABASE_URL)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bot.errors import ApiError, InputError
from bot.settings import load_settings
from bot.tencent.tts import SpeechParamError, TextToSpeechClient, Voice
from bot.ui.texts import describe_for_operator

EXIT_OK, EXIT_API, EXIT_INPUT = 0, 1, 2


def add_parsers(commands: Any) -> None:
    """Register `say` and `voices` on the main parser's sub-parsers."""
    say = commands.add_parser(
        "say", help="make a cloned voice speak: write the audio to a file",
        description="Speak TEXT in the cloned voice VOICE_ID with TRTC TextToSpeech and write the audio to -o "
        "(mp3 unless the name ends in .wav or .pcm). Prints the file, its length and the RequestId.",
    )
    say.add_argument("voice_id", help="a VoiceId, e.g. from `python -m bot voices`")
    say.add_argument("text", help="1 to 255 characters")
    say.add_argument("-o", "--output", type=Path, default=Path("out.mp3"), help="where to write (default out.mp3)")
    say.add_argument("--speed", type=float, default=1.0, help="0.5 to 2.0 (default 1.0)")
    say.add_argument("--volume", type=float, default=1.0, help="above 0, at most 10 (default 1)")
    say.add_argument("--pitch", type=int, default=0, help="-12 to 12 (default 0)")
    say.add_argument("--sample-rate", type=int, default=24000, choices=(16000, 24000))
    voices = commands.add_parser(
        "voices", help="list the voices the bot has cloned (its own library: Tencent has no list API)",
        description="Prints one line per voice in the bot's library (DATABASE_URL): VoiceId, name, label, owner, "
        "workspace, created, file, seconds, model, language. --json for JSON lines.",
    )
    voices.add_argument("--user", help="only this Slack user's voices (U...)")
    voices.add_argument("--json", action="store_true", help="one JSON object per line")


def say(args: argparse.Namespace, env_file: str) -> int:
    """Speak and write the file; exit 1 when Tencent refuses, 2 for bad input."""
    settings = load_settings(env_file=env_file)
    suffix = args.output.suffix.lower().lstrip(".")
    fmt = suffix if suffix in ("wav", "pcm") else "mp3"

    async def speak() -> Any:
        client = TextToSpeechClient(settings)
        try:
            voice = Voice(args.voice_id, args.speed, args.volume, args.pitch)
            return await client.speak(args.text, voice, fmt=fmt, sample_rate=args.sample_rate)
        finally:
            await client.aclose()

    try:
        speech = asyncio.run(speak())
    except SpeechParamError as exc:
        print(f"The {exc.field} must be {exc.allowed} (got {exc.value!r}).", file=sys.stderr)
        return EXIT_INPUT
    except (ApiError, InputError) as exc:
        print(describe_for_operator(exc), file=sys.stderr)
        return EXIT_API if isinstance(exc, ApiError) else EXIT_INPUT
    args.output.write_bytes(speech.audio)
    seconds = f"{speech.duration_ms / 1000:.1f} s" if speech.duration_ms is not None else "unknown length"
    print(f"{args.output} ({fmt}, {speech.sample_rate} Hz, {seconds}); RequestId {speech.request_id}")
    return EXIT_OK


def voices(args: argparse.Namespace, env_file: str) -> int:
    """Print the library."""
    from bot.store.database import missing_database, open_database
    from bot.store.library import VoiceLibrary

    settings = load_settings(env_file=env_file)
    if (missing := missing_database(settings.database_url)) is not None:
        print(f"No database at {missing} (DATABASE_URL): no voices there.", file=sys.stderr)
        return EXIT_INPUT
    db = open_database(settings.database_url)
    try:
        found = asyncio.run(VoiceLibrary(db).listed(None, args.user))
    finally:
        db.close()
    for voice in found:
        if args.json:
            print(json.dumps(voice.to_dict(), ensure_ascii=False))
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(voice.created_at))
        print("\t".join(str(v) if v is not None else "-" for v in (
            voice.voice_id, voice.voice_name, voice.label, voice.owner, voice.team_id or None, when, voice.file_name,
            voice.seconds, voice.model, voice.language)))
    if not found and not args.json:
        print("No voices" + (f" for {args.user}" if args.user else "") + ".", file=sys.stderr)
    return EXIT_OK
