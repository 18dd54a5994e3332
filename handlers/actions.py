"""The consent buttons: "Clone this voice" and "Cancel" under a prepared recording."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.ui.consent_blocks import CANCEL_ACTION, CONFIRM_ACTION
from bot.work.runner import JobRunner


def _job_id(body: dict[str, Any]) -> int | None:
    try:
        return int((body.get("actions") or [{}])[0].get("value") or "")
    except ValueError:
        return None


def register(app: AsyncApp, *, runner: JobRunner) -> None:
    """Listen for presses of the consent buttons."""

    async def handle_consent_confirm(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        job_id = _job_id(body)
        if job_id is not None:
            # Database writes only: the clone itself starts on its own task, right away.
            await runner.consent.confirm(job_id, (body.get("user") or {}).get("id"), _where(body))

    async def handle_consent_cancel(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        job_id = _job_id(body)
        if job_id is not None:
            await runner.consent.cancel(job_id, (body.get("user") or {}).get("id"), _where(body))

    app.action(CONFIRM_ACTION)(handle_consent_confirm)
    app.action(CANCEL_ACTION)(handle_consent_cancel)


def _where(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(channel, thread) of the pressed message, for an ephemeral reply to someone who may not press."""
    container = body.get("container") or {}
    return container.get("channel_id"), container.get("thread_ts") or container.get("message_ts")
