"""Nothing leaked: the bot token goes only to Slack, no secret or audio reaches a log line, a reply or the
job store, oversized files are refused before any download, failures leave no temporary file behind, and
user text cannot inject Slack markup (`<!channel>`, links) into what the bot posts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.driving import (
    BotProcess,
    ForeignHost,
    assert_one_final_answer,
    reply_text,
    share,
    standins,
    wait_finals,
    where,
)
from support.expected_text import SLACK_API_SENTENCES
from support.harness import APP_TOKEN, BOT_TOKEN, SECRET_KEY, SIGNING_SECRET, BotHarness
from support.media import make_signal, truncate

from bot.logs import MASK

SECRETS = {
    "bot token": BOT_TOKEN,
    "app token": APP_TOKEN,
    "signing secret": SIGNING_SECRET,
    "secret key": SECRET_KEY,
}
# Slack puts short-lived file tokens in some file links (`?t=xoxe-...`); httpx logs request URLs at INFO.
LINK_TOKEN = "xoxe-1-My0xNzAwMDAwMDAwLTEyMzQ1Njc4OTAtYWJjZGVmZ2hpams"
EVIL = "<!channel> <http://evil|click>"
CHANNEL = "C0SECURE"


@pytest.fixture(scope="module")
def speech_wav(media) -> bytes:
    return media.speech(15, ".wav").read_bytes()


# The module's bot (tests/conftest.py), with a 1 MB download cap, so a file that lies about its size can
# overflow it cheaply.
BOT_ENV = {"MAX_DOWNLOAD_MB": "1"}


@pytest.fixture(autouse=True)
def _no_leftovers(bot: BotHarness):
    yield
    bot.drain()
    for leftover in bot.runtime.runner.temp_dir.iterdir():  # one failing case must not fail the next
        leftover.unlink()


# What users are told, written out (never produced by bot.ui.texts, the code under test).
TOLD = {
    "unsafe link": (
        "The bot won't fetch that file: its link doesn't point to Slack's own file servers, and the bot only sends "
        "its Slack credentials there. Upload the file to Slack directly and try again."
    ),
    "no access": (
        "Slack wouldn't let the bot download that file. Either the app lacks the `files:read` scope, or the bot may "
        "not see the file (it was shared somewhere the bot isn't a member). Invite the bot to the channel and share "
        "the file again; if that doesn't help, ask your Slack admin to add `files:read` and reinstall the app."
    ),
}


def _answer(bot: BotHarness, body: dict) -> str:
    bot.wait_final(*where(body))
    return reply_text(assert_one_final_answer(bot.slack, body))


def _posted(slack) -> str:
    """Everything the bot sent to Slack's Web API, as one string."""
    return json.dumps([c.params for c in slack.calls], ensure_ascii=False)


# -- the bot token goes to Slack only -----------------------------------------------------------------


def test_bot_token_never_reaches_a_foreign_host(bot: BotHarness, speech_wav: bytes):
    with ForeignHost() as foreign:
        url = f"{foreign.url}/files-pri/T0TEST-F0FOREIGN/download/memo.wav"
        extra = {"extra": {"url_private_download": url, "url_private": url}}
        _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL, file_extra=extra)
        text = _answer(bot, body)
    assert foreign.requests == []
    assert TOLD["unsafe link"] in text
    assert bot.trtc.requests == []


def test_sign_in_redirect_is_not_followed(bot: BotHarness, speech_wav: bytes):
    extra = {"visible_to_bot": False}
    _, body = bot.share(speech_wav, "memo.wav", "audio/wav", "wav", channel=CHANNEL, file_extra=extra)
    assert TOLD["no access"] in _answer(bot, body)
    # One request, with the token, to the file host; none to the sign-in page it redirected to.
    [request] = bot.slack.file_requests
    assert request.status == 302 and request.authorization_present and "/files-pri/" in request.path


def test_file_announced_as_2_gb_is_refused_without_downloading(bot: BotHarness, speech_wav: bytes):
    size = 2 * 1024**3
    extra = {"size": size}
    _, body = bot.share(speech_wav, "memo.m4a", "audio/mp4", "m4a", channel=CHANNEL, file_extra=extra)
    assert "That file is 2048 MB, over the 1 MB limit. Send a shorter recording" in _answer(bot, body)
    assert bot.slack.file_requests == []
    assert bot.trtc.requests == []


