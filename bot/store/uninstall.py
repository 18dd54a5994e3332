"""What the bot deletes when a workspace uninstalls the app (or revokes its bot token).

The workspace's jobs (with their Slack file objects and transcripts), undelivered answers, remembered voices and
prepared recordings go. The consent audit (table `audit`) is KEPT: it is the append-only legal record of who
consented to which clone, exactly as `/clone forget-me` keeps it; it holds no audio. It also keeps what the operator
needs to answer Tencent Cloud support about the workspace afterwards: each clone's VoiceId, date and RequestId
(`python -m bot audit --team T...`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.store.database import Connection, Database
from bot.store.prepared import PreparedAudio

log = logging.getLogger(__name__)


async def forget_workspace(db: Database, team_id: str, prepared: PreparedAudio | None = None) -> dict[str, int]:
    """Delete `team_id`'s rows from jobs, outbox and voices (one transaction) and its prepared recordings.

    Returns how many went of each: {"jobs": n, "outbox": n, "voices": n, "prepared": n}. The audit stays.
    """

    def delete(conn: Connection) -> tuple[list[int], dict[str, int]]:
        team = {"team": team_id}
        with conn.transaction():
            job_ids = [row["id"] for row in conn.all(conn.sql.jobs.of_team, team)]
            counts = {
                "jobs": conn.run(conn.sql.jobs.delete_team, team),
                "outbox": conn.run(conn.sql.outbox.delete_team, team),
                "voices": conn.run(conn.sql.voices.delete_team, team),
            }
        return job_ids, counts

    job_ids, counts = await db.run(delete)
    removed = 0
    if prepared is not None:
        for job_id in job_ids:
            if prepared.path(job_id).exists():
                removed += 1
            prepared.delete(job_id)
    counts["prepared"] = removed
    return counts


class Uninstaller:
    """Everything one uninstall does: the installation, the workspace's data, the cached tokens."""

    def __init__(
        self,
        db: Database,
        prepared: PreparedAudio | None,
        *,
        delete_installation: Callable[[str], Awaitable[int]] | None,
        forget_token: Callable[[str], None],
    ):
        self.db = db
        self.prepared = prepared
        self.delete_installation = delete_installation
        self.forget_token = forget_token

    async def __call__(self, team_id: str, why: str) -> dict[str, int]:
        """Delete the installation first (no new request is authorized), then the data; log one line, no token."""
        installations = await self.delete_installation(team_id) if self.delete_installation is not None else 0
        self.forget_token(team_id)
        counts = await forget_workspace(self.db, team_id, self.prepared)
        counts = {"installations": installations, **counts}
        log.info(
            "workspace %s left (%s): deleted %s; the consent audit is kept",
            team_id, why, ", ".join(f"{n} {name}" for name, n in counts.items()),
        )
        return counts
