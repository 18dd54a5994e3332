"""Issue 19: the Slack outbox is fair across users. Order is kept per lane (a channel and the user a record serves
there), and the lanes of a channel take turns at its posting pace, the least recently served first: a light user's
answer goes out within a post slot or two even behind another user's long backlog in the same channel, while each
user's own records keep their order.

The rule on its own (a fake outbox and client, a hand-driven pacer), the store's lane order (on this pass's
database), then the real bot at Slack's real pace (about 1 post a second per channel) against the Slack stand-in.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.driving import where
from support.harness import BotHarness, _raw_sql, wanted_database

from bot.slack.lanes import Lanes
from bot.slack.pacing import Pacer, Rate
from bot.slack.sender import Sender
from bot.store.database import Database, SqliteDatabase
from bot.store.outbox import MESSAGE, Look, Outbox, Record
from bot.store.sql import Table
from bot.testing.standin_slack import block_actions
from bot.ui.consent_blocks import CANCEL_ACTION, CONFIRM_ACTION

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
UPLOADER = "U0USER"  # the stand-in's default uploader: Bob, sharing his recording


# -- the rule, with a fake pacer ---------------------------------------------------------------------------------


class Clock:
    """A hand-driven clock for the pacer."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeOutbox:
    """Pending messages in memory, handed to the sender oldest first (the lane order is the sender's to make)."""

    def __init__(self) -> None:
        self.pending: dict[int, Record] = {}
        self._ids = 0

    def add(self, channel: str, user: str | None, text: str) -> None:
        self._ids += 1
        self.pending[self._ids] = Record(
            id=self._ids, key=f"k{self._ids}", kind=MESSAGE, job_id=None, team_id=None, channel=channel,
            thread_ts=None, ts=None, payload={"text": text, "blocks": None}, version=1, sent_version=0, applied=[],
            fallback=None, state="pending", attempts=0, next_at=0.0, expires_at=2e9, created_at=0.0, last_error=None,
            user_id=user,
        )

    async def look(self, now: float, *, limit: int = 100, skip_teams: Any = ()) -> Look:
        return Look(expired=[], due=[self.pending[i] for i in sorted(self.pending)][:limit], next_at=None)

    async def depth(self) -> int:
        return len(self.pending)

    async def delivered(self, record: Record, *, ts: str | None = None, channel: str | None = None) -> None:
        del self.pending[record.id]


class FakeClient:
    """Records each post as (channel, text)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str]] = []

    async def chat_postMessage(self, *, channel: str, text: str, **_: Any) -> dict[str, Any]:
        self.posts.append((channel, text))
        return {"ts": f"{len(self.posts)}.000", "channel": channel}


class Rig:
    """A sender over the fake outbox and client; each tick is one post slot per channel (1 a second, no burst)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.outbox = FakeOutbox()
        self.client = FakeClient()
        pacer = Pacer({"post": Rate(1.0, 1), "update": None, "react": None}, clock=self.clock)
        self.sender = Sender(self.outbox, self._client_for, pacer=pacer)  # type: ignore[arg-type]

    async def _client_for(self, team: str | None) -> FakeClient:
        return self.client

    async def tick(self) -> list[str]:
        """One pass of the sender a second after the last; the texts it posted."""
        self.clock.now += 1.0
        before = len(self.client.posts)
        await self.sender._pass()
        await asyncio.gather(*self.sender._in_flight.values())
        return [text for _, text in self.client.posts[before:]]


async def test_lanes_of_a_channel_take_turns_least_recently_served_first():
    rig = Rig()
    for n in range(5):
        rig.outbox.add("C1", ALICE, f"alice {n}")
    assert await rig.tick() == ["alice 0"]
    assert await rig.tick() == ["alice 1"]
    # Bob's one message, behind three of Alice's: his lane was never served, so it takes the next slot.
    rig.outbox.add("C1", BOB, "bob 0")
    assert await rig.tick() == ["bob 0"]
    # Records naming nobody are a lane of their own (the channel's, as before lanes); Carol's is newer still.
    rig.outbox.add("C1", None, "nobody 0")
    rig.outbox.add("C1", CAROL, "carol 0")
    rig.outbox.add("C1", CAROL, "carol 1")
    rig.outbox.add("C1", BOB, "bob 1")
    sent = [text for _ in range(8) for text in await rig.tick()]
    # Never-served lanes first (oldest first), then the least recently served: Alice (last served before Bob),
    # Bob, then Carol's second after both. Each user's own messages keep their order.
    assert sent == ["nobody 0", "carol 0", "alice 2", "bob 1", "carol 1", "alice 3", "alice 4"]
    assert rig.outbox.pending == {}


