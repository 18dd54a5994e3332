"""The "Speak in my voice" message shortcut: the message, read aloud in one of the presser's voices, posted as one
clip in its thread. One voice: queued at once; several: a small picker first. Listeners store and ack; the speech
runs on a worker (VoiceService.say_job)."""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.readaloud import speakable
from bot.store.jobs import Refused
from bot.store.library import VoiceRecord
from bot.tencent.tts import MAX_LONG_TEXT
from bot.ui.speak_blocks import (
    NO_VOICE,
    NOTHING_TO_READ,
    SPEAK_CALLBACK,
    SPEAK_SHORTCUT,
    VOICE_BLOCK,
    build_voice_picker,
    on_it,
    read_voice_picker,
    too_long,
)
from bot.work.quotas import Quotas
from handlers.services import Services

log = logging.getLogger(__name__)


async def handle_speak_shortcut(
    ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    """"Speak in my voice" on a message: read it in the presser's voice (or let them pick one of several)."""
    await ack()
    services = Services.of(context)
    team, user = _team(body), (body.get("user") or {}).get("id")
    channel = (body.get("channel") or {}).get("id")
    message = body.get("message") or {}
    thread_ts = message.get("thread_ts") or message.get("ts") or body.get("message_ts")
    if not user or not channel:
        return
    mine = await services.library.listed(team, user)
    if not mine:
        await _tell(services, body, NO_VOICE)
        return
    text = speakable(str(message.get("text") or ""), _names(body))
    if not text:
        await _tell(services, body, NOTHING_TO_READ)
        return
    if len(text) > MAX_LONG_TEXT:
        await _tell(services, body, too_long(len(text)))
        return
    if len(mine) > 1:
        # Told now rather than after picking a voice (the submission is checked again as it is stored).
        refusal = await services.quotas.say_refusal(team, user)
        if refusal is not None:
            await _tell(services, body, refusal.text)
            return
        try:
            await client.views_open(trigger_id=body["trigger_id"], view=build_voice_picker(mine, channel, thread_ts,
                                                                                           text))
        except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
            log.warning("views.open failed: %s", exc)
            await _tell(services, body, "I couldn't open the voice picker (Slack took too long). Please use Speak "
                                        "in my voice again.")
        return
    voice = await services.voices.reachable(team, user, mine[0].voice_id)
    if voice is None:  # forgotten meanwhile
        await _tell(services, body, NO_VOICE)
        return
    refused = await _speak(services, body, voice, user, text, channel, thread_ts)
    if refused is not None:
        await _tell(services, body, refused)


async def handle_speak_submission(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
) -> None:
    """The voice picker: queue the speech in the chosen voice (the presser's own, or any for an admin)."""
    values, errors = read_voice_picker(view)
    if errors:
        await ack(response_action="errors", errors=errors)
        return
    services = Services.of(context)
    team, user = _team(body), (body.get("user") or {}).get("id")
    voice = await services.voices.reachable(team, user, values["voice_id"])
    if voice is None:
        await ack(response_action="errors", errors={VOICE_BLOCK: "Only the person who cloned it can use this voice."})
        return
    refused = await _speak(services, body, voice, user, values["text"], values["channel"], values["thread_ts"])
    if refused is not None:
        await ack(response_action="errors", errors={VOICE_BLOCK: refused})
        return
    await ack()


def register(app: AsyncApp) -> None:
    """Listen for the message shortcut and its voice picker."""
    app.shortcut(SPEAK_SHORTCUT)(handle_speak_shortcut)
    app.view(SPEAK_CALLBACK)(handle_speak_submission)


# -- helpers ---------------------------------------------------------------------------------------------


async def _speak(
    services: Services, body: dict[str, Any], voice: VoiceRecord, user: str, text: str, channel: str,
    thread_ts: str | None,
) -> str | None:
    """Store the speech as a job (bot.work.voice_service) and tell the presser it is coming; or the fair-use
    limit's sentence when it is refused (checked in the transaction that would store it)."""
    admit = services.quotas.admission(Quotas.SAY, _team(body), user)
    try:
        await services.voices.request_say(voice, user, text, channel=channel, thread_ts=thread_ts, admit=admit)
    except Refused as refused:
        return str(refused.refusal)
    await _tell(services, body, on_it(voice), channel, thread_ts)
    return None


async def _tell(
    services: Services, body: dict[str, Any], text: str, channel: str | None = None, thread_ts: str | None = None
) -> None:
    """A note only the presser sees, in the message's thread."""
    message = body.get("message") or {}
    channel = channel or (body.get("channel") or {}).get("id")
    thread_ts = thread_ts or message.get("thread_ts") or message.get("ts")
    user = (body.get("user") or {}).get("id")
    if channel and user:
        await services.outbox.put_ephemeral(
            f"speak:{body.get('trigger_id') or secrets.token_hex(8)}", channel=channel, user=user, text=text,
            thread_ts=thread_ts, team_id=_team(body) or None,
        )


def _names(body: dict[str, Any]) -> dict[str, str]:
    """Names the payload itself gives (the presser's, the author's profile): a mention of anyone else is read as
    "someone" (looking people up would need users:read and a call per mention)."""
    names: dict[str, str] = {}
    presser = body.get("user") or {}
    handle = presser.get("name") or presser.get("username")
    if presser.get("id") and handle:
        names[presser["id"]] = re.sub(r"[._]+", " ", str(handle)).strip()
    message = body.get("message") or {}
    profile = message.get("user_profile") or {}
    author = profile.get("display_name") or profile.get("real_name")
    if message.get("user") and author:
        names[message["user"]] = str(author)
    return {user: name for user, name in names.items() if name}


def _team(body: dict[str, Any]) -> str:
    return str((body.get("team") or {}).get("id") or body.get("team_id") or "")
