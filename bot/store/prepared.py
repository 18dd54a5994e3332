"""Recordings prepared for cloning and waiting for their uploader's consent: private files in the data folder.

Only the prompt WAV is kept (never the original upload), one file per job, readable by the bot's user alone
(folder 0700, file 0600). Each is deleted on clone, cancel or expiry; `sweep()` removes any a crash left behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


class PreparedAudio:
    """Prepared prompt WAVs by job id."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root) / "prepared"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is masked by the umask, and an existing folder keeps its mode: set it outright.
        os.chmod(self.root, 0o700)

    def path(self, job_id: int) -> Path:
        """Where job `job_id`'s prompt lives."""
        return self.root / f"job-{int(job_id)}.wav"

    def save(self, job_id: int, wav: bytes) -> Path:
        """Write atomically with mode 0600 from the first byte (no window where others could read it)."""
        final = self.path(job_id)
        temporary = final.with_suffix(".part")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(wav)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        os.replace(temporary, final)
        return final

    def load(self, job_id: int) -> bytes | None:
        """The prompt, or None when it is gone (deleted, or lost with the disk)."""
        try:
            return self.path(job_id).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, job_id: int) -> None:
        """Remove the prompt (no error when it is already gone)."""
        self.path(job_id).unlink(missing_ok=True)

    def sweep(self, keep: Iterable[int]) -> int:
        """Delete every prompt whose job is not in `keep`; return how many were deleted."""
        wanted = {self.path(j).name for j in keep}
        removed = 0
        for entry in self.root.iterdir():
            if entry.name not in wanted:
                entry.unlink(missing_ok=True)
                removed += 1
        return removed