# -- no temporary file outlives a failure -------------------------------------------------------------


def _damaged_m4a(media, tmp: Path) -> bytes:
    return truncate(media.speech(15, ".m4a", "-c:a", "aac", "-b:a", "48k"), tmp / "cut.m4a", 0.4).read_bytes()


FAILURES = {
    # id: (content builder, name, file_extra, script for the stand-ins, what the user is told, written out)
    "sign-in redirect": (lambda m, t, s: s, "a.wav", {"visible_to_bot": False}, None, TOLD["no access"]),
    # A 5xx means Slack is down: the job waits and retries (tests/test_outbox_faults.py); a 400 is final.
    "file host 400": (
        lambda m, t, s: s, "a.wav", {}, "fail_file",
        "The bot couldn't download that file from Slack (HTTP 400). Try again in a minute.",
    ),
    "bigger than announced": (
        lambda m, t, s: s * 3,
        "a.wav",
        {"size": 1000, "chunked": True},
        None,
        "That file is 1.1 MB, over the 1 MB limit. Send a shorter recording (at most 3 minutes are used) or a "
        "compressed one, such as m4a.",
    ),
    "pdf named .m4a": (lambda m, t, s: b"%PDF-1.7\n" + bytes(5000), "a.m4a", {}, None, None),
    "html named .mp3": (lambda m, t, s: b"<!DOCTYPE html><html>" + b" " * 3000, "a.mp3", {}, None, None),
    "damaged m4a": (lambda m, t, s: _damaged_m4a(m, t), "a.m4a", {}, None, None),
    "silence": (
        lambda m, t, s: make_signal(t / "quiet.wav", "anullsrc=r=16000:cl=mono", 12).read_bytes(),
        "a.wav",
        {},
        None,
        None,
    ),
    "too short": (lambda m, t, s: m.speech(3, ".wav").read_bytes(), "a.wav", {}, None, None),
    "api error after conversion": (lambda m, t, s: s, "a.wav", {}, "api_error", None),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_no_temporary_file_survives_a_failure(
    bot: BotHarness, media, tmp_path: Path, speech_wav: bytes, case
):
    build, name, extra, script, told = FAILURES[case]
    content = build(media, tmp_path, speech_wav)
    file = bot.slack.add_file(content, name, "audio/wav", Path(name).suffix[1:], **extra)
    if script == "fail_file":
        bot.slack.fail_file(file["id"], 400)
    elif script == "api_error":
        bot.trtc.fail_next("InvalidParameter.AudioPrompt")
    body = bot.slack.user_message(CHANNEL, "U0USER", [file])
    assert bot.deliver(body).status_code == 200
    assert bot.wait_final(*where(body)) == "x"
    text = reply_text(assert_one_final_answer(bot.slack, body))
    if told is not None:
        assert told in text
    if script == "api_error":
        assert SLACK_API_SENTENCES["InvalidParameter.AudioPrompt"] in text
    assert "Traceback" not in text
    assert list(bot.runtime.runner.temp_dir.iterdir()) == []


# -- user text cannot inject markup -------------------------------------------------------------------


def test_user_markup_is_escaped_in_everything_the_bot_posts(bot: BotHarness, speech_wav: bytes):
    evil_name = f"{EVIL}.wav"
    # Bad name: the failure message quotes it. Good name, evil transcript: the success message.
    _, failed = bot.share(
        speech_wav, evil_name, "audio/wav", "wav", channel=CHANNEL, text=f'name={EVIL} text="{EVIL}"'
    )
    _, cloned = bot.share(speech_wav, evil_name, "audio/wav", "wav", channel=CHANNEL, text=f'text="{EVIL}"')
    assert bot.wait_final(*where(failed)) == "x"
    assert bot.wait_final(*where(cloned)) == "white_check_mark"
    assert bot.trtc.requests[-1].prompt_text == EVIL  # it reached the API as the user typed it
    # The same text through `/clone <file>` and in a DM hint for a file that is not audio.
    file = bot.slack.add_file(speech_wav, evil_name, "audio/wav", "wav")
    command = bot.slack.slash_command(text=f"{file['id']} name={EVIL}", channel_id=CHANNEL)
    ack = bot.deliver(command, kind="form")
    assert ack.status_code == 200
    bot.share(b"%PDF-1.7\n", f"{EVIL}.pdf", "application/pdf", "pdf", channel="D0EVIL", channel_type="im")
    assert bot.wait(lambda: bot.slack.calls_to("chat.postMessage") and len(bot.slack.messages("D0EVIL")) >= 2)
    bot.drain()
    assert bot.wait(lambda: sum(c["name"] == "x" for c in bot.slack.calls_to("reactions.add")) >= 1)

    posted = _posted(bot.slack) + ack.text
    assert "&lt;!channel&gt;" in posted
    for markup in ("<!channel>", "<http://evil", "<!here>", "<!everyone>"):
        assert markup not in posted


# -- DEBUG logs, replies and the job store hold no secret ---------------------------------------------


def test_debug_logs_replies_and_store_hold_no_secret(tmp_path: Path, speech_wav: bytes):
    env = {"LOG_LEVEL": "DEBUG", "SLACK_APP_TOKEN": APP_TOKEN}
    with (
        standins() as (slack, trtc),
        BotProcess(slack, trtc, tmp_path, **env) as bot,
        ForeignHost() as foreign,
    ):
        bot.start()

        def send(name: str, **kwargs) -> dict:
            return share(slack, bot.url, speech_wav, name, "audio/wav", "wav", **kwargs)[1]

        file = slack.add_file(speech_wav, "ok.wav", "audio/wav", "wav")
        link = f"{file['url_private_download']}?t={LINK_TOKEN}"
        file["url_private_download"] = file["url_private"] = link
        body = slack.user_message("C0LOG1", "U0USER", [file], text='name=Log_Voice text="Hello there."')
        assert bot.deliver(body).status_code == 200
        bodies = [body]
        trtc.fail_next("InternalError")  # retried, then cloned
        bodies.append(send("retried.wav", channel="C0LOG2"))
        wait_finals(slack, bodies)
        trtc.fail_next("InvalidParameter.AudioPrompt")
        bodies.append(send("api_error.wav", channel="C0LOG3"))
        wait_finals(slack, bodies)
        slack.rate_limit_next("chat.postMessage", times=1, retry_after=1)
        bodies.append(send("slack_429.wav", channel="C0LOG4"))
        bodies.append(send("hidden.wav", channel="C0LOG5", file_extra={"visible_to_bot": False}))
        url = f"{foreign.url}/files-pri/T0TEST-F0X/download/x.wav"
        extra = {"extra": {"url_private_download": url, "url_private": url}}
        bodies.append(send("foreign.wav", channel="C0LOG6", file_extra=extra))
        bodies.append(send("huge.wav", channel="C0LOG7", file_extra={"size": 2 * 1024**3}))
        wait_finals(slack, bodies)
        assert bot.terminate() == 0

    outcomes = [slack.reactions(*where(b)) for b in bodies]
    assert outcomes == [["white_check_mark"]] * 2 + [["x"]] + [["white_check_mark"]] + [["x"]] * 3
    assert foreign.requests == []
    log = bot.log_text()
    assert " DEBUG slack_sdk" in log and "VoiceClone attempt 1/4 failed with InternalError" in log
    assert MASK in log  # the file link's token was logged, masked
    places = {
        "log": log,
        "Slack": _posted(slack),
        "job store": b"".join(p.read_bytes() for p in tmp_path.glob("jobs.db*")).decode("latin-1"),
    }
    for place, text in places.items():
        # The store keeps file links as events gave them (a restarted job needs them): check our secrets only.
        link = {} if place == "job store" else {"file link token": LINK_TOKEN}
        for what, secret in {**SECRETS, **link}.items():
            assert secret not in text, f"{what} in the {place}"
        # PromptAudio: base64 of a WAV starts "UklGR" ("RIFF"); no long base64 run of any kind either.
        assert "UklGR" not in text, f"audio in the {place}"
        assert not re.search(r"[A-Za-z0-9+/]{400,}", text), f"a long base64 run in the {place}"
    assert "Traceback" not in places["Slack"]
    assert list(bot.temp_dir.iterdir()) == []
