"""The `/clone` form: validate, store the job, close the form."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from bot.slack.intake import modal_job, read_modal
from bot.ui.job_blocks import MODAL_CALLBACK
from handlers.services import Services


async def handle_clone_submission(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
) -> None:
    """The form was submitted: show what to fix, or store the job and close the form."""
    form = read_modal(view)
    if form.errors:
        await ack(response_action="errors", errors=form.errors)
        return
    user = body.get("user", {})
    team_id = (body.get("team") or {}).get("id")
    services = Services.of(context)
    async with services.quotas.admitting(team_id):
        refusal = await services.quotas.clone_refusal(team_id, user.get("id"))
        if refusal is None:
            await services.intake.accept([modal_job(view, user.get("id"), team_id, form)])
    if refusal is not None:
        await ack(response_action="errors", errors={"audio": refusal.text})
        return
    await ack()


def register(app: AsyncApp) -> None:
    """Listen for form submissions."""
    app.view(MODAL_CALLBACK)(handle_clone_submission)
