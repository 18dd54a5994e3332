"""A workspace leaving: `app_uninstalled`, or `tokens_revoked` naming the bot, deletes its installation and data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

# (team_id, why) -> counts of what was deleted; bot.store.uninstall.Uninstaller.
OnUninstalled = Callable[[str, str], Awaitable[object]]


def _team(context: AsyncBoltContext, body: dict[str, Any]) -> str | None:
    return context.team_id or body.get("team_id")


def register(app: AsyncApp, *, on_uninstalled: OnUninstalled) -> None:
    """Listen for the two events that end the app's access to a workspace.

    Bolt authorizes neither event with auth.test (the token is already dead when they arrive). Deleting is
    idempotent, so a Slack retry of either (after an error answered 500) just deletes nothing more.
    """

    async def handle_app_uninstalled(context: AsyncBoltContext, body: dict[str, Any]) -> None:
        team_id = _team(context, body)
        if team_id:
            await on_uninstalled(team_id, "app_uninstalled")

    async def handle_tokens_revoked(event: dict[str, Any], context: AsyncBoltContext, body: dict[str, Any]) -> None:
        # tokens: {"oauth": [user ids], "bot": [bot user ids]}. The app asks for no user tokens, so only the bot's
        # revocation matters: without its token the app can do nothing there, which is an uninstall.
        team_id = _team(context, body)
        if team_id and (event.get("tokens") or {}).get("bot"):
            await on_uninstalled(team_id, "tokens_revoked")

    app.event("app_uninstalled")(handle_app_uninstalled)
    app.event("tokens_revoked")(handle_tokens_revoked)
