"""The voice library in Slack: `/clone list|say|rename|forget|forget-me`, the Say something and Rename forms, the
Forget buttons and the App Home tab. Listeners store and ack; speech and views.publish run in the background."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.store.jobs import Refused
from bot.store.library import VoiceRecord
from bot.tencent.tts import MAX_LONG_TEXT, SpeechParamError, Voice, check_long_text, check_speech
from bot.ui.texts import escape
from bot.ui.voice_blocks import (
    FORGET_ACTION,
    FORGET_CONFIRM_ACTION,
    FORGET_ME_ACTION,
    RENAME_ACTION,
    RENAME_CALLBACK,
    SAY_ACTION,
    SAY_CALLBACK,
    build_forget_confirm,
    build_forget_me_confirm,
    build_forgot_me,
    build_forgotten,
    build_rename_modal,
    build_say_modal,
    build_voice_list,
    read_say_form,
)
from bot.work.quotas import Quotas
from handlers.services import Services

log = logging.getLogger(__name__)

COMMANDS = ("list", "say", "rename", "forget", "forget-me")
_OPTION = re.compile(r"(?:^|\s)(speed|volume|pitch)=(\S*)", re.IGNORECASE)


def not_yours(ref: str) -> str:
    """The same answer whether the voice does not exist or is someone else's: nobody learns of others' voices."""
    return f"You have no voice `{escape(ref)}`. `/clone list` shows yours."


def parse_say(rest: str) -> tuple[str, str, dict[str, float]]:
    """`<voice> <text> [speed= volume= pitch=]` -> (voice, text, options); ValueError says what is wrong."""
    parts = rest.strip().split(maxsplit=1)
    if len(parts) < 2:
        raise ValueError("Usage: `/clone say <voice> <text> [speed=1.0 volume=1 pitch=0]`")
    ref, body = parts
    options: dict[str, float] = {}
    for key, value in _OPTION.findall(body):
        try:
            options[key.lower()] = float(value)
        except ValueError:
            raise ValueError(f"`{key}={escape(value)}` is not a number.") from None
    text = _OPTION.sub(" ", body).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1]
    text = text.strip("“”").strip()
    return ref, text, options


async def answer_command(ack: AsyncAck, command: dict[str, Any], text: str, services: Services) -> None:
    """One `/clone` voice subcommand (the caller is `command["user_id"]`); answers are ephemeral."""
    voices, library = services.voices, services.library
    word, _, rest = text.partition(" ")
    word, rest = word.lower(), rest.strip()
    team, user = command.get("team_id"), command.get("user_id")
    if word == "list":
        fallback, blocks = build_voice_list(await library.listed(team or "", user))
        await ack(text=fallback, blocks=blocks)
    elif word == "say":
        try:
            ref, said, options = parse_say(rest)
            pitch = options.get("pitch", 0)
            if pitch != int(pitch):
                raise SpeechParamError("pitch", pitch, "a whole number from -12 to 12")
            spoken = Voice(ref, options.get("speed", 1.0), options.get("volume", 1.0), int(pitch))
            # Counted as the message shortcut and the workflow step count it (spoken in parts, joined).
            said = check_speech(check_long_text(said), spoken, longest=MAX_LONG_TEXT)
        except ValueError as exc:
            await ack(text=str(exc))
            return
        except SpeechParamError as exc:
            await ack(text=f"The {exc.field} must be {exc.allowed}.")
            return
        voice = await voices.reachable(team, user, ref)
        if voice is None:
            await ack(text=not_yours(ref))
            return
        try:
            await voices.request_say(voice, user, said, speed=spoken.speed, volume=spoken.volume,
                                     pitch=spoken.pitch, channel=command.get("channel_id"),
                                     admit=services.quotas.admission(Quotas.SAY, team, user))
        except Refused as refused:
            await ack(text=str(refused.refusal))
            return
        await ack(text=f":speaking_head_in_silhouette: *{escape(voice.title)}* is on it; the clip follows here.")
    elif word == "rename":
        ref, _, label = rest.partition(" ")
        voice = await voices.reachable(team, user, ref) if ref else None
        if not label.strip():
            await ack(text="Usage: `/clone rename <voice> <label>`")
        elif voice is None:
            await ack(text=not_yours(ref))
        else:
            await library.rename(team, voice.voice_id, label)
            await ack(text=f"Renamed `{escape(voice.voice_id)}` to *{escape(' '.join(label.split())[:80])}*.")
    elif word == "forget":
        voice = await voices.reachable(team, user, rest) if rest else None
        if voice is None:
            await ack(text=not_yours(rest) if rest else "Usage: `/clone forget <voice>`")
            return
        fallback, blocks = build_forget_confirm(voice)
        await ack(text=fallback, blocks=blocks)
    else:  # forget-me
        mine = await library.listed(team or "", user)
        fallback, blocks = build_forget_me_confirm(mine)
        await ack(text=fallback, blocks=blocks)


# -- listeners -------------------------------------------------------------------------------------------


async def handle_say_button(
    ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    """The "Say something" button under a voice: its owner gets the form."""
    await ack()
    services = Services.of(context)
    voice, ref = await _voice_for(services, body)
    if voice is None:
        await _tell(services, body, "Only the person who cloned this voice can make it speak.")
        return
    channel, thread = _where(body)
    await _open_modal(services, client, body, build_say_modal(voice, channel, thread))


async def handle_rename_button(
    ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    """The Home tab's "Rename" button: the rename form."""
    await ack()
    services = Services.of(context)
    voice, ref = await _voice_for(services, body)
    if voice is not None:
        await _open_modal(services, client, body, build_rename_modal(voice))


