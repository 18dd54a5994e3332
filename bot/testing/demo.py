"""`python -m bot demo`: the whole bot, offline, against built-in stand-ins of Slack and TRTC."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.settings import TRTC_KEYS, load_settings
from bot.testing.driver import InProcessBot, bot_environ
from bot.testing.speech import make_speech, transcript
from bot.testing.standin_slack import SlackStandIn, post_signed
from bot.testing.standin_trtc import TrtcStandIn
from bot.ui.consent_blocks import CONFIRM_ACTION, STATEMENT
from bot.ui.texts import plain_text
from bot.voice.transcript import clip_cues, parse_vtt, write_vtt

CHANNEL = "C0DEMO"
USER = "U0DEMO"
BOT_TOKEN = "xoxb-demo-0000000000-not-a-real-token"
SIGNING_SECRET = "demo-signing-secret"
SECRET_ID = "AKIDdemo"
SECRET_KEY = "demo-secret-key"
APP_ID = 1400000001


def _say(line: str = "") -> None:
    print(line, flush=True)


_REACTIONS = {
    "hourglass_flowing_sand": "hourglass (working)",
    "white_check_mark": "check mark (done)",
    "x": "cross (failed)",
}


def _show(call: tuple[Any, ...]) -> str | None:
    """One Slack Web API call as the user would notice it in the channel, in plain text for a terminal."""
    method, params = call[1], call[2]
    name = str(params.get("name"))
    reaction = _REACTIONS.get(name, name.replace("_", " "))
    if method == "reactions.add":
        return f"  reaction {reaction} added to your message"
    if method == "reactions.remove":
        return f"  reaction {reaction} removed"
    if method == "chat.postMessage":
        return f"  voiceclone (in thread): {plain_text(str(params.get('text')))}"
    if method == "chat.update":
        return f"  voiceclone (edited):    {plain_text(str(params.get('text')))}"
    if method == "files.completeUploadExternal":
        return f"  voiceclone (in thread): a sound file, {_file_title(params)}, with a player"
    return None


def _file_title(params: dict[str, Any]) -> str:
    files = params.get("files")
    if isinstance(files, str):
        try:
            files = json.loads(files)
        except ValueError:
            files = None
    return str((files or [{}])[0].get("title") or "the preview")


def render_blocks(blocks: list[dict[str, Any]]) -> list[str]:
    """Block Kit as plain lines, roughly as Slack shows it (mrkdwn and emoji codes turned into plain text)."""
    lines: list[str] = []
    for block in blocks:
        if "text" in block:
            lines.extend(block["text"]["text"].splitlines())
        for item in block.get("fields", []):
            lines.append(item["text"].replace("\n", ": ", 1))
        for item in block.get("elements", []):
            text = item.get("text", "")
            if isinstance(text, dict):  # a button: its label
                lines.append(f"[{text.get('text', '')}]")
            else:
                lines.append(f"({text})")
    return [plain_text(line) for line in lines]


def run_demo(seconds: float = 22.4) -> int:
    """Run the demo end to end; return 0 when the thread ends with a VoiceId."""
    with (
        tempfile.TemporaryDirectory(prefix="voiceclone-demo-") as tmp,
        SlackStandIn(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as slack,
        TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID) as trtc,
    ):
        environ = bot_environ(slack, trtc, Path(tmp) / "demo.db", LOG_LEVEL="WARNING")
        settings = load_settings(TRTC_KEYS, environ=environ)
        _say("Recording a voice clip in Slack (from the speech shipped with the bot)...")
        clip = make_speech(Path(tmp) / "audio_message.m4a", seconds, codec_args=("-c:a", "aac", "-b:a", "64k"))
        # A clip recorded in Slack carries Slack's own transcript (the sentences of the shipped one it holds whole),
        # which becomes the PromptText and the Language: no `text=` or `lang=` to type.
        words = write_vtt(clip_cues(parse_vtt(transcript().read_text()), 0.0, seconds))
        return asyncio.run(_drive(settings, slack, trtc, clip, words))


async def _drive(settings: Any, slack: SlackStandIn, trtc: TrtcStandIn, clip: Path, words: str) -> int:
    async with InProcessBot(settings) as bot:
        return await _converse(bot.url, slack, trtc, clip, words)


async def _converse(app_url: str, slack: SlackStandIn, trtc: TrtcStandIn, clip: Path, words: str) -> int:
    """Share the clip as a user would, press the consent button when asked, and print the thread."""
    file = slack.add_file(
        clip.read_bytes(), clip.name, "audio/mp4", "m4a", user=USER, subtype="slack_audio", transcript=words
    )
    text = "name=demo_voice"
    body = slack.user_message(CHANNEL, USER, [file], text=text)
    _say(f"\n#demo  you: [a voice clip, {len(clip.read_bytes()) // 1024} KB, transcribed by Slack] {text}")
    started = time.monotonic()
    response = await asyncio.to_thread(post_signed, app_url, body, kind="event", signing_secret=SIGNING_SECRET)
    _say(f"  (Slack got HTTP {response.status_code} in {(time.monotonic() - started) * 1000:.0f} ms)")
    share_ts = body["event"]["ts"]
    shown = 0
    done = False
    pressed = False
    answered_at: float | None = None
    while not done and time.monotonic() - started < 120:
        await asyncio.to_thread(slack.wait_for, lambda seen=shown: len(slack.calls) > seen, 1.0)
        calls = list(slack.calls)
        for call in calls[shown:]:
            line = _show(call)
            if line:
                _say(line)
        shown = len(calls)
        question = None if pressed else _consent_question(slack, share_ts)
        if question is not None:
            # CONSENT=ask: nothing is cloned until the person who shared the file says so. Press as they would.
            _say(f'\n  you press "Clone this voice" under: {plain_text(STATEMENT)}')
            press = slack.press(CHANNEL, question["ts"], CONFIRM_ACTION, user=USER)
            await asyncio.to_thread(post_signed, app_url, press, kind="interactive", signing_secret=SIGNING_SECRET)
            pressed = True
        reactions = slack.reactions(CHANNEL, share_ts)
        answered = any(name in reactions for name in ("white_check_mark", "x"))
        # After the answer the bot uploads a spoken preview in the new voice: wait for it (a few seconds at most).
        previewed = bool(slack.calls_to("files.completeUploadExternal"))
        if answered and answered_at is None:
            answered_at = time.monotonic()
        done = answered and (previewed or time.monotonic() - answered_at > 10)
    for sent in trtc.requests_of("VoiceClone"):
        _say(f"\nTencent Cloud's VoiceClone received {sent.audio_seconds:.1f} s of audio, Language "
             f"{sent.language or '(detect)'}, PromptText: {sent.prompt_text or '(none)'}")  # fmt: skip
    _say("\nThe thread now reads:")
    for message in slack.thread(CHANNEL, share_ts)[1:]:
        _say("  voiceclone:")
        for line in render_blocks(message.get("blocks") or []) or [plain_text(str(message.get("text")))]:
            _say(f"    {line}")
    ok = "white_check_mark" in slack.reactions(CHANNEL, share_ts)
    _say("\nDemo finished: " + ("the voice was cloned." if ok else "the clone failed (see above)."))
    _say("To run it for real, create the Slack app from manifest.yml and fill .env (see README).")
    return 0 if ok else 1


def _consent_question(slack: SlackStandIn, share_ts: str) -> dict[str, Any] | None:
    """The bot's message in the thread that asks for consent, once it is there."""
    for message in slack.thread(CHANNEL, share_ts)[1:]:
        for block in message.get("blocks") or []:
            if any(e.get("action_id") == CONFIRM_ACTION for e in block.get("elements") or []):
                return message
    return None


if __name__ == "__main__":
    sys.exit(run_demo())
