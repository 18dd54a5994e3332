"""The consent buttons: "Clone this voice" and "Cancel" under a prepared recording."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from bot.ui.consent_blocks import CANCEL_ACTION, CONFIRM_ACTION
from handlers.services import Services


async def handle_consent_confirm(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    """The uploader pressed "Clone this voice": their consent; the clone starts at once."""
    await ack()
    job_id = _job_id(body)
    if job_id is not None:
        # Database writes only: the clone itself starts on its own task, right away.
        await Services.of(context).consent.confirm(job_id, (body.get("user") or {}).get("id"), _where(body))


async def handle_consent_cancel(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    """The uploader pressed "Cancel": the prepared recording is deleted."""
    await ack()
    job_id = _job_id(body)
    if job_id is not None:
        await Services.of(context).consent.cancel(job_id, (body.get("user") or {}).get("id"), _where(body))


def register(app: AsyncApp) -> None:
    """Listen for presses of the consent buttons."""
    app.action(CONFIRM_ACTION)(handle_consent_confirm)
    app.action(CANCEL_ACTION)(handle_consent_cancel)


def _job_id(body: dict[str, Any]) -> int | None:
    try:
        return int((body.get("actions") or [{}])[0].get("value") or "")
    except ValueError:
        return None


def _where(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(channel, thread) of the pressed message, for an ephemeral reply to someone who may not press."""
    container = body.get("container") or {}
    return container.get("channel_id"), container.get("thread_ts") or container.get("message_ts")
