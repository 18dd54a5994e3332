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
from bot.store.jobs import Admission, JobStore, PerUser
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


class _Tally:
    """A workspace's fair-use counts per user, for one transaction. Alone in its transaction, a check reads its user's
    counts and the workspace's (one statement). In a batch of acknowledgements (group commit: bot.store.connection)
    the first check reads every user's, once, and the tally then counts what the transaction admits: under a burst
    the reads had been a third of the statements, and reading every user's for each request costs O(users)."""

    KEY = "fair-use"

    def __init__(self) -> None:
        self.parts: dict[str, PerUser] = {}
        self.totals: dict[str, tuple[int, float | None]] = {}

    def load(self, parts: dict[str, PerUser]) -> None:
        for part, counts in parts.items():
            oldest = [when for _, when in counts.values() if when is not None]
            self.set(part, counts, (sum(n for n, _ in counts.values()), min(oldest) if oldest else None))

    def set(self, part: str, counts: PerUser, total: tuple[int, float | None]) -> None:
        self.parts[part] = counts
        self.totals[part] = total

    def mine(self, part: str, user: str | None) -> tuple[int, float | None]:
        # A request without a user is nobody's: only the workspace's limits apply to it.
        return self.parts[part].get(user, (0, None)) if user is not None else (0, None)

    def total(self, part: str) -> tuple[int, float | None]:
        return self.totals[part]

    def add(self, part: str, user: str | None, n: int, now: float) -> None:
        if part not in self.parts:
            return
        mine, oldest = self.parts[part].get(user, (0, None))
        self.parts[part][user] = (mine + n, oldest if oldest is not None else now)
        total, first = self.totals[part]
        self.totals[part] = (total + n, first if first is not None else now)


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
        # A batch that fails is retried one write at a time (Connection.run_batch), running this again: one request
        # is one refusal in the metric and the log, however often it is checked.
        counted = False

        def admit(conn: Connection) -> Refusal | None:
            nonlocal counted
            refusal = self.check(conn, kind, team_id, user_id, adding)
            tally = conn.cache().get((_Tally.KEY, team_id))
            if refusal is None and tally is not None:
                # What this transaction stores counts for the next check in it.
                now = time.time()
                tally.add("jobs", user_id, adding, now)
                if kind == self.SAY:
                    tally.add("says", user_id, adding, now)
            if refusal is None or counted:
                return refusal
            counted = True
            return _counted(refusal)

        return admit

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
        tally = self._tally(conn, team_id, user_id, now - 60 if says else None, voices)
        refusal = None
        if says:
            refusal = self._says(tally.mine("says", user_id), tally.total("says"), now)
        if refusal is None:
            refusal = self._jobs(tally.mine("jobs", user_id)[0], tally.total("jobs")[0], user_id, adding)
        if refusal is None and kind == self.CLONE:
            kept = (tally.mine("voices", user_id)[0], tally.total("voices")[0]) if voices else None
            refusal = self._voices(conn, kept, user_id)
        return refusal

    def _tally(
        self, conn: Connection, team_id: str | None, user_id: str | None, says_since: float | None, voices: bool
    ) -> _Tally:
        """The counts this check needs: its user's and the workspace's, or in a batch every user's (kept for the
        transaction, reading in one statement only the parts not read yet)."""
        if not conn.batched:
            tally = _Tally()
            for part, (counts, total) in self.jobs.admission_counts(
                conn, team_id, user_id, says_since=says_since, voices=voices
            ).items():
                tally.set(part, counts, total)
            return tally
        cache = conn.cache()
        tally = cache.get((_Tally.KEY, team_id))
        if tally is None:
            tally = cache[(_Tally.KEY, team_id)] = _Tally()
        jobs = "jobs" not in tally.parts
        says = says_since is not None and "says" not in tally.parts
        voices = voices and "voices" not in tally.parts
        if jobs or says or voices:
            tally.load(self.jobs.admission_counts_by_user(
                conn, team_id, jobs=jobs, says_since=says_since if says else None, voices=voices
            ))
        return tally

    async def say_refusal(self, team_id: str | None, user_id: str | None) -> Refusal | None:
        """Would one more speech request pass the per-minute limits and the jobs limits? (Before a form opens:
        what the form then submits is checked again as it is stored.)"""
        return _counted(await self.jobs.db.run(lambda conn: self.check(conn, self.SAY, team_id, user_id)))

    async def voices_refusal(self, team_id: str | None, speaker: str | None) -> Refusal | None:
        """Refuse a new voice for `speaker` (checked again just before VoiceClone is called)."""

        def check(conn: Connection) -> Refusal | None:
            s = self.settings
            kept = None
            if s.max_voices_per_user or s.max_voices_per_workspace:
                kept = self.library.held_in(conn, team_id, speaker)
            return self._voices(conn, kept, speaker)

        return _counted(await self.jobs.db.run(check))

    # -- the limits, on the database thread --------------------------------------------------------------

    def _jobs(self, user: int, team: int, user_id: str | None, adding: int) -> Refusal | None:
        s = self.settings
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

    def _says(self, mine: tuple[int, float | None], all_: tuple[int, float | None], now: float) -> Refusal | None:
        """`mine`, `all_`: the user's and the workspace's speech requests in the last minute, and the oldest."""
        s = self.settings
        (user, user_oldest), (team, team_oldest) = mine, all_
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

    def _voices(self, conn: Connection, kept: tuple[int, int] | None, speaker: str | None) -> Refusal | None:
        """`kept`: the voices the speaker and the workspace keep, read when a voices limit is on (None: none is)."""
        s = self.settings
        if kept is not None:
            user, team = kept
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
