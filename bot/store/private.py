"""What the bot keeps on disk is readable by its own user only: the SQLite database and its journals (-wal, -shm,
-journal) mode 0600, the data folder (prepared recordings, speech waiting for upload) 0700 with files 0600.

New files get those modes when they are made (the database file here and in bot.store.database, each store's
files with explicit modes; `python -m bot run` also sets the umask to 077). `keep_private()` runs at start-up and
tightens what an older version, a restored backup or another umask left wider; when it cannot (a file owned by
another user), start-up ends with one line naming the file.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from bot.settings import is_postgres_url, sqlite_path

FILE_MODE, FOLDER_MODE = 0o600, 0o700
# The files SQLite keeps beside the database; it creates them with the database file's own mode.
JOURNALS = ("-wal", "-shm", "-journal")


class NotPrivate(PermissionError):
    """A file or folder that cannot be made readable by the bot's user only; str() is one line for the operator."""

    def __init__(self, path: Path, reason: str):
        super().__init__(
            f"Cannot make {str(path)!r} readable by this user only ({reason}): chown it to the user the bot runs "
            f"as, or chmod it to {'700' if path.is_dir() else '600'} yourself."
        )
        self.path = path


def _tighten(path: Path, mode: int) -> None:
    try:
        info = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there (the database reports a path it cannot open itself)
    if stat.S_ISLNK(info.st_mode) or stat.S_IMODE(info.st_mode) & ~mode == 0:
        return  # a link is followed to nothing of ours; the mode is already as tight
    try:
        os.chmod(path, stat.S_IMODE(info.st_mode) & mode)
    except OSError as exc:
        raise NotPrivate(path, exc.strerror or str(exc)) from None


def database_files(database_url: str) -> list[Path]:
    """The SQLite file `database_url` names and its journals (none for PostgreSQL or :memory:)."""
    if is_postgres_url(database_url):
        return []
    path = sqlite_path(database_url)
    if path == ":memory:":
        return []
    return [Path(path), *(Path(path + suffix) for suffix in JOURNALS)]


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Make `path` empty with mode 0600 unless it exists (before SQLite creates it with the umask's mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def keep_private(database_url: str, data_path: Path) -> None:
    """Create the data folder (0700) and tighten it, everything in it, and the SQLite database and its journals.

    Raises NotPrivate naming the first file whose mode cannot be changed, or OSError when the folder cannot be made.
    """
    for path in database_files(database_url):
        _tighten(path, FILE_MODE)
    data_path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    _tighten(data_path, FOLDER_MODE)
    for folder, folders, files in os.walk(data_path):
        for name in folders:
            _tighten(Path(folder, name), FOLDER_MODE)
        for name in files:
            _tighten(Path(folder, name), FILE_MODE)
