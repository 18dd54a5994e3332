"""What a job shows in Slack, written to the outbox: the thread's parent, the status message, the reactions.

Nothing here calls Slack; bot.slack.sender delivers it. Every write is the newest desired state under a fixed key, so
writing the same thing twice (a retried job, a restart) changes nothing in Slack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.store.connection import Connection
from bot.store.jobs import DONE, FAILED, UNFINISHED, Job, JobStore
from bot.store.outbox import Outbox
from bot.ui.consent_blocks import build_consent_confirmed, build_consent_request
from bot.ui.job_blocks import build_parent, build_status

WORKING = "hourglass_flowing_sand"
SUCCEEDED = "white_check_mark"
FAILED_REACTION = "x"
# A progress edit of a status message already posted waits this long for a newer state before it goes out. A memo
# is answered within it, so its thread shows the first stage and then the answer (two calls, not four: each call is
# ~1 ms of the bot's CPU, and chat.update is rate-limited per workspace); a long job shows each stage at most this
# late.
PROGRESS_SETTLE_SECONDS = 0.5


def file_name(job: Job) -> str:
    """The name to show for the job's file."""
    return str(job.file.get("name") or job.file.get("title") or job.file.get("id") or "recording")


def share_reactions(statuses: list[str]) -> set[str]:
    """The reactions a shared message should carry, from the status of each of its jobs (one per file)."""
    names: set[str] = set()
    if any(s in UNFINISHED for s in statuses):
        names.add(WORKING)
    if DONE in statuses:
        names.add(SUCCEEDED)
    if FAILED in statuses:
        names.add(FAILED_REACTION)
    return names


class Replies:
    """The outbox records of one job, under keys derived from the job id; each serves the user who asked (the job's
    user_id), which keeps one user's records in order in a channel and lets other users' pass them there."""

    def __init__(self, outbox: Outbox):
        self.outbox = outbox

    @staticmethod
    def status_key(job_id: int) -> str:
        """The key of a job's status message (progress, then the final answer)."""
        return f"job:{job_id}:status"

    @staticmethod
    def reactions_key(channel: str, share_ts: str) -> str:
        """The key of the reactions on a shared message."""
        return f"share:{channel}:{share_ts}:reactions"

    def working_write(
        self, channel: str, share_ts: str, team_id: str | None, user: str | None = None
    ) -> Callable[[Connection], None]:
        """Show that a share was taken (an hourglass on `user`'s message): a write for the transaction that stores
        the share's job (JobStore.add's `also`); call committed() once it has committed."""
        return self.outbox.reactions_write(
            self.reactions_key(channel, share_ts), channel=channel, ts=share_ts, names=[WORKING], team_id=team_id,
            user=user,
        )

    def committed(self) -> None:
        """What working_write wrote was committed: the sender looks at once."""
        self.outbox.committed()

    async def stage(self, job: Job, stage: str) -> None:
        """Show the job's current stage."""
        text, blocks = build_status(stage, file_name(job))
        await self._status(job, text, blocks, settle=PROGRESS_SETTLE_SECONDS)

    async def final(self, job: Job, text: str, blocks: list[dict[str, Any]]) -> None:
        """The one final answer: the status message becomes the result."""
        await self._status(job, text, blocks)

    async def ask_consent(self, job: Job, report: dict[str, Any] | None, ttl_hours: float) -> None:
        """The status message becomes the consent question, with the report card and the two buttons."""
        speaker = job.speaker or job.user_id
        text, blocks = build_consent_request(job.id, speaker, file_name(job), report, ttl_hours, job.user_id)
        await self._status(job, text, blocks)

    async def consent_given(self, job: Job, user_id: str, at: float) -> None:
        """The question is answered: say who confirmed, and that cloning has started."""
        text, blocks = build_consent_confirmed(user_id, at, file_name(job))
        await self._status(job, text, blocks)

    async def ephemeral(
        self, key: str, channel: str, user: str, text: str, thread_ts: str | None, team_id: str | None
    ) -> None:
        """A message only `user` sees, sent once per key."""
        await self.outbox.put_ephemeral(
            f"ephemeral:{key}", channel=channel, user=user, text=text, thread_ts=thread_ts, team_id=team_id
        )

    async def share_done(self, job: Job, statuses: list[str]) -> None:
        """Update the shared message's reactions once one of its jobs has finished."""
        if job.kind == "share" and job.channel and job.share_ts:
            await self.outbox.put_reactions(
                self.reactions_key(job.channel, job.share_ts),
                channel=job.channel,
                ts=job.share_ts,
                names=share_reactions(statuses),
                team_id=job.team_id,
                job_id=job.id,
                # The check mark means "answered": it goes out once the answer has.
                after_key=self.status_key(job.id),
                user=job.user_id,
            )

    async def hint(
        self, key: str, channel: str, text: str, thread_ts: str | None, team_id: str | None, user: str | None = None
    ) -> None:
        """A one-off message (a hint, for `user`), sent once per key however often it is asked for."""
        await self.outbox.put_message(
            f"hint:{key}", channel=channel, text=text, thread_ts=thread_ts, team_id=team_id, once=True, user=user
        )

    async def _status(self, job: Job, text: str, blocks: list[dict[str, Any]], settle: float = 0.0) -> None:
        # A form submission without a channel is answered in the user's DM (a user id posts there).
        channel = job.channel or job.user_id
        if channel is None:
            return
        thread_key = None
        if job.thread_ts is None:
            # Form and /clone requests have no message to answer under: post one first, then reply under it.
            thread_key = f"job:{job.id}:parent"
            await self.outbox.put_message(
                thread_key, channel=channel, text=build_parent(job.user_id, file_name(job)), team_id=job.team_id,
                job_id=job.id, once=True, user=job.user_id,
            )
        await self.outbox.put_message(
            self.status_key(job.id),
            channel=channel,
            text=text,
            blocks=blocks,
            thread_ts=job.thread_ts,
            thread_key=thread_key,
            team_id=job.team_id,
            job_id=job.id,
            fallback={"user": job.user_id} if job.user_id else None,
            user=job.user_id,
            settle=settle,
        )


async def refresh_share(replies: Replies, store: JobStore, job: Job) -> None:
    """Set a shared message's reactions from the status of every job it started (after one of them changed)."""
    if job.kind == "share" and job.channel and job.share_ts:
        await replies.share_done(job, await store.share_statuses(job.channel, job.share_ts))
