"""Data at rest is the bot's user's alone: the database, its journals and the data folder are 0600 files in 0700
folders, whatever the umask, and start-up tightens what was left wider (or refuses, naming the file)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from support.driving import where
from support.harness import BotHarness, wanted_database

from bot.store.private import NotPrivate, keep_private
from bot.testing.standin_slack import block_actions
from bot.ui.consent_blocks import CONFIRM_ACTION

CHANNEL = "C0PRIVATE"


def modes(root: Path) -> dict[str, int]:
    """Every file and folder under `root` (not `root` itself), by path relative to it, with its permission bits;
    not the harness's own `downloads` folder (made by the test kit, passed as temp_dir: the runner's downloads are
    NamedTemporaryFiles, 0600, deleted after conversion)."""
    found = {}
    for folder, folders, files in os.walk(root):
        if Path(folder) == root:
            folders[:] = [f for f in folders if f != "downloads"]
        for name in [*folders, *files]:
            path = Path(folder, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def shown(found: dict[str, int]) -> dict[str, int]:
    """The speech clip's random name replaced by a fixed one, so the whole walk compares with a literal."""
    return {("data/speech/CLIP.mp3" if p.startswith("data/speech/") else p): m for p, m in found.items()}


@pytest.fixture
def wide_umask():
    """A umask that lets everyone read new files: what the bot writes must be private by its own modes."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def private_bot(tmp_path, wide_umask):
    # CONSENT=ask: the prepared recording waits on disk; PREVIEW=on: the spoken preview waits for its upload.
    env = {"CONSENT": "ask", "PREVIEW": "on"}
    with BotHarness(tmp_path, extra_env=env, max_backoff=0.2) as harness:
        yield harness


def test_every_file_the_bot_writes_is_its_users_alone(private_bot, media):
    bot, slack = private_bot, private_bot.slack
    on_sqlite = wanted_database() == "sqlite"
    database = {"jobs.db": 0o600, "jobs.db-shm": 0o600, "jobs.db-wal": 0o600} if on_sqlite else {}
    _, body = bot.share(media.speech(15, ".wav").read_bytes(), "memo.wav", "audio/wav", "wav", channel=CHANNEL)

    def question():
        for message in bot.replies(*where(body)):
            for block in message.get("blocks") or []:
                if any(e.get("action_id") == CONFIRM_ACTION for e in block.get("elements") or []):
                    return message
        return None

    assert bot.wait(lambda: question() is not None)
    assert modes(bot.tmp) == {
        **database, "data": 0o700, "data/prepared": 0o700, "data/prepared/job-1.wav": 0o600, "data/speech": 0o700,
    }

    # The preview's upload fails until reset(): its clip stays in the data folder, waiting.
    slack.fail_next("files.getUploadURLExternal", times=1000)
    payload = block_actions(
        question(), CHANNEL, CONFIRM_ACTION, "U0USER", trigger_id=slack.issue_trigger_id(),
        response_url=slack.issue_response_url(), team_id=slack.team_id, api_app_id=slack.app_id,
    )
    assert bot.deliver(payload, kind="interactive").status_code == 200
    assert bot.wait(lambda: any(c.method == "files.getUploadURLExternal" for c in slack.calls))
    assert shown(modes(bot.tmp)) == {
        **database, "data": 0o700, "data/prepared": 0o700, "data/speech": 0o700, "data/speech/CLIP.mp3": 0o600,
    }

    slack.reset()
    bot.drain()
    assert bot.wait(lambda: any(c.method == "files.completeUploadExternal" for c in slack.calls))
    bot.drain()
    assert modes(bot.tmp) == {**database, "data": 0o700, "data/prepared": 0o700, "data/speech": 0o700}


def test_start_up_tightens_what_was_left_wider(tmp_path, wide_umask):
    for name in ("bot.db", "bot.db-wal", "bot.db-shm"):
        (tmp_path / name).write_bytes(b"")
        (tmp_path / name).chmod(0o644)
    data = tmp_path / "data"
    (data / "prepared").mkdir(parents=True, mode=0o755)
    (data / "speech").mkdir(mode=0o777)
    (data / "prepared" / "job-7.wav").write_bytes(b"RIFF")
    (data / "speech" / "left.mp3").write_bytes(b"ID3")
    (data / "speech" / "left.mp3").chmod(0o666)
    data.chmod(0o755)
    (tmp_path / "other.txt").write_bytes(b"not the bot's")

    keep_private(f"sqlite:///{tmp_path / 'bot.db'}", data)

    assert modes(tmp_path) == {
        "bot.db": 0o600, "bot.db-wal": 0o600, "bot.db-shm": 0o600, "data": 0o700, "data/prepared": 0o700,
        "data/speech": 0o700, "data/prepared/job-7.wav": 0o600, "data/speech/left.mp3": 0o600, "other.txt": 0o644,
    }


def test_a_file_that_cannot_be_tightened_ends_start_up_with_one_line(tmp_path, monkeypatch):
    (tmp_path / "bot.db").write_bytes(b"")
    (tmp_path / "bot.db").chmod(0o644)

    def refuse(path, mode):
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", refuse)
    with pytest.raises(NotPrivate) as refused:
        keep_private(f"sqlite:///{tmp_path / 'bot.db'}", tmp_path / "data")
    assert str(refused.value) == (
        f"Cannot make '{tmp_path / 'bot.db'}' readable by this user only (Operation not permitted): chown it to the "
        "user the bot runs as, or chmod it to 600 yourself."
    )
