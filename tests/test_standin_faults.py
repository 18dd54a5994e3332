"""The stand-ins' fault controls behave like the real failures: outages, slow methods, permanent Slack error states,
DMs by user id and the per-channel posting limit. Every test speaks real HTTP to the stand-in, so removing a
control makes its test fail."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from test_standin_trtc import APP_ID, SECRET_ID, SECRET_KEY, clone, good_params, hand_signed, sdk

import bot.testing.standin_trtc as trtc_module
from bot.testing.standin_slack import SlackStandIn
from bot.testing.standin_trtc import TrtcStandIn

MODAL = {"type": "modal", "title": {"type": "plain_text", "text": "Clone a voice"}, "blocks": []}


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture
def trtc() -> Iterator[TrtcStandIn]:
    with TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID) as standin:
        yield standin


def client_for(slack: SlackStandIn, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token or slack.bot_token, base_url=slack.api_url)


async def slack_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


def bearer(slack: SlackStandIn) -> dict[str, str]:
    return {"Authorization": f"Bearer {slack.bot_token}"}


# --------------------------------------------------------------------------------------------------
# Slack: outages
# --------------------------------------------------------------------------------------------------


async def test_refuse_outage_resets_api_files_and_open_connections_then_restores(slack: SlackStandIn) -> None:
    client = client_for(slack)
    file = slack.add_file(b"RIFF-audio", "a.wav", "audio/wav", "wav")
    posted = await client.chat_postMessage(channel="C0TEST", text="before")
    async with httpx.AsyncClient() as http:
        assert (await http.post(slack.api_url + "auth.test", headers=bearer(slack))).json()["ok"]
        calls_before = len(slack.calls)

        slack.outage("refuse")
        assert slack.in_outage == "refuse"
        # The keep-alive connection from the call above was reset too: no HTTP answer on any connection.
        with pytest.raises(httpx.TransportError):
            await http.post(slack.api_url + "auth.test", headers=bearer(slack))
        with pytest.raises(httpx.TransportError):
            await http.get(file["url_private_download"], headers=bearer(slack))
        with pytest.raises(aiohttp.ClientError):  # slack_sdk sees what it sees when Slack's edge is gone
            await client.chat_postMessage(channel="C0TEST", text="during")

        assert len(slack.calls) == calls_before, "nothing reached the Web API"
        assert slack.outage_api_calls("chat.postMessage") >= 1 and slack.outage_api_calls("auth.test") == 1
        assert any(r.path.startswith("/files-pri/") and r.status == 0 for r in slack.outage_requests)
        assert slack.outage_hits == len(slack.outage_requests) >= 3

        slack.restore()
        assert slack.in_outage is None
        download = await http.get(file["url_private_download"], headers=bearer(slack))
    assert download.content == b"RIFF-audio"
    await client.chat_update(channel="C0TEST", ts=posted["ts"], text="after")
    assert [m["text"] for m in slack.messages("C0TEST")] == ["after"]


async def test_refuse_outage_drops_socket_mode_connections(slack: SlackStandIn) -> None:
    opened = await client_for(slack, slack.app_token).apps_connections_open(app_token=slack.app_token)
    async with aiohttp.ClientSession() as session, session.ws_connect(opened["url"]) as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
        assert await slack.wait_for_socket_async(5)
        await asyncio.to_thread(slack.outage, "refuse")
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
    assert await slack.wait_for_async(lambda: slack.open_sockets() == 0, 5)
    with pytest.raises(aiohttp.ClientError):
        await client_for(slack, slack.app_token).apps_connections_open(app_token=slack.app_token)


async def test_html_outage_answers_503_pages_like_slacks_edge(slack: SlackStandIn) -> None:
    file = slack.add_file(b"RIFF-audio", "a.wav", "audio/wav", "wav")
    slack.outage("html")
    async with httpx.AsyncClient() as http:
        api = await http.post(slack.api_url + "chat.postMessage", headers=bearer(slack), json={"channel": "C0TEST"})
        download = await http.get(file["url_private_download"], headers=bearer(slack))
    for answer in (api, download):
        assert answer.status_code == 503 and answer.headers["content-type"].startswith("text/html")
        assert b"<html" in answer.content and b"RIFF" not in answer.content
    sdk_error = await slack_error(client_for(slack).auth_test())
    assert sdk_error.response.status_code == 503
    assert slack.outage_api_calls() == 2 and slack.outage_hits == 3
    assert {r.status for r in slack.outage_requests} == {503} and slack.calls == []

    slack.restore()
    assert (await client_for(slack).auth_test())["ok"]


async def test_start_and_stop_work_during_an_outage_and_state_survives(slack: SlackStandIn) -> None:
    posted = await client_for(slack).chat_postMessage(channel="C0TEST", text="kept")
    file = slack.add_file(b"RIFF-audio", "a.wav", "audio/wav", "wav")
    slack.outage("refuse")
    await asyncio.to_thread(slack.stop)
    await asyncio.to_thread(slack.start)
    assert slack.in_outage == "refuse", "a restart does not end an outage"
    with pytest.raises(aiohttp.ClientError):
        await client_for(slack).auth_test()
    slack.restore()
    client = client_for(slack)  # the restarted stand-in listens on a new port
    assert (await client.files_info(file=file["id"]))["file"]["name"] == "a.wav"
    assert slack.messages("C0TEST")[0]["ts"] == posted["ts"]
    with pytest.raises(ValueError):
        slack.outage("fire")


# --------------------------------------------------------------------------------------------------
# Slack: slow methods
# --------------------------------------------------------------------------------------------------


async def test_delay_next_holds_one_method_without_holding_up_others(slack: SlackStandIn) -> None:
    client = client_for(slack)
    slack.delay_next("views.open", 30)
    slow = asyncio.create_task(client.views_open(trigger_id=slack.issue_trigger_id(), view=MODAL))
    assert await slack.wait_for_async(lambda: len(slack.delayed_calls) == 1, 5)
    assert slack.delayed_calls[0].method == "views.open"

    started = time.monotonic()
    assert (await client.auth_test())["ok"]
    assert time.monotonic() - started < 5, "the stand-in's loop was not blocked"
    assert not slow.done()
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    # stop() (the fixture's) wakes the held call, so the test never waits 30 s.


async def test_delay_next_runs_the_method_late_so_a_trigger_id_can_expire(slack: SlackStandIn) -> None:
    client = client_for(slack)
    slack.delay_next("views.open", 0.4, times=1)
    started = time.monotonic()
    late = await slack_error(client.views_open(trigger_id=slack.issue_trigger_id(age=2.8), view=MODAL))
    assert time.monotonic() - started >= 0.4
    assert late.response["error"] == "expired_trigger_id"
    # Only one call was held: the next one is immediate and its fresh trigger works.
    assert (await client.views_open(trigger_id=slack.issue_trigger_id(), view=MODAL))["ok"]
    assert len(slack.delayed_calls) == 1


# --------------------------------------------------------------------------------------------------
# Slack: permanent error states
# --------------------------------------------------------------------------------------------------


async def test_remove_bot_from_answers_not_in_channel(slack: SlackStandIn) -> None:
    client = client_for(slack)
    posted = await client.chat_postMessage(channel="C0GONE", text="hi")
    theirs = slack.user_message("C0GONE", text="clone me", subtype=None)["event"]["ts"]
    slack.remove_bot_from("C0GONE")

    calls = [
        client.chat_postMessage(channel="C0GONE", text="x"),
        client.chat_update(channel="C0GONE", ts=posted["ts"], text="x"),
        client.reactions_add(channel="C0GONE", timestamp=theirs, name="eyes"),
        client.reactions_remove(channel="C0GONE", timestamp=theirs, name="eyes"),
    ]
    for call in calls:
        assert (await slack_error(call)).response["error"] == "not_in_channel"
    assert (await client.chat_postMessage(channel="C0TEST", text="elsewhere"))["ok"]
    assert (await client.conversations_info(channel="C0GONE"))["channel"]["is_member"] is False

    slack.add_bot_to("C0GONE")
    assert (await client.chat_postMessage(channel="C0GONE", text="back"))["ok"]


async def test_archive_channel_answers_is_archived(slack: SlackStandIn) -> None:
    client = client_for(slack)
    slack.archive_channel("C0OLD")
    assert (await slack_error(client.chat_postMessage(channel="C0OLD", text="x"))).response["error"] == "is_archived"
    ephemeral = await slack_error(client.chat_postEphemeral(channel="C0OLD", user="U0USER", text="x"))
    assert ephemeral.response["error"] == "is_archived"
    assert (await client.conversations_info(channel="C0OLD"))["channel"]["is_archived"] is True
    assert slack.messages("C0OLD") == []


async def test_delete_message_makes_updates_and_reactions_answer_message_not_found(slack: SlackStandIn) -> None:
    client = client_for(slack)
    status = await client.chat_postMessage(channel="C0TEST", text="Working on it")
    theirs = slack.user_message("C0TEST", text="my voice", subtype=None)["event"]["ts"]
    event = slack.delete_message("C0TEST", status["ts"])
    slack.delete_message("C0TEST", theirs)

    assert event["event"]["subtype"] == "message_deleted" and event["event"]["deleted_ts"] == status["ts"]
    assert event["event"]["previous_message"]["text"] == "Working on it"
    assert slack.delete_message("D0DM", "1.000001")["event"]["channel_type"] == "im"
    assert slack.messages("C0TEST") == []
    gone = await slack_error(client.chat_update(channel="C0TEST", ts=status["ts"], text="Done"))
    assert gone.response["error"] == "message_not_found"
    no_target = await slack_error(client.reactions_add(channel="C0TEST", timestamp=theirs, name="eyes"))
    assert no_target.response["error"] == "message_not_found"


async def test_revoked_and_inactive_tokens_fail_every_call(slack: SlackStandIn) -> None:
    file = slack.add_file(b"RIFF-audio", "a.wav", "audio/wav", "wav")
    slack.revoke_token()
    for call in (client_for(slack).auth_test(), client_for(slack).chat_postMessage(channel="C0TEST", text="x")):
        assert (await slack_error(call)).response["error"] == "token_revoked"
    async with httpx.AsyncClient() as http:
        download = await http.get(file["url_private_download"], headers=bearer(slack))
    assert download.status_code == 302, "the file host treats a revoked token as no token"
    # The app-level token (Socket Mode) still works unless revoked too.
    assert (await client_for(slack, slack.app_token).apps_connections_open(app_token=slack.app_token))["ok"]
    slack.revoke_token(slack.app_token)
    opened = await slack_error(client_for(slack, slack.app_token).apps_connections_open(app_token=slack.app_token))
    assert opened.response["error"] == "token_revoked"

    slack.reset()
    slack.deactivate_account()
    assert (await slack_error(client_for(slack).auth_test())).response["error"] == "account_inactive"
    slack.reset()
    assert (await client_for(slack).auth_test())["ok"], "reset() forgets injected faults"


# --------------------------------------------------------------------------------------------------
# Slack: posting to a user id, posting limit
# --------------------------------------------------------------------------------------------------


async def test_posting_to_a_user_id_posts_into_a_stable_dm(slack: SlackStandIn) -> None:
    client = client_for(slack)
    first = await client.chat_postMessage(channel="U0USER", text="your voice is ready")
    second = await client.chat_postMessage(channel="U0USER", text="again")
    other = await client.chat_postMessage(channel="U0OTHER", text="hello")
    dm = first["channel"]
    assert dm.startswith("D") and second["channel"] == dm == slack.dm_channel("U0USER")
    assert other["channel"].startswith("D") and other["channel"] != dm
    assert [m["text"] for m in slack.messages(dm)] == ["your voice is ready", "again"]
    assert slack.messages("U0USER") == []
    info = (await client.conversations_info(channel=dm))["channel"]
    assert info["is_im"] and info["user"] == "U0USER"
    assert (await client.chat_update(channel=dm, ts=first["ts"], text="edited"))["ok"]


async def test_post_limit_answers_429_per_channel() -> None:
    with SlackStandIn(post_limit=(0.1, 2)) as slack:
        client = client_for(slack)
        assert (await client.chat_postMessage(channel="C0A", text="1"))["ok"]
        assert (await client.chat_postMessage(channel="C0A", text="2"))["ok"]
        limited = await slack_error(client.chat_postMessage(channel="C0A", text="3"))
        assert limited.response.status_code == 429 and limited.response["error"] == "ratelimited"
        assert int(limited.response.headers["Retry-After"]) >= 1
        assert (await client.chat_postMessage(channel="C0B", text="other channel"))["ok"]
        assert slack.post_refusals == 1
        assert [m["text"] for m in slack.messages("C0A")] == ["1", "2"]


async def test_limit_posts_is_off_by_default_and_can_be_set_and_lifted(slack: SlackStandIn) -> None:
    client = client_for(slack)
    for n in range(5):
        assert (await client.chat_postMessage(channel="C0TEST", text=str(n)))["ok"]
    slack.limit_posts(per_second=0.1, burst=1)
    assert (await client.chat_postMessage(channel="C0TEST", text="one"))["ok"]
    assert (await slack_error(client.chat_postMessage(channel="C0TEST", text="two"))).response.status_code == 429
    assert slack.post_refusals == 1
    slack.limit_posts(None)
    assert (await client.chat_postMessage(channel="C0TEST", text="free again"))["ok"]


# --------------------------------------------------------------------------------------------------
# TRTC: outages and the busiest second
# --------------------------------------------------------------------------------------------------


def test_trtc_refuse_outage_resets_connections_and_still_counts(trtc: TrtcStandIn) -> None:
    with httpx.Client() as http:
        assert http.post(trtc.url + "/", json={}).status_code == 200  # a keep-alive connection is open
        trtc.outage("refuse")
        assert trtc.in_outage == "refuse"
        with pytest.raises(httpx.TransportError):
            http.post(trtc.url + "/", json={})
    with pytest.raises(httpx.TransportError):
        hand_signed(trtc.url, good_params())
    with pytest.raises(TencentCloudSDKException) as caught:
        clone(sdk(trtc.url))
    assert caught.value.get_code() == "ClientNetworkError"
    outcomes = [r.outcome for r in trtc.requests]
    assert outcomes[1:] == ["reset"] * (len(outcomes) - 1) and len(outcomes) >= 4
    assert all(r.request_id is None for r in trtc.requests[1:])

    trtc.restore()
    assert clone(sdk(trtc.url)).VoiceId


@pytest.mark.parametrize("status", [502, 503])
def test_trtc_html_outage_answers_a_gateway_page(trtc: TrtcStandIn, status: int) -> None:
    trtc.fail_next("InternalError")  # scripts wait for the outage to end
    trtc.outage("html", status=status)
    answer = hand_signed(trtc.url, good_params())
    assert answer.status_code == status and answer.headers["content-type"].startswith("text/html")
    assert f"{status}".encode() in answer.content and b"Response" not in answer.content
    with pytest.raises(TencentCloudSDKException) as caught:
        clone(sdk(trtc.url))
    assert caught.value.get_code() == "ServerNetworkError"
    assert [r.outcome for r in trtc.requests] == [f"HTTP {status}"] * 2

    trtc.restore()
    assert hand_signed(trtc.url, good_params()).json()["Response"]["Error"]["Code"] == "InternalError"
    assert clone(sdk(trtc.url)).VoiceId


def test_trtc_outage_keeps_the_max_rps_window() -> None:
    with TrtcStandIn(SECRET_ID, SECRET_KEY, max_rps=3) as trtc:
        trtc.outage("html")
        statuses = [httpx.post(trtc.url + "/", json={}).status_code for _ in range(5)]
        assert trtc.requests[-1].time - trtc.requests[0].time < 1.0, "the machine was too slow for this test"
        assert statuses == [502] * 5
        assert trtc.refusals == 2, "requests over max_rps are counted during an outage too"
        assert trtc.max_requests_per_second() == 5


def test_max_requests_per_second_slides_over_arrival_times(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrivals at scripted instants (only the stand-in's module sees this clock): 4 fall within one second
    # ([0.5, 1.45]) though no whole-second bucket holds more than 3.
    arrivals = iter([0.0, 0.5, 0.9, 1.4, 1.45, 3.0])
    clock = types.SimpleNamespace(monotonic=lambda: 1000.0 + next(arrivals), time=time.time)
    with TrtcStandIn(SECRET_ID, SECRET_KEY) as trtc:
        assert trtc.max_requests_per_second() == 0
        monkeypatch.setattr(trtc_module, "time", clock)
        for _ in range(6):
            httpx.post(trtc.url + "/", json={})
        monkeypatch.undo()
        assert len(trtc.requests) == 6
        assert trtc.max_requests_per_second() == 4
        trtc.reset()
        assert trtc.max_requests_per_second() == 0
