"""The outbox and its sender against the Slack stand-in: coalescing, order, pacing, 429s and permanent errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.harness import BOT_TOKEN, SIGNING_SECRET

from bot.settings import load_settings
from bot.slack.pacing import Pacer, Rate
from bot.slack.sender import Sender
from bot.slack.workspaces import create_web_client
from bot.store.database import SqliteDatabase
from bot.store.outbox import DEAD, SENT, Outbox
from bot.testing.standin_slack import SlackStandIn

CHANNEL = "C0OUTBOX"


class Clock:
    """A hand-driven clock for the pacer."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pacer_allows_a_burst_then_one_per_interval():
    clock = Clock()
    pacer = Pacer({"post": Rate(1.0, 3)}, clock=clock)
    for _ in range(3):
        assert pacer.delay("post", "C1") == 0
        pacer.take("post", "C1")
    assert pacer.delay("post", "C1") == pytest.approx(1.0)
    assert pacer.delay("post", "C2") == 0  # another channel has its own bucket
    clock.now += 0.5
    assert pacer.delay("post", "C1") == pytest.approx(0.5)
    clock.now += 0.5
    assert pacer.delay("post", "C1") == 0


def test_pacer_retry_after_blocks_even_an_unpaced_kind():
    clock = Clock()
    pacer = Pacer({"react": None}, clock=clock)
    assert pacer.delay("react", "T1") == 0
    pacer.block("react", "T1", 7)
    assert pacer.delay("react", "T1") == pytest.approx(7)
    assert pacer.delay("react", "T2") == 0
    clock.now += 7
    assert pacer.delay("react", "T1") == 0


