"""Fair use: how much one person and one workspace may have going at once, so that nobody crowds out the others and
nobody spends the Tencent account's voice cap (voices cannot be deleted) for everyone.

Checked on the acknowledgement path (database reads only), before a request is stored; a refusal says which limit
was hit and when it frees up. The counts come from the jobs and voices tables, which every replica shares, and are
read in the transaction that stores the request, under the admission lock (JobStore.hold_admission): exact,
across connections and replicas too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bot import metrics
from bot.settings import Settings
from bot.store.audit import Audit
from bot.store.connection import Connection
from bot.store.jobs import Admission, AdmissionCounts, JobStore
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

    def __str__(self) -> str:
        return self.text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Quotas:
    """The per-user and per-workspace limits of settings (MAX_JOBS_PER_USER ... ACCOUNT_VOICE_CAP).

    `admission(...)` is what the acknowledgement path stores requests with (JobQueue.add(admit=...)): the counts are
    read and the jobs written in one transaction, one trip to the database thread, so a burst is neither let past a
    limit nor queued behind a lock. `say_refusal` and `voices_refusal` ask without storing anything."""

    CLONE, JOBS, SAY = "clone", "jobs", "say"

    def __init__(self, settings: Settings, jobs: JobStore, library: VoiceLibrary, audit: Audit):
        self.settings = settings
        self.jobs = jobs
        self.library = library
        self.audit = audit
        self._warned_at = 0
        metrics.ACCOUNT_VOICE_CAP.set(settings.account_voice_cap)

    def admission(self, kind: str, team_id: str | None, user_id: str | None, adding: int = 1) -> Admission:
        """The check for storing `adding` requests of `kind` (CLONE: of the user's own recordings; JOBS: anything;
        SAY: speech), run inside the storing transaction; a refusal is counted and logged once."""
        return lambda conn: _counted(self.check(conn, kind, team_id, user_id, adding))

    def check(
        self, conn: Connection, kind: str, team_id: str | None, user_id: str | None, adding: int = 1
    ) -> Refusal | None:
        """Which limit, if any, refuses `adding` more requests of `kind` (on the database thread, in the transaction
        that stores them when there is one)."""
        s = self.settings
        says = kind == self.SAY and bool(s.says_per_minute_per_user or s.says_per_minute_per_workspace)
        voices = kind == self.CLONE and bool(s.max_voices_per_user or s.max_voices_per_workspace)
        if not (s.max_jobs_per_user or s.max_jobs_per_workspace or says or voices or s.account_voice_cap):
            return None
        self.jobs.hold_admission(conn)
        now = time.time()
        # One statement for every count: each acknowledgement of a burst pays for it.
        since = now - 60 if says else None
        counts = self.jobs.admission_counts(conn, team_id, user_id, says_since=since, voices=voices)
        refusal = self._says(counts, now) if says else None
        if refusal is None:
            refusal = self._jobs(counts, user_id, adding)
        if refusal is None and kind == self.CLONE:
            refusal = self._voices(conn, counts if voices else None, user_id)
        return refusal

    async def say_refusal(self, team_id: str | None, user_id: str | None) -> Refusal | None:
        """Would one more speech request pass the per-minute limits and the jobs limits? (Before a form opens:
        what the form then submits is checked again as it is stored.)"""
        return _counted(await self.jobs.db.run(lambda conn: self.check(conn, self.SAY, team_id, user_id)))

    async def voices_refusal(self, team_id: str | None, speaker: str | None) -> Refusal | None:
        """Refuse a new voice for `speaker` (checked again just before VoiceClone is called)."""

        def check(conn: Connection) -> Refusal | None:
            s = self.settings
            counts = None
            if s.max_voices_per_user or s.max_voices_per_workspace:
                user, team = self.library.held_in(conn, team_id, speaker)
                counts = AdmissionCounts(voices_mine=user, voices_team=team)
            return self._voices(conn, counts, speaker)

        return _counted(await self.jobs.db.run(check))

    # -- the limits, on the database thread --------------------------------------------------------------

    def _jobs(self, counts: AdmissionCounts, user_id: str | None, adding: int) -> Refusal | None:
        s = self.settings
        user, team = counts.jobs_mine, counts.jobs_team
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

    def _says(self, counts: AdmissionCounts, now: float) -> Refusal | None:
        s = self.settings
        user, user_oldest = counts.says_mine, counts.says_mine_oldest
        team, team_oldest = counts.says_team, counts.says_team_oldest
        if s.says_per_minute_per_user and user >= s.says_per_minute_per_user:
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
        return None

    def _voices(self, conn: Connection, counts: AdmissionCounts | None, speaker: str | None) -> Refusal | None:
        """`counts`: the voices kept, read when a voices limit is on (None: none is)."""
        s = self.settings
        if counts is not None:
            user, team = counts.voices_mine, counts.voices_team
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
        if s.account_voice_cap and self._account_voices(conn) >= s.account_voice_cap:
            return Refusal(
                "ACCOUNT_VOICE_CAP",
                "The bot's Tencent Cloud account has made all the voices it may. "
                "Ask your Slack admin to contact the bot's operator.",
            )
        return None

    def _account_voices(self, conn: Connection) -> int:
        """Voices the Tencent account has made, forgotten ones included (Tencent cannot delete them); updates the
        gauge and warns the operator, once per new count, from WARN_SHARE of ACCOUNT_VOICE_CAP."""
        count = self.audit.voices_made_in(conn)
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
