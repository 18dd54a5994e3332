"""Slack listeners: each module has one `register(app, ...)`; this one registers them all, in order."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.runner import JobRunner
from bot.settings import Settings
from handlers import actions, commands, messages, views


def register(app: AsyncApp, *, runner: JobRunner, settings: Settings) -> None:
    """Register every listener on `app`."""
    messages.register(app, runner=runner)
    commands.register(app, runner=runner)
    views.register(app, runner=runner)
    actions.register(app, runner=runner)
