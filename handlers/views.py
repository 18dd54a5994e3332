"""The `/clone` form: validate, store the job, close the form."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from bot.slack.intake import modal_job, read_modal
from bot.store.jobs import Refused
from bot.ui.job_blocks import MODAL_CALLBACK
from bot.work.quotas import Quotas
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
    admit = services.quotas.admission(Quotas.CLONE, team_id, user.get("id"))
    try:
        await services.intake.accept([modal_job(view, user.get("id"), team_id, form)], admit=admit)
    except Refused as refused:
        await ack(response_action="errors", errors={"audio": str(refused.refusal)})
        return
    await ack()


def register(app: AsyncApp) -> None:
    """Listen for form submissions."""
    app.view(MODAL_CALLBACK)(handle_clone_submission)