@pytest.fixture
def slack():
    with SlackStandIn(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as standin:
        yield standin


class Rig:
    """An outbox on a real SQLite file and a sender aimed at the stand-in, on the test's event loop."""

    def __init__(self, slack: SlackStandIn, tmp: Path, pacer: Pacer | None = None, ttl: float = 3600.0):
        env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_API_URL": slack.api_url}
        self.settings = load_settings(environ=env)
        self.db = SqliteDatabase(tmp / "outbox.db")
        self.outbox = Outbox(self.db, ttl_seconds=ttl)
        self.client = create_web_client(self.settings, retries=False, timeout=5)
        self.sender = Sender(
            self.outbox, self._client_for, pacer=pacer or Pacer({"post": None, "update": None, "react": None}),
            max_backoff=0.2,
        )
        self.outbox.on_change = self.sender.wake

    async def _client_for(self, team: str | None):
        return self.client

    async def close(self) -> None:
        await self.sender.stop(0.1)
        self.db.close()

    async def __aenter__(self) -> Rig:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def test_only_the_newest_version_of_a_message_is_sent(slack, tmp_path):
    async with Rig(slack, tmp_path) as rig:
        # Ten progress states written before the sender runs: Slack sees one post, with the last state.
        for n in range(10):
            await rig.outbox.put_message("job:1:status", channel=CHANNEL, text=f"state {n}")
        rig.sender.start()
        await rig.sender.drain(10)
        posts = slack.calls_to("chat.postMessage")
        assert [p["text"] for p in posts] == ["state 9"]
        assert slack.calls_to("chat.update") == []
        # A later state edits that message; writing the same state again sends nothing.
        await rig.outbox.put_message("job:1:status", channel=CHANNEL, text="final")
        await rig.outbox.put_message("job:1:status", channel=CHANNEL, text="final")
        await rig.sender.drain(10)
        assert [u["text"] for u in slack.calls_to("chat.update")] == ["final"]
        assert [m["text"] for m in slack.messages(CHANNEL)] == ["final"]
        assert (await rig.outbox.get("job:1:status")).state == SENT


async def test_a_reply_waits_for_its_parent_and_lands_in_its_thread(slack, tmp_path):
    async with Rig(slack, tmp_path) as rig:
        await rig.outbox.put_message("job:2:parent", channel=CHANNEL, text="parent", once=True)
        await rig.outbox.put_message("job:2:status", channel=CHANNEL, text="reply", thread_key="job:2:parent")
        slack.fail_next("chat.postMessage", "internal_error")  # the parent's first try fails
        rig.sender.start()
        await rig.sender.drain(10)
        [parent, reply] = slack.messages(CHANNEL)
        assert parent["text"] == "parent" and reply["text"] == "reply" and reply["thread_ts"] == parent["ts"]


async def test_an_outage_is_retried_without_a_restart_and_coalesced(slack, tmp_path):
    async with Rig(slack, tmp_path) as rig:
        rig.sender.start()
        slack.outage("refuse")
        await rig.outbox.put_message("job:3:status", channel=CHANNEL, text="downloading")
        assert await slack.wait_for_async(lambda: slack.outage_api_calls("chat.postMessage") >= 2, 10)
        slack.outage("html")
        await rig.outbox.put_message("job:3:status", channel=CHANNEL, text="answer")
        assert await slack.wait_for_async(lambda: slack.outage_api_calls("chat.postMessage") >= 4, 10)
        slack.restore()
        await rig.sender.drain(10)
        assert [p["text"] for p in slack.calls_to("chat.postMessage")] == ["answer"]
        assert [m["text"] for m in slack.messages(CHANNEL)] == ["answer"]


async def test_429_waits_for_retry_after(slack, tmp_path):
    async with Rig(slack, tmp_path) as rig:
        slack.rate_limit_next("chat.postMessage", retry_after=1)
        await rig.outbox.put_message("job:4:status", channel=CHANNEL, text="hello")
        rig.sender.start()
        await rig.sender.drain(10)
        posts = [c.time for c in slack.calls if c.method == "chat.postMessage"]
        assert len(posts) == 2 and posts[1] - posts[0] >= 1.0
        assert [m["text"] for m in slack.messages(CHANNEL)] == ["hello"]


async def test_messages_in_one_channel_go_out_in_order_at_the_paced_rate(slack, tmp_path):
    rig = Rig(slack, tmp_path, pacer=Pacer({"post": Rate(5.0, 2), "update": None, "react": None}))
    try:
        for n in range(6):
            await rig.outbox.put_message(f"job:{n}:status", channel=CHANNEL, text=f"answer {n}")
        rig.sender.start()
        await rig.sender.drain(20)
    finally:
        await rig.close()
    posts = [c for c in slack.calls if c.method == "chat.postMessage"]
    assert [c.params["text"] for c in posts] == [f"answer {n}" for n in range(6)]
    # Burst of 2, then 5 a second: the last of six leaves no sooner than 4 intervals after the first.
    assert posts[-1].time - posts[0].time >= 4 / 5 - 0.05


async def test_deleted_message_is_posted_again(slack, tmp_path):
    async with Rig(slack, tmp_path) as rig:
        await rig.outbox.put_message("job:5:status", channel=CHANNEL, text="converting")
        rig.sender.start()
        await rig.sender.drain(10)
        [first] = slack.messages(CHANNEL)
        slack.delete_message(CHANNEL, first["ts"])
        await rig.outbox.put_message("job:5:status", channel=CHANNEL, text="answer")
        await rig.sender.drain(10)
        assert [m["text"] for m in slack.messages(CHANNEL)] == ["answer"]
        assert len(slack.calls_to("chat.postMessage")) == 2


async def test_not_in_channel_answers_in_the_users_dm(slack, tmp_path):
    async with Rig(slack, tmp_path) as rig:
        slack.remove_bot_from(CHANNEL)
        await rig.outbox.put_message(
            "job:6:status", channel=CHANNEL, text="Voice cloned: v_1", fallback={"user": "U0ASKER"}
        )
        rig.sender.start()
        await rig.sender.drain(10)
        [dm] = slack.messages(slack.dm_channel("U0ASKER"))
        assert "Voice cloned: v_1" in dm["text"] and "/invite" in dm["text"]
        assert slack.messages(CHANNEL) == []


async def test_revoked_token_stops_sending_for_the_workspace(slack, tmp_path, caplog):
    async with Rig(slack, tmp_path) as rig:
        slack.revoke_token()
        await rig.outbox.put_message("job:0:status", channel=CHANNEL, text="x", team_id="T1")
        rig.sender.start()
        assert await slack.wait_for_async(lambda: "T1" in rig.sender.stopped_teams, 5)
        refused = len(slack.calls_to("chat.postMessage"))
        assert refused == 1
        # More answers for that workspace: none is tried, however often the sender looks.
        for n in range(1, 4):
            await rig.outbox.put_message(f"job:{n}:status", channel=CHANNEL, text="x", team_id="T1")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            rig.sender.wake()
            await slack.wait_for_async(lambda: len(slack.calls_to("chat.postMessage")) > refused, 0.2)
        assert len(slack.calls_to("chat.postMessage")) == refused
        # Another workspace is still served.
        await rig.outbox.put_message("job:9:status", channel="C0OTHER", text="y", team_id="T2")
        assert await slack.wait_for_async(lambda: len(slack.calls_to("chat.postMessage")) > refused, 5)
        assert len([r for r in caplog.records if r.levelname == "ERROR" and "TOKEN REFUSED" in r.getMessage()]) == 1


async def test_many_workspaces_a_refused_token_drops_that_record_and_forgets_the_token(slack, tmp_path):
    # OAuth mode: the workspace left (or its token was revoked); it may reinstall, so nothing stops for good.
    async with Rig(slack, tmp_path) as rig:
        forgotten: list[str | None] = []
        rig.sender.on_token_refused = forgotten.append
        slack.revoke_token()
        await rig.outbox.put_message("job:0:status", channel=CHANNEL, text="x", team_id="T1")
        rig.sender.start()
        assert await slack.wait_for_async(lambda: forgotten == ["T1"], 5)
        record = await rig.outbox.get("job:0:status")
        assert record is not None and record.state == "dead" and rig.sender.stopped_teams == set()
        # Reinstalled (a new token for the same workspace): its next answer goes out.
        rig.client.token = slack.add_workspace(slack.team_id).tokens[-1]
        await rig.outbox.put_message("job:1:status", channel=CHANNEL, text="y", team_id="T1")
        assert await slack.wait_for_async(lambda: [m["text"] for m in slack.messages(CHANNEL)] == ["y"], 5)


async def test_an_answer_older_than_the_ttl_is_given_up_with_one_log_line(slack, tmp_path, caplog):
    rig = Rig(slack, tmp_path, ttl=0.5)
    try:
        slack.outage("refuse")
        await rig.outbox.put_message("job:7:status", channel=CHANNEL, text="lost cause")
        rig.sender.start()
        assert await slack.wait_for_async(lambda: slack.outage_api_calls("chat.postMessage") >= 1, 5)
        deadline = time.monotonic() + 5
        while (await rig.outbox.get("job:7:status")).state != DEAD and time.monotonic() < deadline:
            rig.sender.wake()
            await slack.wait_for_async(lambda: False, 0.1)
        assert (await rig.outbox.get("job:7:status")).state == DEAD
    finally:
        await rig.close()
    gave_up = [r for r in caplog.records if "gave up on a Slack answer" in r.getMessage()]
    assert len(gave_up) == 1