async def test_other_channels_are_not_held_back_and_each_channel_has_its_own_turns():
    rig = Rig()
    for n in range(3):
        rig.outbox.add("C1", ALICE, f"alice {n}")
    rig.outbox.add("C2", ALICE, "alice elsewhere")
    rig.outbox.add("C1", BOB, "bob 0")
    # One slot per channel per tick: C2 goes at once, whatever waits in C1.
    assert await rig.tick() == ["alice 0", "alice elsewhere"]
    assert await rig.tick() == ["bob 0"]
    assert await rig.tick() == ["alice 1"]
    assert await rig.tick() == ["alice 2"]


def test_lanes_forget_the_least_recently_served_half_when_full():
    lanes = Lanes(memory=4)
    for user in ["U1", "U2", "U3", "U4", "U5"]:
        lanes.served(("C1", user))
    outbox = FakeOutbox()
    for user in ["U5", "U4", "U1"]:
        outbox.add("C1", user, user)
    # U1 and U2 were forgotten (never served again, so first); U4 was served before U5.
    assert [r.payload["text"] for r in lanes.order(outbox.pending.values())] == ["U1", "U4", "U5"]


# -- the store's lane order, on this pass's database ---------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """An empty database of the kind this pass tests (scripts/test: SQLite, then PostgreSQL)."""
    if wanted_database() == "postgresql":
        from support.postgres import fresh_database

        from bot.store.postgres import PostgresDatabase

        with fresh_database() as url:
            db = PostgresDatabase(url)
            try:
                yield db
            finally:
                db.close()
    else:
        db = SqliteDatabase(tmp_path / "outbox.db")
        try:
            yield db
        finally:
            db.close()


async def test_due_reads_every_lanes_first_record_before_a_heavy_lanes_backlog(database):
    outbox = Outbox(database, ttl_seconds=3600)
    for n in range(250):
        await outbox.put_message(f"alice:{n}", channel="C1", text="a", user=ALICE, once=True)
    await outbox.put_message("bob:0", channel="C1", text="b", user=BOB)
    await outbox.put_ephemeral("carol:0", channel="C1", user=CAROL, text="c")  # an ephemeral serves its recipient
    await outbox.put_reactions("hourglass:0", channel="C1", ts="1.0", names=["x"])  # nobody's: the channel's lane
    await outbox.put_message("bob:1", channel="C1", text="b", user=BOB)
    due = await outbox.due(time.time(), limit=200)
    assert len(due) == 200
    # Each lane's first, then each one's second, ...: Bob's, Carol's and nobody's are read past Alice's 250.
    assert [r.key for r in due[:6]] == ["alice:0", "bob:0", "carol:0", "hourglass:0", "alice:1", "bob:1"]
    assert [r.key for r in due[6:]] == [f"alice:{n}" for n in range(2, 196)]
    assert [r.lane for r in due[:4]] == [("C1", ALICE), ("C1", BOB), ("C1", CAROL), ("C1", None)]
    # A reply still waits for its thread's parent, in any lane.
    await outbox.put_message("dave:parent", channel="C2", text="p", user="U0DAVE")
    await outbox.put_message("dave:reply", channel="C2", text="r", thread_key="dave:parent", user="U0DAVE")
    keys = [r.key for r in await outbox.due(time.time(), limit=200)]
    assert "dave:parent" in keys and "dave:reply" not in keys


async def test_an_outbox_from_before_lanes_gets_the_user_column_and_its_records_keep_their_channel_lane(database):
    # The table as first released (no user_id), with one pending record in it.
    database.create(Table(name="outbox", create=database.sql.outbox.table.create))
    now = time.time()
    database.call(lambda conn: _raw_sql(
        conn, "INSERT INTO outbox (key, kind, channel, payload, expires_at, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)", ("old:0", "message", "C1", json.dumps({"text": "old"}), now + 60, now, now),
    ))
    outbox = Outbox(database, ttl_seconds=3600)
    await outbox.put_message("new:0", channel="C1", text="new", user=ALICE)
    assert [(r.key, r.user_id) for r in await outbox.due(time.time())] == [("old:0", None), ("new:0", ALICE)]


# -- the real bot at Slack's pace ----------------------------------------------------------------------------------

# The module's bot (tests/conftest.py): paced as in production (SLACK_POSTS_PER_SECOND 0.95, bursts of 3), and the
# uploader is asked before a recording is cloned (Bob's consent question).
BOT_OPTIONS = {"pace_interval": 1.0}
BOT_ENV = {"CONSENT": "ask"}
BACKLOG = 12  # Alice's uploads: about 10 s of one channel's posting pace


