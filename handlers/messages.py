"""Drag-and-drop: a file shared in a channel, group or DM becomes one clone job per audio or video file."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.slack.intake import share_jobs
from bot.ui.job_blocks import build_dm_hint
from bot.work.runner import JobRunner


def register(app: AsyncApp, *, runner: JobRunner) -> None:
    """Listen for file shares, and acknowledge every other message event."""

    async def handle_file_share(body: dict[str, Any]) -> None:
        event = body.get("event") or {}
        if event.get("bot_id") or event.get("bot_profile") or event.get("subtype") == "bot_message":
            # Files posted by bots (ours included: previews, uploads) are never someone's consent to clone.
            return
        intake = share_jobs(body)
        # Stored before this returns, and so before Slack gets its 200 (process_before_response).
        await runner.accept(intake.jobs, react=True)
        if intake.is_dm and intake.ignored and not intake.jobs and intake.channel:
            names = ", ".join(str(f.get("name") or f.get("id")) for f in intake.ignored)
            # Keyed on the event id, so a Slack retry of the same event does not repeat it.
            await runner.hint(
                f"dm:{body.get('event_id') or intake.thread_ts}", intake.channel, build_dm_hint(names),
                intake.thread_ts, body.get("team_id"),
            )

    async def handle_other_message() -> None:
        # Without a listener Bolt answers 404, which Slack counts as a failed delivery and retries.
        return None

    app.event({"type": "message", "subtype": "file_share"})(handle_file_share)
    app.event("message")(handle_other_message)
