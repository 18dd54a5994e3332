"""The Workflow Builder step "Speak text with a cloned voice", end to end: a signed `function_executed` event from the
Slack stand-in to the real app, the speech through the TRTC stand-in, the clip posted by the outbox, and the step
completed exactly once (functions.completeSuccess with the clip's permalink, or functions.completeError with the
reason), whatever is retried. Also the stand-in's own rules for completions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from support.harness import BotHarness

from bot.store.library import VoiceRecord
from bot.testing.standin_slack import function_executed_event, user_context
from bot.ui.speak_blocks import SPEAK_STEP

ROOT = Path(__file__).resolve().parent.parent
# The step as the manifest declares it: the stand-in's event carries this definition, and checks the outputs by it.
DEFINITION = yaml.safe_load((ROOT / "manifest.yml").read_text())["functions"][SPEAK_STEP]

# The module's bot (tests/conftest.py): two clips a minute per person, so a step can meet a fair-use limit; quick
# retries of Slack calls.
BOT_ENV = {"SAYS_PER_MINUTE_PER_USER": "2"}
BOT_OPTIONS = {"max_backoff": 1.0}


# -- helpers ---------------------------------------------------------------------------------------------------


def give_voice(bot: BotHarness, user: str, name: str) -> str:
    """A voice of `user` in the library (and known to the TRTC stand-in); its VoiceId."""
    voice_id = f"{name}_{user.lower()}"
    bot.trtc.voices[voice_id] = "flow_01_turbo"
    record = VoiceRecord(team_id=bot.slack.team_id, voice_id=voice_id, voice_name=name, owner=user,
                         created_at=time.time(), model="flow_01_turbo", language="en")
    assert bot.submit(bot.runtime.voices.library.add(record)).result(10)
    return voice_id


def run_step(bot: BotHarness, user: str, voice: str, text: str, channel: str) -> dict[str, Any]:
    """The workflow reaches the step, run by `user`: the signed event is delivered; returns its body."""
    inputs = {"user": user_context(user), "voice": voice, "text": text, "channel": channel}
    body = bot.slack.function_executed(SPEAK_STEP, inputs, definition=DEFINITION)
    response = bot.deliver(body)
    assert response.status_code == 200 and not response.content.strip(b"{} ")
    return body


def ended(bot: BotHarness, body: dict[str, Any]) -> dict[str, Any]:
    """The one completion Slack accepted for this execution (waits for it), without its time."""
    execution = body["event"]["function_execution_id"]
    assert bot.wait(lambda: bot.slack.completions_of(execution), 60), [c.method for c in bot.slack.calls]
    bot.drain()
    (completion,) = bot.slack.completions_of(execution)
    completion.pop("time")
    return completion


def uploads_in(bot: BotHarness, channel: str) -> list[dict[str, Any]]:
    return [m for m in bot.slack.messages(channel) if m.get("files") and m.get("bot_id")]


def tts_requests(bot: BotHarness) -> list[Any]:
    return [r for r in bot.trtc.requests if r.action == "TextToSpeech"]


def say_jobs(bot: BotHarness, user: str) -> int:
    return bot.sql("SELECT COUNT(*) FROM jobs WHERE kind = 'say' AND user_id = ?", (user,))[0][0]


def completion_calls(bot: BotHarness) -> list[str]:
    return [c.method for c in bot.slack.calls if c.method.startswith("functions.")]


# -- the event (pure) -------------------------------------------------------------------------------------------


def test_the_stand_in_builds_slacks_function_executed_event():
    body = function_executed_event(SPEAK_STEP, {"text": "hi"}, definition=DEFINITION, function_execution_id="Fx1",
                                   workflow_execution_id="Wx1", bot_access_token="xwfp-1")
    assert {k: body[k] for k in ("type", "team_id", "api_app_id")} == {
        "type": "event_callback", "team_id": "T0TEST", "api_app_id": "A0TEST"}
    event = body["event"]
    assert {k: event[k] for k in ("type", "inputs", "function_execution_id", "workflow_execution_id",
                                  "bot_access_token")} == {
        "type": "function_executed", "inputs": {"text": "hi"}, "function_execution_id": "Fx1",
        "workflow_execution_id": "Wx1", "bot_access_token": "xwfp-1"}
    function = event["function"]
    assert (function["callback_id"], function["title"], function["type"]) == (
        "speak_with_cloned_voice", "Speak text with a cloned voice", "app")
    assert [(p["name"], p["type"], p["is_required"]) for p in function["input_parameters"]] == [
        ("user", "slack#/types/user_context", True), ("voice", "string", True), ("text", "string", True),
        ("channel", "slack#/types/channel_id", True)]
    assert [(p["name"], p["type"]) for p in function["output_parameters"]] == [("permalink", "string")]


# -- through the real app ---------------------------------------------------------------------------------------


def test_the_step_posts_one_mp3_and_completes_with_its_permalink_once(bot):
    voice_id = give_voice(bot, "U0RUNNER", "Narrator")
    body = run_step(bot, "U0RUNNER", "Narrator", "Good morning, team.  The build is green.", "C0STEP")
    # Slack sends the event again (the first acknowledgement seemed slow to it): the step still runs once.
    again = bot.deliver(body, retry_num=1)
    assert again.status_code == 200
    completion = ended(bot, body)
    (upload,) = uploads_in(bot, "C0STEP")
    (file,) = upload["files"]
    assert file["name"] == "Narrator-says.mp3" and upload.get("thread_ts") is None
    assert file["permalink"] == f"{bot.slack.url}/files/U0BOT/{file['id']}/Narrator-says.mp3"
    assert bot.slack.file_content(file["id"])[:3] in (b"ID3", b"\xff\xfb\x90")
    assert completion == {
        "method": "functions.completeSuccess", "function_execution_id": body["event"]["function_execution_id"],
        "token": "bot", "outputs": {"permalink": file["permalink"]},
    }
    assert completion_calls(bot) == ["functions.completeSuccess"]
    assert bot.slack.execution_state(body["event"]["function_execution_id"]) == "completed"
    (request,) = tts_requests(bot)
    assert (request.text, request.voice["VoiceId"]) == ("Good morning, team. The build is green.", voice_id)
    assert say_jobs(bot, "U0RUNNER") == 1 and len(bot.slack.calls_to("files.completeUploadExternal")) == 1
    assert bot.slack.ephemerals() == []


def test_a_failed_completion_is_retried_without_uploading_again(bot):
    give_voice(bot, "U0RETRY", "Retry_voice")
    bot.slack.fail_next("functions.completeSuccess", "internal_error", times=2)
    body = run_step(bot, "U0RETRY", "Retry_voice", "Once only.", "C0RETRY")
    completion = ended(bot, body)
    (upload,) = uploads_in(bot, "C0RETRY")
    assert completion["outputs"] == {"permalink": upload["files"][0]["permalink"]}
    assert completion_calls(bot) == ["functions.completeSuccess"] * 3
    assert len(bot.slack.calls_to("files.completeUploadExternal")) == 1


def test_without_a_permalink_in_the_upload_answer_files_info_gives_it(bot):
    give_voice(bot, "U0BRIEF", "Brief_voice")
    bot.slack.brief_upload_answers = True  # completeUploadExternal answers {"id", "title"} per file
    body = run_step(bot, "U0BRIEF", "Brief_voice", "Where is my link?", "C0BRIEF")
    completion = ended(bot, body)
    (upload,) = uploads_in(bot, "C0BRIEF")
    file = upload["files"][0]
    assert completion["outputs"] == {"permalink": file["permalink"]}
    assert [c["file"] for c in bot.slack.calls_to("files.info")] == [file["id"]]


def test_a_refused_result_still_ends_the_step_with_why(bot):
    give_voice(bot, "U0SHAPE", "Shape_voice")
    bot.slack.fail_next("functions.completeSuccess", "parameter_validation_failed")
    body = run_step(bot, "U0SHAPE", "Shape_voice", "Shape me.", "C0SHAPE")
    assert ended(bot, body)["error"] == (
        "The clip was posted, but Slack refused the step's result (parameter_validation_failed), so the next steps "
        "cannot use its link.")
    assert completion_calls(bot) == ["functions.completeSuccess", "functions.completeError"]
    assert len(uploads_in(bot, "C0SHAPE")) == 1


def test_someone_elses_voice_ends_the_step_and_nothing_is_spoken(bot):
    theirs = give_voice(bot, "U0OWNER", "Owners_voice")
    for ref in ("Owners_voice", theirs):
        body = run_step(bot, "U0THIEF", ref, "Say this in the owner's voice.", "C0THEFT")
        assert ended(bot, body) == {
            "method": "functions.completeError", "function_execution_id": body["event"]["function_execution_id"],
            "token": "bot",
            "error": f'The voice "{ref}" is not yours: this step speaks only with a voice cloned by the person '
                     "running the workflow. /clone list shows yours.",
        }
    assert tts_requests(bot) == [] and say_jobs(bot, "U0THIEF") == 0 and uploads_in(bot, "C0THEFT") == []
    assert completion_calls(bot) == ["functions.completeError"] * 2


def test_only_slacks_own_user_context_names_whose_voice_speaks(bot):
    # A plain user id (which a workflow's builder could set to anyone) does not name the person running it.
    give_voice(bot, "U0VICTIM", "Victim_voice")
    inputs = {"user": "U0VICTIM", "voice": "Victim_voice", "text": "Hello.", "channel": "C0FORGED"}
    body = bot.slack.function_executed(SPEAK_STEP, inputs, definition=DEFINITION)
    assert bot.deliver(body).status_code == 200
    assert ended(bot, body)["error"] == (
        "I can't tell who is running this workflow, so I can't choose a voice: start it with a person's action (a "
        "link or a button).")
    assert tts_requests(bot) == [] and say_jobs(bot, "U0VICTIM") == 0


def test_a_text_over_3000_characters_ends_the_step_naming_the_limit(bot):
    give_voice(bot, "U0LONG", "Long_voice")
    body = run_step(bot, "U0LONG", "Long_voice", "word " * 700, "C0LONG")  # 3,499 characters to speak
    assert ended(bot, body)["error"] == (
        "The text is too long to speak: it has 3,499 characters, and one clip reads at most 3,000. Shorten it, or "
        "split it over several steps.")
    assert tts_requests(bot) == [] and say_jobs(bot, "U0LONG") == 0 and uploads_in(bot, "C0LONG") == []


def test_a_tencent_error_ends_the_step_with_its_sentence_and_request_id(bot):
    give_voice(bot, "U0TTS", "Tts_voice")
    bot.trtc.fail_next("InvalidParameter.VoiceId", action="TextToSpeech")
    body = run_step(bot, "U0TTS", "Tts_voice", "Hello there.", "C0TTS")
    completion = ended(bot, body)
    (request,) = tts_requests(bot)
    assert request.outcome == "InvalidParameter.VoiceId" and request.request_id
    assert completion["method"] == "functions.completeError"
    assert completion["error"] == (
        "I couldn't make Tts_voice speak: Tencent Cloud does not know this voice, or cannot speak with it. Check the "
        f"voice with /clone list, or clone the recording again. (error InvalidParameter.VoiceId, RequestId "
        f"{request.request_id})")
    assert uploads_in(bot, "C0TTS") == [] and bot.slack.ephemerals() == []


def test_a_fair_use_limit_ends_the_step_with_the_limit(bot):
    give_voice(bot, "U0BUSY", "Busy_voice")
    errors = []
    for n in range(3):  # one after the other, within a minute: two clips, then the per-minute limit
        completion = ended(bot, run_step(bot, "U0BUSY", "Busy_voice", f"Clip number {n + 1}.", "C0BUSY"))
        errors.append(completion.get("error"))
    assert errors[:2] == [None, None] and len(uploads_in(bot, "C0BUSY")) == 2
    assert errors[2].startswith("You've asked for 2 clips in the last minute, the most one person may.")
    assert say_jobs(bot, "U0BUSY") == 2


def test_a_channel_the_bot_is_not_in_ends_the_step_saying_so(bot):
    give_voice(bot, "U0ELSE", "Else_voice")
    bot.slack.remove_bot_from("C0NOTIN")
    body = run_step(bot, "U0ELSE", "Else_voice", "Anyone here?", "C0NOTIN")
    assert ended(bot, body)["error"] == (
        "I can't post in the channel C0NOTIN (not_in_channel): add me to it (/invite @voiceclone), then run the "
        "workflow again.")
    assert uploads_in(bot, "C0NOTIN") == []


# -- the stand-in's rules for completions ------------------------------------------------------------------------


def test_an_execution_completes_once_and_its_token_dies_with_it(bot):
    body = bot.slack.function_executed(SPEAK_STEP, {"text": "x"}, definition=DEFINITION)
    execution, token = body["event"]["function_execution_id"], body["event"]["bot_access_token"]
    as_bot = WebClient(token=bot.slack.bot_token, base_url=bot.slack.api_url)
    as_step = WebClient(token=token, base_url=bot.slack.api_url)

    def refused(call: Any) -> str:
        with pytest.raises(SlackApiError) as caught:
            call()
        return str(caught.value.response["error"])

    assert refused(lambda: as_bot.functions_completeSuccess(function_execution_id="Fx0NONE", outputs={})) == (
        "function_execution_not_found")
    assert refused(lambda: as_step.functions_completeSuccess(function_execution_id=execution, outputs={})) == (
        "parameter_validation_failed")
    assert as_step.auth_test()["team_id"] == "T0TEST"  # the step's token works while the step runs
    assert as_step.functions_completeSuccess(function_execution_id=execution, outputs={"permalink": "p"})["ok"]
    assert refused(lambda: as_bot.functions_completeError(function_execution_id=execution, error="late")) == (
        "execution_not_in_running_state")
    assert refused(lambda: as_step.auth_test()) == "token_revoked"
    assert [(c["method"], c["token"], c["outputs"]) for c in bot.slack.completions_of(execution)] == [
        ("functions.completeSuccess", "function", {"permalink": "p"})]


def test_a_step_whose_speech_is_given_up_ends_with_why(bot):
    # A say job that already crashed or timed out three times (what a bot stopped mid-clip, thrice, leaves): the next
    # claim gives it up, and the workflow hears so at once rather than at Slack's own time-out.
    voice_id = give_voice(bot, "U0GIVEUP", "Giveup_voice")
    inputs = {"user": user_context("U0GIVEUP"), "voice": voice_id, "text": "Hello there.", "channel": "C0GIVEUP"}
    body = bot.slack.function_executed(SPEAK_STEP, inputs, definition=DEFINITION)
    execution = body["event"]["function_execution_id"]
    options = json.dumps({"voice_id": voice_id, "text": "Hello there.", "step": execution})
    bot.sql(
        "INSERT INTO jobs (dedupe_key, kind, team_id, channel, user_id, file_json, options, attempts, created_at,"
        " updated_at) VALUES (?, 'say', ?, 'C0GIVEUP', 'U0GIVEUP', '{}', ?, 3, ?, ?)",
        (f"step:{execution}", bot.slack.team_id, options, time.time(), time.time()),
    )
    bot._loop.call_soon_threadsafe(bot.runtime.runner.wake)
    completion = ended(bot, body)
    assert completion["method"] == "functions.completeError"
    assert completion["error"] == (
        "The clip could not be made: three attempts failed (the bot stopped or ran out of time). Try again, or ask "
        "your Slack admin to check the bot's logs.")
    assert tts_requests(bot) == [] and uploads_in(bot, "C0GIVEUP") == []
