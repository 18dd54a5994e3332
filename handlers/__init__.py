"""Slack listeners: module-level functions that take what they use from Bolt's context (`context["services"]`, a
handlers.services.Services); each module's `register(app)` only registers them, and this one registers them all."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers import actions, commands, installs, messages, shortcuts, views, workflow
from handlers import voices as voice_handlers
from handlers.services import OnUninstalled, Services

__all__ = ["OnUninstalled", "Services", "register"]


def register(app: AsyncApp, *, uninstalls: bool = False) -> None:
    """Register every listener on `app`; `uninstalls` (OAuth mode) adds the events of a workspace leaving."""
    messages.register(app)
    commands.register(app)
    views.register(app)
    actions.register(app)
    voice_handlers.register(app)
    shortcuts.register(app)
    workflow.register(app)
    if uninstalls:
        installs.register(app)
