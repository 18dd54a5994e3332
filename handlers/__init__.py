"""Slack listeners: each module has one `register(app, ...)`; this one registers them all, in order."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.settings import Settings
from bot.work.runner import JobRunner
from bot.work.voice_service import VoiceService
from handlers import actions, commands, installs, messages, views
from handlers import voices as voice_handlers


def register(
    app: AsyncApp,
    *,
    runner: JobRunner,
    settings: Settings,
    voices: VoiceService | None = None,
    on_uninstalled: installs.OnUninstalled | None = None,
) -> None:
    """Register every listener on `app`; `on_uninstalled` (OAuth mode) deletes a workspace that left."""
    messages.register(app, runner=runner)
    commands.register(app, runner=runner, voices=voices)
    views.register(app, runner=runner)
    actions.register(app, runner=runner)
    if voices is not None:
        voice_handlers.register(app, voices=voices)
    if on_uninstalled is not None:
        installs.register(app, on_uninstalled=on_uninstalled)