def _queue_alices_uploads(bot: BotHarness, channel: str, tmp: Path) -> None:
    """Alice's `say` clips for `channel`, as bot.work.voice_service stores them (one upload record each)."""

    async def put() -> None:
        for n in range(BACKLOG):
            clip = tmp / f"alice-{n:02}.mp3"
            clip.write_bytes(b"ID3" + bytes(64))
            await bot.runtime.outbox.put_upload(
                f"say:{channel}:alice:{n:02}", channel=channel, path=clip, filename=clip.name, title=f"alice {n}",
                user=ALICE,
            )

    bot.submit(put()).result(10)


def _completed_uploads(bot: BotHarness) -> list[tuple[float, str]]:
    """(when, title) of every upload Slack completed, oldest first."""
    done = []
    for call in list(bot.slack.calls):
        if call.method == "files.completeUploadExternal":
            [item] = json.loads(call.params["files"])
            done.append((call.time, item["title"]))
    return done


def _posted(bot: BotHarness, channel: str) -> list[str]:
    """What `channel` shows, in order: an upload's title, or a message's text."""
    return [m["files"][0]["title"] if m.get("files") else m["text"] for m in bot.slack.messages(channel)]


def test_a_light_users_message_goes_out_within_a_slot_or_two_behind_a_heavy_users_backlog(bot, tmp_path):
    channel = "C0FAIR"
    _queue_alices_uploads(bot, channel, tmp_path)
    # Alice's burst has gone: from here her uploads leave at the channel's pace, about one a second.
    assert bot.wait(lambda: len(_completed_uploads(bot)) >= 3, 10)
    queued = time.time()
    question = bot.runtime.outbox.put_message("bob:question", channel=channel, text="bob's question", user=BOB)
    bot.submit(question).result(5)
    assert bot.wait(lambda: bot.slack.calls_to("chat.postMessage"), 10)
    [post] = [c for c in bot.slack.calls if c.method == "chat.postMessage"]
    assert post.params["text"] == "bob's question"
    # Before lanes it waited for all of Alice's backlog (about 9 s here; minutes with 120 of them).
    assert post.time - queued < 3.0, f"Bob waited {post.time - queued:.1f} s"
    bot.drain()
    # In the channel: Bob's question after three or four of Alice's clips; hers in their own order.
    shown = _posted(bot, channel)
    assert shown.index("bob's question") in (3, 4), shown
    assert [s for s in shown if s != "bob's question"] == [f"alice {n}" for n in range(BACKLOG)]
    assert [title for _, title in _completed_uploads(bot)] == [f"alice {n}" for n in range(BACKLOG)]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".mp3"]  # each clip deleted once sent


def test_a_consent_question_is_not_held_behind_another_users_say_uploads(bot, tmp_path, media):
    # The measured case: Bob's consent question waited for minutes behind Alice's `say` clips in the channel.
    channel = "C0FAIRSAY"
    recording = media.speech(15, ".wav").read_bytes()
    _queue_alices_uploads(bot, channel, tmp_path)
    assert bot.wait(lambda: len(_completed_uploads(bot)) >= 3, 10)
    response, body = bot.share(recording, "bob.wav", "audio/wav", "wav", channel=channel)
    assert response.status_code == 200
    share_channel, share_ts = where(body)

    def question() -> dict[str, Any] | None:
        for message in bot.replies(share_channel, share_ts):
            for block in message.get("blocks") or []:
                if any(e.get("action_id") == CONFIRM_ACTION for e in block.get("elements") or []):
                    return message
        return None

    assert bot.wait(lambda: question() is not None, 30)
    shown = time.time()
    [job] = bot.sql("SELECT id, status, updated_at FROM jobs WHERE share_ts = ?", (share_ts,))
    # The question was stored as the job began waiting for consent; it reached Bob's thread within ~3 s of that.
    assert job["status"] == "awaiting_consent"
    assert shown - job["updated_at"] < 3.0, f"the question took {shown - job['updated_at']:.1f} s"
    [status] = bot.sql("SELECT user_id FROM outbox WHERE key = ?", (f"job:{job['id']}:status",))
    assert status["user_id"] == UPLOADER  # the job's records are in Bob's lane
    # Cancel (nothing left waiting for the next test); then everything drains, Alice's clips in their order.
    message = question()
    assert message is not None
    payload = block_actions(
        message, channel, CANCEL_ACTION, UPLOADER, trigger_id=bot.slack.issue_trigger_id(),
        response_url=bot.slack.issue_response_url(), team_id=bot.slack.team_id, api_app_id=bot.slack.app_id,
    )
    assert bot.deliver(payload, kind="interactive").status_code == 200
    bot.drain()
    assert [title for _, title in _completed_uploads(bot)] == [f"alice {n}" for n in range(BACKLOG)]