async def handle_forget(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    """The "Forget" button (and its confirmation): the voice leaves the library."""
    await ack()
    services = Services.of(context)
    voice, ref = await _voice_for(services, body)
    user = (body.get("user") or {}).get("id")
    if voice is None:
        await _tell(services, body, not_yours(ref))
        return
    gone = await services.library.forget(_team(body), voice.voice_id)
    if gone is not None:
        await _tell(services, body, build_forgotten(gone))
    if user:
        _republish_home(services, _team(body), user)


async def handle_forget_me(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    """The "Forget me" button: every voice and job of the presser goes."""
    await ack()
    user = (body.get("user") or {}).get("id")
    if not user:
        return
    services = Services.of(context)
    gone, jobs = await services.library.forget_user(_team(body), user)
    log.info("forget-me: %d voice(s) and %d job(s) removed for a user", len(gone), jobs)
    await _tell(services, body, build_forgot_me(gone, jobs))
    _republish_home(services, _team(body), user)


async def handle_say_submission(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
) -> None:
    """The "Say something" form: queue the speech, close the form."""
    values, errors = read_say_form(view)
    if errors:
        await ack(response_action="errors", errors=errors)
        return
    services = Services.of(context)
    voices = services.voices
    user = (body.get("user") or {}).get("id")
    voice = await voices.reachable(_team(body), user, values.get("voice_id") or "")
    if voice is None:
        await ack(response_action="errors", errors={"text": "Only the person who cloned it can use this voice."})
        return
    try:
        await voices.request_say(voice, user, values["text"], speed=values["speed"], volume=values["volume"],
                                 pitch=values["pitch"], channel=values.get("channel"),
                                 thread_ts=values.get("thread_ts"),
                                 admit=services.quotas.admission(Quotas.SAY, _team(body), user))
    except Refused as refused:
        await ack(response_action="errors", errors={"text": str(refused.refusal)})
        return
    await ack()


async def handle_rename_submission(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
) -> None:
    """The rename form: store the label, close the form."""
    services = Services.of(context)
    user = (body.get("user") or {}).get("id")
    voice_id = json.loads(view.get("private_metadata") or "{}").get("voice_id") or ""
    label = str((((view.get("state") or {}).get("values") or {}).get("label") or {}).get("label", {}).get("value")
                or "")
    voice = await services.voices.reachable(_team(body), user, voice_id)
    if voice is None or not label.strip():
        await ack(response_action="errors", errors={"label": "Write a label for one of your voices."})
        return
    await services.library.rename(_team(body), voice.voice_id, label)
    await ack()
    if user:
        _republish_home(services, _team(body), user)


async def handle_home_opened(body: dict[str, Any], context: AsyncBoltContext) -> None:
    """The App Home tab was opened: publish the opener's voices."""
    event = body.get("event") or {}
    if event.get("tab", "home") == "home" and event.get("user"):
        _republish_home(Services.of(context), body.get("team_id"), event["user"])


async def handle_play(ack: AsyncAck) -> None:
    """A clip's play button."""
    await ack()  # a link button: Slack opens the thread; Bolt must still answer 200


def register(app: AsyncApp) -> None:
    """Listen for the library's buttons, forms and the Home tab."""
    app.action(SAY_ACTION)(handle_say_button)
    app.action(RENAME_ACTION)(handle_rename_button)
    app.action(FORGET_ACTION)(handle_forget)
    app.action(FORGET_CONFIRM_ACTION)(handle_forget)
    app.action(FORGET_ME_ACTION)(handle_forget_me)
    app.action(re.compile(r"^voice_play_"))(handle_play)
    app.view(SAY_CALLBACK)(handle_say_submission)
    app.view(RENAME_CALLBACK)(handle_rename_submission)
    app.event("app_home_opened")(handle_home_opened)


# -- helpers ---------------------------------------------------------------------------------------------


async def _tell(services: Services, body: dict[str, Any], text: str) -> None:
    channel, thread = _where(body)
    user = (body.get("user") or {}).get("id")
    if channel and user:
        await services.outbox.put_ephemeral(
            f"voice:{body.get('trigger_id') or id(body)}", channel=channel, user=user, text=text,
            thread_ts=thread, team_id=_team(body),
        )


async def _open_modal(services: Services, client: AsyncWebClient, body: dict[str, Any], view: dict[str, Any]) -> None:
    try:
        await client.views_open(trigger_id=body["trigger_id"], view=view)
    except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
        log.warning("views.open failed: %s", exc)
        await _tell(services, body, "I couldn't open the form (Slack took too long). Please press the button again.")


async def _voice_for(services: Services, body: dict[str, Any]) -> tuple[VoiceRecord | None, str]:
    ref = str((body.get("actions") or [{}])[0].get("value") or "")
    return await services.voices.reachable(_team(body), (body.get("user") or {}).get("id"), ref), ref


def _republish_home(services: Services, team_id: str | None, user: str) -> None:
    # In the background: views.publish is a Slack call, and the acknowledgement must not wait for it.
    services.voices.spawn(services.voices.publish_home(team_id, user), "home")


def _team(body: dict[str, Any]) -> str:
    return str((body.get("team") or {}).get("id") or body.get("team_id") or "")


def _where(body: dict[str, Any]) -> tuple[str | None, str | None]:
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    return channel, container.get("thread_ts") or container.get("message_ts")
