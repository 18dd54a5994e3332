"""Fair use: how much one person and one workspace may have going at once, so that nobody crowds out the others and
nobody spends the Tencent account's voice cap (voices cannot be deleted) for everyone.

Checked on the acknowledgement path (database reads only), before a request is stored; a refusal says which limit
was hit and when it frees up. The counts come from the jobs and voices tables, which every replica shares. Within a
process, `admitting(team)` makes check-then-store one step per workspace (concurrent acknowledgements would all pass
the same check); across replicas no lock is taken on the acknowledgement path, so replicas acknowledging at the same
instant can each let one request through past a limit: the overshoot is at most one request per replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from bot import metrics
from bot.settings import Settings
from bot.store.audit import Audit
from bot.store.jobs import JobStore
from bot.store.library import VoiceLibrary

log = logging.getLogger(__name__)

# The operator is warned once the account's cloned voices reach this share of ACCOUNT_VOICE_CAP.
WARN_SHARE = 0.9


@dataclass(frozen=True)
class Refusal:
    """A request refused by a limit: which one (`limit`, a settings name), and the sentence the user reads."""

    limit: str
    text: str
    # Seconds until the limit frees up, when that can be known (a per-minute limit); None: when something ends.
    retry_after: float | None = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Quotas:
    """The per-user and per-workspace limits of settings (MAX_JOBS_PER_USER ... ACCOUNT_VOICE_CAP)."""

    def __init__(self, settings: Settings, jobs: JobStore, library: VoiceLibrary, audit: Audit):
        self.settings = settings
        self.jobs = jobs
        self.library = library
        self.audit = audit
        metrics.ACCOUNT_VOICE_CAP.set(settings.account_voice_cap)
        self._warned_at = 0
        self._admitting: dict[str | None, asyncio.Lock] = {}

    async def _jobs(self, team_id: str | None, user_id: str | None, adding: int = 1) -> Refusal | None:
        """Refuse `adding` more jobs (clones or `say`s) when the user or the workspace already has the most
        allowed waiting or running."""
        s = self.settings
        user, team = await self.jobs.active_counts(team_id, user_id)
        if s.max_jobs_per_user and user_id and user + adding > s.max_jobs_per_user:
            return Refusal(
                "MAX_JOBS_PER_USER",
                f"You already have {_plural(user, 'request')} waiting or running, and one person may have at most "
                f"{s.max_jobs_per_user} at once. Try again when one of them has been answered.",
            )
        if s.max_jobs_per_workspace and team + adding > s.max_jobs_per_workspace:
            return Refusal(
                "MAX_JOBS_PER_WORKSPACE",
                f"This workspace already has {_plural(team, 'request')} waiting or running, the most it may have "
                f"at once ({s.max_jobs_per_workspace}). Try again in a minute, when some have been answered.",
            )
        return None

    async def _says(self, team_id: str | None, user_id: str | None) -> Refusal | None:
        """Refuse one more `say` (or any speech) past the per-minute limits, or past the jobs limits."""
        s = self.settings
        now = time.time()
        user, user_oldest, team, team_oldest = await self.jobs.says_since(team_id, user_id, now - 60)
        if s.says_per_minute_per_user and user_id and user >= s.says_per_minute_per_user:
            wait = _frees_in(user_oldest, now)
            return Refusal(
                "SAYS_PER_MINUTE_PER_USER",
                f"You've asked for {_plural(user, 'clip')} in the last minute, the most one person may. "
                f"The next one can be asked for in {wait} s.",
                float(wait),
            )
        if s.says_per_minute_per_workspace and team >= s.says_per_minute_per_workspace:
            wait = _frees_in(team_oldest, now)
            return Refusal(
                "SAYS_PER_MINUTE_PER_WORKSPACE",
                f"This workspace has asked for {_plural(team, 'clip')} in the last minute, the most it may. "
                f"The next one can be asked for in {wait} s.",
                float(wait),
            )
        return await self._jobs(team_id, user_id)

    async def _voices(self, team_id: str | None, speaker: str | None) -> Refusal | None:
        """Refuse a new voice for `speaker` when they or the workspace already hold the most allowed, or when the
        Tencent account has reached ACCOUNT_VOICE_CAP."""
        s = self.settings
        user, team = await self.library.held(team_id, speaker)
        if s.max_voices_per_user and speaker and user >= s.max_voices_per_user:
            return Refusal(
                "MAX_VOICES_PER_USER",
                f"You already have {_plural(user, 'voice')}, the most one person may keep here "
                f"({s.max_voices_per_user}). Forget one with `/clone forget <voice>` to make room.",
            )
        if s.max_voices_per_workspace and team >= s.max_voices_per_workspace:
            return Refusal(
                "MAX_VOICES_PER_WORKSPACE",
                f"This workspace already has {_plural(team, 'voice')}, the most it may keep "
                f"({s.max_voices_per_workspace}). A voice frees up when its owner forgets it.",
            )
        if s.account_voice_cap and await self.account_voices() >= s.account_voice_cap:
            return Refusal(
                "ACCOUNT_VOICE_CAP",
                "The bot's Tencent Cloud account has made all the voices it may. "
                "Ask your Slack admin to contact the bot's operator.",
            )
        return None

    def admitting(self, team_id: str | None) -> asyncio.Lock:
        """Hold while checking a limit and storing what it admits: one workspace's requests one at a time."""
        lock = self._admitting.get(team_id)
        if lock is None:
            lock = self._admitting[team_id] = asyncio.Lock()
        return lock

    async def jobs_refusal(self, team_id: str | None, user_id: str | None, adding: int = 1) -> Refusal | None:
        """Refuse `adding` more jobs (clones or speech) past MAX_JOBS_PER_USER or MAX_JOBS_PER_WORKSPACE."""
        return _counted(await self._jobs(team_id, user_id, adding))

    async def clone_refusal(self, team_id: str | None, user_id: str | None, adding: int = 1) -> Refusal | None:
        """Refuse new clones of `user_id`'s own recordings: past the jobs limits, or when they, their workspace or
        the account hold the most voices allowed."""
        return _counted(await self._jobs(team_id, user_id, adding) or await self._voices(team_id, user_id))

    async def say_refusal(self, team_id: str | None, user_id: str | None) -> Refusal | None:
        """Refuse one more speech request past the per-minute limits or the jobs limits."""
        return _counted(await self._says(team_id, user_id))

    async def voices_refusal(self, team_id: str | None, speaker: str | None) -> Refusal | None:
        """Refuse a new voice for `speaker` (checked again just before VoiceClone is called)."""
        return _counted(await self._voices(team_id, speaker))

    async def account_voices(self) -> int:
        """Voices the Tencent account has made, forgotten ones included (Tencent cannot delete them); updates the
        gauge and warns the operator, once per new count, from WARN_SHARE of ACCOUNT_VOICE_CAP."""
        count = await self.audit.voices_made()
        metrics.ACCOUNT_VOICES.set(count)
        cap = self.settings.account_voice_cap
        if cap and count >= cap * WARN_SHARE and count > self._warned_at:
            self._warned_at = count
            log.warning(
                "the Tencent account has %d cloned voices of ACCOUNT_VOICE_CAP=%d; new clones are refused at the cap",
                count, cap,
            )
        return count


def _counted(refusal: Refusal | None) -> Refusal | None:
    if refusal is not None:
        metrics.REFUSED.labels(limit=refusal.limit).inc()
        log.info("request refused by %s", refusal.limit)
    return refusal


def _frees_in(oldest: float | None, now: float) -> int:
    """Whole seconds until the oldest request in the last minute leaves it (at least 1)."""
    if oldest is None:
        return 1
    return max(1, int(oldest + 60 - now + 0.999))
