"""The Slack stand-in answers slack_sdk and slack_bolt as Slack does, over loopback HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.testing.standin_slack import (
    SlackStandIn,
    message_event,
    post_signed_async,
    sign,
    slash_command,
    view_submission,
)

MODAL = {
    "type": "modal",
    "callback_id": "clone",
    "title": {"type": "plain_text", "text": "Clone a voice"},
    "submit": {"type": "plain_text", "text": "Clone"},
    "private_metadata": json.dumps({"channel": "C0TEST"}),
    "blocks": [
        {"type": "input", "block_id": "name", "element": {"type": "plain_text_input", "action_id": "v"}}
    ],
}


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


def client_for(slack: SlackStandIn, token: str | None = None, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token or slack.bot_token, base_url=slack.api_url, **kwargs)


async def slack_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


async def test_messages_post_update_and_thread(slack: SlackStandIn) -> None:
    client = client_for(slack)
    auth = await client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == ("U0BOT", "B0BOT", "T0TEST")

    parent = slack.user_message("C0TEST", text="my voice")["event"]
    status = await client.chat_postMessage(channel="C0TEST", thread_ts=parent["ts"], text="Working on it")
    assert status["channel"] == "C0TEST" and status["message"]["thread_ts"] == parent["ts"]
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Done*"}}]
    updated = await client.chat_update(channel="C0TEST", ts=status["ts"], text="Done", blocks=blocks)
    assert updated["message"]["blocks"] == blocks

    thread = slack.thread("C0TEST", parent["ts"])
    assert [m["text"] for m in thread] == ["my voice", "Done"]
    assert thread[1]["edited"]["user"] == "U0BOT"
    assert slack.calls_to("chat.update")[0]["ts"] == status["ts"]

    missing = await slack_error(client.chat_update(channel="C0TEST", ts="1.000001", text="x"))
    assert missing.response["error"] == "message_not_found"
    not_mine = await slack_error(client.chat_update(channel="C0TEST", ts=parent["ts"], text="x"))
    assert not_mine.response["error"] == "cant_update_message"
    with pytest.warns(UserWarning, match="text"):  # slack_sdk warns too; the server must still refuse
        no_text = await slack_error(client.chat_postMessage(channel="C0TEST", text=""))
    assert no_text.response["error"] == "no_text"
    ephemeral = await client.chat_postEphemeral(channel="C0TEST", user="U0USER", text="only you")
    assert slack.ephemerals("C0TEST")[0]["message_ts"] == ephemeral["message_ts"]


async def test_tokens_and_unknown_methods(slack: SlackStandIn) -> None:
    wrong = await slack_error(client_for(slack, "xoxb-wrong").chat_postMessage(channel="C0TEST", text="x"))
    assert wrong.response["error"] == "invalid_auth"
    app_token = await slack_error(
        client_for(slack, slack.app_token).chat_postMessage(channel="C0TEST", text="x")
    )
    assert app_token.response["error"] == "not_allowed_token_type"
    bot_token = await slack_error(client_for(slack).apps_connections_open(app_token=slack.bot_token))
    assert bot_token.response["error"] == "not_allowed_token_type"
    unknown = await slack_error(client_for(slack).api_call("files.upload.v3"))
    assert unknown.response["error"] == "unknown_method"
    async with httpx.AsyncClient() as http:
        form = await http.post(slack.api_url + "auth.test", data={"token": slack.bot_token})
        anonymous = await http.post(slack.api_url + "auth.test")
    assert form.json()["ok"] is True
    assert anonymous.json() == {"ok": False, "error": "not_authed"}
    assert all("token" not in c.params for c in slack.calls)


async def test_reactions_behave_like_slack(slack: SlackStandIn) -> None:
    client = client_for(slack)
    ts = slack.user_message("C0TEST", text="hi")["event"]["ts"]
    await client.reactions_add(channel="C0TEST", timestamp=ts, name="eyes")
    again = await slack_error(client.reactions_add(channel="C0TEST", timestamp=ts, name="eyes"))
    assert again.response["error"] == "already_reacted"
    await client.reactions_add(channel="C0TEST", timestamp=ts, name="white_check_mark")
    await client.reactions_remove(channel="C0TEST", timestamp=ts, name="eyes")
    assert slack.reactions("C0TEST", ts) == ["white_check_mark"]
    gone = await slack_error(client.reactions_remove(channel="C0TEST", timestamp=ts, name="eyes"))
    assert gone.response["error"] == "no_reaction"


async def test_files_info_reveals_slack_connect_stubs(slack: SlackStandIn) -> None:
    client = client_for(slack)
    stub = slack.add_file(b"ID3\x03", "clip.mp3", "audio/mpeg", "mp3", slack_connect_stub=True)
    assert stub == {
        "id": stub["id"],
        "mode": "file_access",
        "file_access": "check_file_info",
        "created": 0,
        "timestamp": 0,
        "user": "",
    }
    info = await client.files_info(file=stub["id"])
    assert info["file"]["mimetype"] == "audio/mpeg" and info["file"]["size"] == 4
    assert info["file"]["url_private_download"].startswith(slack.url + "/files-pri/T0TEST-")
    missing = await slack_error(client.files_info(file="F0NOPE"))
    assert missing.response["error"] == "file_not_found"
    hidden = slack.add_file(b"x", "a.m4a", "audio/mp4", "m4a", visible_to_bot=False)
    assert (await slack_error(client.files_info(file=hidden["id"]))).response["error"] == "file_not_found"


async def test_private_files_need_the_bot_token(slack: SlackStandIn) -> None:
    file = slack.add_file(
        b"OggS\x00\x02", "voice.ogg", "audio/ogg", "ogg", subtype="slack_audio", duration_ms=900
    )
    assert file["subtype"] == "slack_audio" and file["duration_ms"] == 900
    async with httpx.AsyncClient() as http:
        good = await http.get(
            file["url_private_download"], headers={"Authorization": f"Bearer {slack.bot_token}"}
        )
        wrong = await http.get(file["url_private_download"], headers={"Authorization": "Bearer xoxb-nope"})
        followed = await http.get(file["url_private"], follow_redirects=True)
    assert good.status_code == 200 and good.content == b"OggS\x00\x02"
    assert good.headers["content-type"] == "audio/ogg"
    assert wrong.status_code == 302
    assert wrong.headers["location"].startswith(slack.url + "/?redir=%2Ffiles-pri%2F")
    # What a client that follows redirects receives instead of the file: Slack's sign-in page.
    assert followed.status_code == 200 and followed.headers["content-type"].startswith("text/html")
    assert b"Sign in" in followed.content
    seen = [(r.authorization_present, r.authorized, r.status) for r in slack.file_requests]
    assert seen == [(True, True, 200), (True, False, 302), (False, False, 302), (False, False, 200)]


async def test_files_upload_v2_shares_into_the_thread(slack: SlackStandIn) -> None:
    client = client_for(slack)
    parent = slack.user_message("C0TEST", text="clone me")["event"]["ts"]
    result = await client.files_upload_v2(
        channel="C0TEST", thread_ts=parent, content=b"RIFF-preview", filename="preview.wav", title="Preview"
    )
    file_id = result["file"]["id"]
    assert slack.file_content(file_id) == b"RIFF-preview"
    shared = slack.thread("C0TEST", parent)[-1]
    assert shared["files"][0]["id"] == file_id and shared["files"][0]["title"] == "Preview"
    assert (await client.files_info(file=file_id))["file"]["name"] == "preview.wav"


async def test_views_open_exchanges_a_fresh_trigger_once(slack: SlackStandIn) -> None:
    client = client_for(slack)
    trigger = slack.issue_trigger_id()
    view = (await client.views_open(trigger_id=trigger, view=MODAL))["view"]
    assert view["id"].startswith("V") and view["callback_id"] == "clone" and slack.views[view["id"]]
    again = await slack_error(client.views_open(trigger_id=trigger, view=MODAL))
    assert again.response["error"] == "exchanged_trigger_id"
    old = await slack_error(client.views_open(trigger_id=slack.issue_trigger_id(age=3.5), view=MODAL))
    assert old.response["error"] == "expired_trigger_id"
    forged = await slack_error(client.views_open(trigger_id="123.456.abc", view=MODAL))
    assert forged.response["error"] == "invalid_trigger_id"

    stale = await slack_error(client.views_update(view_id=view["id"], hash="0.stale", view=MODAL))
    assert stale.response["error"] == "hash_conflict"
    progress = dict(MODAL, title={"type": "plain_text", "text": "Cloning..."})
    updated = (await client.views_update(view_id=view["id"], hash=view["hash"], view=progress))["view"]
    assert updated["title"]["text"] == "Cloning..." and updated["hash"] != view["hash"]

    payload = slack.view_submission(
        view["id"], "U0USER", {"name": {"v": {"type": "plain_text_input", "value": "x"}}}
    )
    assert payload["view"]["state"]["values"]["name"]["v"]["value"] == "x"
    assert payload["view"]["private_metadata"] == MODAL["private_metadata"]
    assert (await client.views_open(trigger_id=payload["trigger_id"], view=MODAL))["ok"]


async def test_conversations_info_tells_channel_types(slack: SlackStandIn) -> None:
    client = client_for(slack)
    slack.add_channel("C0SECRET", kind="private", name="secret")
    public = (await client.conversations_info(channel="C0TEST"))["channel"]
    private = (await client.conversations_info(channel="C0SECRET"))["channel"]
    direct = (await client.conversations_info(channel="D0DM"))["channel"]
    assert public["is_channel"] and not public["is_private"]
    assert private["is_private"] and private["name"] == "secret"
    assert direct["is_im"] and direct["user"] == "U0USER"
    missing = await slack_error(client.conversations_info(channel="not-a-channel"))
    assert missing.response["error"] == "channel_not_found"


async def test_429_with_retry_after_is_retried_by_the_sdk_handler(slack: SlackStandIn) -> None:
    slack.rate_limit_next("chat.postMessage", times=1, retry_after=0)
    plain = await slack_error(client_for(slack).chat_postMessage(channel="C0TEST", text="x"))
    assert plain.response.status_code == 429 and plain.response["error"] == "ratelimited"
    assert plain.response.headers["Retry-After"] == "0"

    slack.rate_limit_next("chat.postMessage", times=1, retry_after=0)
    retrying = client_for(slack, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    posted = await retrying.chat_postMessage(channel="C0TEST", text="after the limit")
    assert posted["ok"] and len(slack.calls_to("chat.postMessage")) == 3
    assert [m["text"] for m in slack.messages("C0TEST")] == ["after the limit"]

    # The synchronous client (Bolt's App) sends form bodies instead of JSON: same answers.
    slack.rate_limit_next("chat.postMessage", times=1, retry_after=0)
    sync = WebClient(token=slack.bot_token, base_url=slack.api_url)
    sync.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
    assert sync.chat_postMessage(channel="C0TEST", text="sync")["ok"]
    assert len(slack.calls_to("chat.postMessage")) == 5


def test_signatures_round_trip_with_slack_sdk() -> None:
    body = json.dumps(message_event("C0TEST", "U0USER", [], text="hi", subtype=None)).encode()
    headers = sign(body, "s3cret")
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    assert not verifier.is_valid(
        body + b" ", headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    assert not SignatureVerifier("other").is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    old = sign(body, "s3cret", timestamp=int(time.time()) - 600)
    assert not verifier.is_valid(body, old["X-Slack-Request-Timestamp"], old["X-Slack-Signature"])


async def test_post_signed_sends_what_slack_sends(slack: SlackStandIn) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def app(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(text="")

    server = web.Application()
    server.router.add_post("/slack/events", app)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        event = slack.user_message("C0TEST", files=[slack.add_file(b"x", "a.m4a", "audio/mp4", "m4a")])
        command = slack.slash_command(text="alice")
        submission = view_submission(MODAL, "U0USER")
        secret = slack.signing_secret
        await post_signed_async(url, event, signing_secret=secret, retry_num=1, retry_reason="http_timeout")
        await post_signed_async(url, command, kind="form", signing_secret=secret)
        await post_signed_async(url, submission, kind="interactive", signing_secret=secret)
    finally:
        await runner.cleanup()

    verifier = SignatureVerifier(secret)
    for headers, body in received:
        assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    (event_headers, event_body), (form_headers, form_body), (_, interactive_body) = received
    assert event_headers["Content-Type"] == "application/json"
    assert (event_headers["X-Slack-Retry-Num"], event_headers["X-Slack-Retry-Reason"]) == (
        "1",
        "http_timeout",
    )
    sent = json.loads(event_body)
    assert sent["type"] == "event_callback" and sent["event"]["subtype"] == "file_share"
    assert sent["event"]["files"][0]["name"] == "a.m4a" and sent["event_id"].startswith("Ev")
    assert form_headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = {k: v[0] for k, v in parse_qs(form_body.decode()).items()}
    assert fields["command"] == "/clone" and fields["text"] == "alice"
    assert fields["response_url"].startswith(slack.url) and fields["trigger_id"] == command["trigger_id"]
    payload = json.loads(parse_qs(interactive_body.decode())["payload"][0])
    assert payload["type"] == "view_submission" and payload["view"]["callback_id"] == "clone"


def test_response_url_takes_five_posts(slack: SlackStandIn) -> None:
    fields = slack.slash_command()
    statuses = [httpx.post(fields["response_url"], json={"text": f"{n}"}).status_code for n in range(6)]
    assert statuses == [200] * 5 + [404]
    assert [r.payload["text"] for r in slack.responses] == ["0", "1", "2", "3", "4", "5"]
    assert httpx.post(fields["response_url"], json={}).text == "used_url"
    assert slash_command(user_id="U9")["user_id"] == "U9"


async def test_bolt_socket_mode_receives_envelopes_and_acks(slack: SlackStandIn) -> None:
    app = AsyncApp(client=client_for(slack))
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        await events.put(event)

    @app.command("/clone")
    async def on_clone(ack: Any, command: dict[str, Any]) -> None:
        await ack(f"cloning {command['text']}")

    handler = AsyncSocketModeHandler(app, slack.app_token)
    await handler.connect_async()
    try:
        assert await slack.wait_for_socket_async(5)
        body = slack.user_message("C0TEST", files=[slack.add_file(b"x", "a.m4a", "audio/mp4", "m4a")])
        envelope_id = slack.send_envelope("events_api", body)
        ack = await slack.wait_for_ack_async(envelope_id, 5)
        assert ack is not None and ack["envelope_id"] == envelope_id
        event = await asyncio.wait_for(events.get(), 5)
        assert event["ts"] == body["event"]["ts"] and event["files"][0]["name"] == "a.m4a"

        command_id = slack.send_envelope("slash_commands", slack.slash_command(text="alice"))
        command_ack = await slack.wait_for_ack_async(command_id, 5)
        assert command_ack is not None and command_ack["payload"]["text"] == "cloning alice"

        # A dropped connection: the SDK reconnects through apps.connections.open and gets the redelivery.
        slack.disconnect_sockets()
        assert await slack.wait_for_async(
            lambda: slack.connection_count == 2 and slack.open_sockets() == 1, 10
        )
        retry_id = slack.redeliver(envelope_id)
        assert slack.envelopes[-1]["retry_attempt"] == 1
        assert await slack.wait_for_ack_async(retry_id, 5) is not None
        redelivered = await asyncio.wait_for(events.get(), 5)
        assert redelivered["ts"] == event["ts"]
        assert len(slack.calls_to("apps.connections.open")) == 2
    finally:
        await handler.close_async()
