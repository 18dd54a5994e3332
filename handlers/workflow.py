"""The Workflow Builder step "Speak text with a cloned voice" (manifest `functions.speak_with_cloned_voice`): Slack
sends `function_executed` with the step's inputs (the person running the workflow, one of their voices, the text, a
channel); Bolt acknowledges it once this listener returns (process_before_response).

The listener only checks and stores, as `/clone say` does: the speech becomes a `say` job (one per execution), and
the worker speaks, the outbox uploads the clip and then completes the step with the file's permalink
(functions.completeSuccess). A refusal here (a voice that is not the runner's, a text too long, a fair-use limit), or
a failure later (Tencent's error with its RequestId, a channel the bot cannot post in), ends the step with that reason
(functions.completeError), also through the outbox. Every end is keyed by the execution, so exactly one reaches Slack.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.store.jobs import Refused
from bot.tencent.tts import MAX_LONG_TEXT, SpeechParamError, check_long_text
from bot.ui.speak_blocks import (
    SPEAK_STEP,
    STEP_CHANNEL,
    STEP_NO_CHANNEL,
    STEP_NO_TEXT,
    STEP_NO_USER,
    STEP_TEXT,
    STEP_USER,
    STEP_VOICE,
    step_not_yours,
    step_too_long,
)
from bot.work.quotas import Quotas
from handlers.services import Services

log = logging.getLogger(__name__)


async def handle_speak_step(
    body: dict[str, Any], event: dict[str, Any], inputs: dict[str, Any], request: AsyncBoltRequest,
    context: AsyncBoltContext,
) -> None:
    """One execution of the step: store its speech as a job, or end it with the reason it cannot run."""
    services = Services.of(context)
    execution = str(event.get("function_execution_id") or "")
    if not execution:
        return
    team = str(body.get("team_id") or "") or None
    user = person_running(inputs)
    channel = str(inputs.get(STEP_CHANNEL) or "").strip() or None
    ref = str(inputs.get(STEP_VOICE) or "").strip()
    raw = str(inputs.get(STEP_TEXT) or "")

    async def refuse(reason: str) -> None:
        log.info("workflow step %s refused: %s", execution, reason.split(":")[0])
        await services.voices.fail_step(execution, reason, team_id=team, channel=channel, user=user)

    if user is None:
        await refuse(STEP_NO_USER)
        return
    try:
        text = check_long_text(raw)
    except SpeechParamError:
        spoken = len("\n".join(" ".join(line.split()) for line in raw.splitlines() if line.strip()))
        await refuse(step_too_long(spoken) if spoken > MAX_LONG_TEXT else STEP_NO_TEXT)
        return
    voice = await services.voices.reachable(team, user, ref) if ref else None
    if voice is None:
        await refuse(step_not_yours(ref))
        return
    if channel is None:
        await refuse(STEP_NO_CHANNEL)
        return
    # Slack sends the event again when the first acknowledgement was slow: that execution's job is stored already
    # (one per execution), and counting it against the limits would refuse the step it is running.
    retried = bool(request.headers.get("x-slack-retry-num"))
    admit = None if retried else services.quotas.admission(Quotas.SAY, team, user)
    try:
        # Checked against the fair-use limits in the transaction that stores it (bot.work.quotas).
        await services.voices.request_say(voice, user, text, channel=channel, step=execution, admit=admit)
    except Refused as refused:
        await refuse(str(refused.refusal))


def person_running(inputs: dict[str, Any]) -> str | None:
    """The person running the workflow: the step's `user` input is a `slack#/types/user_context`, which Slack fills
    in from the person's own action (Workflow Builder cannot set it to someone else), so the voice checked against it
    is theirs."""
    context = inputs.get(STEP_USER)
    user = context.get("id") if isinstance(context, dict) else None
    return user if isinstance(user, str) and user else None


def register(app: AsyncApp) -> None:
    """Listen for the Workflow Builder step (Bolt acknowledges `function_executed` itself, after the listener)."""
    app.function(SPEAK_STEP)(handle_speak_step)
