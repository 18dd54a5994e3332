"""What the listeners use, handed to each through Bolt's context: bot.slack.app's middleware sets
`context["services"]` on every request, so a listener is a plain module-level function a test can call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from slack_bolt.context.async_context import AsyncBoltContext

from bot.slack.intake import Intake
from bot.store.library import VoiceLibrary
from bot.store.outbox import Outbox
from bot.work.consent import ConsentButtons
from bot.work.quotas import Quotas
from bot.work.voice_service import VoiceService

# (team_id, why) -> counts of what was deleted; bot.store.uninstall.Uninstaller.
OnUninstalled = Callable[[str, str], Awaitable[object]]


@dataclass(frozen=True)
class Services:
    """The listeners' collaborators; listeners only store, queue and answer (slow work runs on the workers)."""

    intake: Intake
    consent: ConsentButtons
    voices: VoiceService
    library: VoiceLibrary
    # Notes to one user that belong to no job (a voice button pressed by someone else, a form that did not open).
    outbox: Outbox
    # Fair use: a request past a per-user or per-workspace limit is refused with the limit and when it frees up.
    quotas: Quotas
    # OAuth mode: deletes what a workspace that left had stored (None: one workspace, no uninstall listeners).
    on_uninstalled: OnUninstalled | None = None

    @staticmethod
    def of(context: AsyncBoltContext) -> Services:
        """The services bot.slack.app's middleware put in this request's context."""
        services: Services = context["services"]
        return services
