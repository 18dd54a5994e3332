"""A workspace leaving: `app_uninstalled`, or `tokens_revoked` naming the bot, deletes its installation and data."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from handlers.services import Services


async def handle_app_uninstalled(context: AsyncBoltContext, body: dict[str, Any]) -> None:
    """The app left the workspace: delete what it stored there."""
    await _uninstalled(context, body, "app_uninstalled")


async def handle_tokens_revoked(event: dict[str, Any], context: AsyncBoltContext, body: dict[str, Any]) -> None:
    """Tokens were revoked: the bot's means the app can do nothing there, which is an uninstall."""
    # tokens: {"oauth": [user ids], "bot": [bot user ids]}. The app asks for no user tokens, so only the bot's
    # revocation matters.
    if (event.get("tokens") or {}).get("bot"):
        await _uninstalled(context, body, "tokens_revoked")


def register(app: AsyncApp) -> None:
    """Listen for the two events that end the app's access to a workspace.

    Bolt authorizes neither event with auth.test (the token is already dead when they arrive). Deleting is
    idempotent, so a Slack retry of either (after an error answered 500) just deletes nothing more.
    """
    app.event("app_uninstalled")(handle_app_uninstalled)
    app.event("tokens_revoked")(handle_tokens_revoked)


async def _uninstalled(context: AsyncBoltContext, body: dict[str, Any], why: str) -> None:
    team_id = context.team_id or body.get("team_id")
    on_uninstalled = Services.of(context).on_uninstalled
    if team_id and on_uninstalled is not None:
        await on_uninstalled(team_id, why)
