"""`/clone`: help, the upload form, or a file already in Slack."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import InputError
from bot.slack.intake import command_job, file_reference
from bot.store.jobs import Refused
from bot.ui.job_blocks import build_command_ack, build_help, build_modal, build_usage_error
from bot.ui.texts import describe
from bot.voice.options import parse_options
from bot.work.quotas import Quotas
from handlers import voices as voice_commands
from handlers.services import Services

log = logging.getLogger(__name__)


async def handle_clone_command(
    ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext
) -> None:
    """`/clone [help | <file> [options] | list | say | rename | forget | forget-me]`; nothing opens the form."""
    services = Services.of(context)
    text = (command.get("text") or "").strip()
    if text.lower() in ("help", "-h", "--help", "?"):
        fallback, blocks = build_help()
        await ack(text=fallback, blocks=blocks)
        return
    if not text:
        await ack()
        try:
            await client.views_open(
                trigger_id=command["trigger_id"],
                view=build_modal(command.get("channel_id", ""), command.get("user_id", "")),
            )
        except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
            # The ack client gives up after 2 s (the trigger_id expires after 3): a timeout is told too.
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning("views.open failed: %s", error)
            # Told through the outbox, not response_url: a second network call here would delay the ack.
            channel, user = command.get("channel_id"), command.get("user_id")
            if channel and user:
                await services.intake.ephemeral(
                    f"form:{command.get('trigger_id')}", channel, user,
                    "I couldn't open the form (Slack took too long). Please run `/clone` again.", None,
                    command.get("team_id"),
                )
        return
    if text.split(maxsplit=1)[0].lower() in voice_commands.COMMANDS:
        await voice_commands.answer_command(ack, command, text, services)
        return
    file_id, rest = file_reference(text)
    if file_id is None:
        fallback, blocks = build_usage_error(
            "I need a Slack file link or file ID after `/clone` (or nothing, to upload a recording)."
        )
        await ack(text=fallback, blocks=blocks)
        return
    try:
        options = parse_options(rest)
    except InputError as exc:
        fallback, blocks = build_usage_error(describe(exc))
        await ack(text=fallback, blocks=blocks)
        return
    # Only the jobs limits here: the recording's speaker, whose voices count, is known once the file is looked up.
    admit = services.quotas.admission(Quotas.JOBS, command.get("team_id"), command.get("user_id"))
    try:
        await services.intake.accept([command_job(command, file_id, options)], admit=admit)
    except Refused as refused:
        await ack(text=str(refused.refusal))
        return
    await ack(text=build_command_ack(file_id))


def register(app: AsyncApp) -> None:
    """Listen for `/clone`."""
    app.command("/clone")(handle_clone_command)
