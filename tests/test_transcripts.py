"""Slack's own transcript of a clip becomes the PromptText (only the words of the audio sent) and the Language.

Real recordings (the shipped speech, decoded by ffmpeg), the Slack stand-in serving `transcription` and a `vtt`
for clips, and the TRTC stand-in recording what VoiceClone was sent. Expected texts are the cues of the shipped
transcript (bot/testing/data/speech-en.vtt, exact sentence times) or cues written here for a recording built here.

The tests that share a file with the running bot (`bot` fixture, and the consent test) need the job runner to call
bot.work.transcripts.with_transcript before it clones; the others call it directly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from support.driving import ForeignHost, where
from support.harness import BotHarness
from support.media import MediaCache, make_speech, run_ffmpeg

from bot.errors import FileAccessError, UnsafeURLError
from bot.settings import Secret, Settings
from bot.slack.files import download_text
from bot.slack.workspaces import Workspaces
from bot.testing.speech import recording, transcript
from bot.testing.standin_slack import SlackStandIn, block_actions
from bot.ui.consent_blocks import CONFIRM_ACTION
from bot.ui.job_blocks import build_success
from bot.vocabulary import accepted_language, language_of_locale
from bot.voice.analysis import AudioReport
from bot.voice.pipeline import CloneRequest, CloneResult, Prompt, prepare_prompt
from bot.voice.report_card import transcript_source
from bot.voice.transcript import (
    Cue,
    TranscriptFormatError,
    TranscriptUse,
    clip_cues,
    cues_sent,
    parse_vtt,
    to_prompt_time,
    write_vtt,
)
from bot.work.fetch import Fetcher
from bot.work.transcripts import with_transcript

# The first four sentences of the shipped recording (speech-en.vtt): a 22.4 s clip holds them whole.
FOUR_SENTENCES = (
    "Hello, this is a short recording of my voice, made for testing a voice cloning bot. "
    "I am reading a few sentences at an easy pace, so that there is enough speech to learn from. "
    "The quick brown fox jumps over the lazy dog, and then it rests in the shade for a while. "
    "She sells sea shells by the sea shore, while Peter Piper picks a peck of pickled peppers."
)
JAPANESE = "こんにちは、これは声のテストです。"


# -- recordings and their transcripts -----------------------------------------------------------------


@pytest.fixture(scope="module")
def clip22(media: MediaCache) -> bytes:
    """22.4 s of the shipped recording as a Slack clip (AAC in m4a): its first four sentences, whole."""
    build = lambda p: make_speech(p, 22.4, "-c:a", "aac", "-b:a", "64k")  # noqa: E731
    return media.get("transcripts-clip22.m4a", build).read_bytes()


def clip22_vtt() -> str:
    """Slack's transcript of the 22.4 s clip: the shipped cues that lie in it."""
    return write_vtt(clip_cues(parse_vtt(transcript("en").read_text()), 0.0, 22.4))


SEGMENT = 10.02  # 334 frames of 30 ms
CLIPPED = (*range(0, 5), *range(25, 30))  # segments of distorted speech, which the window avoids


def build_long(path: Path, work: Path) -> None:
    """300.6 s: thirty segments of 10.02 s, each 1 s of silence, 8.49 s of speech, silence. The speech of the first
    five and the last five is distorted (+24 dB, clipped), so the best 180 s are the twenty clean ones (segments 5
    to 24) and a little of their neighbours: speech on both sides is left out."""
    speech, clean, loud = work / "speech.wav", work / "clean.wav", work / "loud.wav"
    run_ffmpeg("-i", recording("en"), "-t", "8.49", "-ar", "16000", "-ac", "1", speech)
    pad = f"adelay=1000|1000,apad=whole_len={round(SEGMENT * 16000)}"
    run_ffmpeg("-i", speech, "-af", pad, "-c:a", "pcm_s16le", clean)
    run_ffmpeg("-i", speech, "-af", f"volume=24dB,{pad}", "-c:a", "pcm_s16le", loud)
    inputs: list[str | Path] = []
    for index in range(30):
        inputs += ["-i", loud if index in CLIPPED else clean]
    graph = "".join(f"[{i}:a]" for i in range(30)) + "concat=n=30:v=0:a=1"
    run_ffmpeg(*inputs, "-filter_complex", graph, "-c:a", "aac", "-b:a", "48k", path)


@pytest.fixture(scope="module")
def long300(media: MediaCache, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("long300")
    return media.get("transcripts-long300.m4a", lambda p: build_long(p, work)).read_bytes()


def thirty_cues() -> str:
    """Slack's transcript of the 300 s recording: thirty cues of 10 s, "Part 1." to "Part 30."."""
    return write_vtt(Cue(10.0 * k, 10.0 * (k + 1), f"Part {k + 1}.") for k in range(30))


def parts(first: int, last: int) -> str:
    return " ".join(f"Part {n}." for n in range(first, last + 1))


# -- the pieces: WebVTT, mapping cues through the cuts, locales ------------------------------------------


def test_the_shipped_transcript_reads_with_its_exact_times() -> None:
    cues = parse_vtt(transcript("en").read_text())
    assert len(cues) == 7
    assert cues[3] == Cue(16.856, 22.232, FOUR_SENTENCES.split(". ", 3)[3])
    assert parse_vtt(clip22_vtt()) == cues[:4]
    tagged = (
        "WEBVTT\n\nNOTE made by hand\n\n00:01.000 --> 00:02.500 align:start\n"
        "<v Ann>Fish &amp; <i>chips</i></v>\nagain\n"
    )
    assert parse_vtt(tagged) == [Cue(1.0, 2.5, "Fish & chips again")]
    with pytest.raises(TranscriptFormatError):
        parse_vtt("<html>Sign in to Slack</html>")


def test_cues_are_mapped_through_the_cuts() -> None:
    # Kept: 2-10 and 12-20 of the recording (a pause 10-12 shortened away); speech was left out before 1.5 and
    # after 21 (the span in which only silence was cut).
    kept, span = [[2.0, 10.0], [12.0, 20.0]], [1.5, 21.0]
    assert [to_prompt_time(t, kept) for t in (0.0, 2.0, 9.0, 11.0, 12.5, 20.0, 30.0)] == [0, 0, 7, 8, 8.5, 16, 16]
    cues = [
        Cue(0.5, 2.5, "left out before"),  # runs into speech that was cut
        Cue(1.6, 6.0, "one"),  # its start is cut silence: whole
        Cue(6.0, 11.5, "two"),  # across the shortened pause: whole
        Cue(11.5, 20.5, "three"),
        Cue(20.5, 22.0, "left out after"),
    ]
    assert [c.text for c in cues_sent(cues, kept, span)] == ["one", "two", "three"]
    # Nothing left out: every cue that overlaps the audio sent (not the last, wholly in cut trailing silence).
    assert [c.text for c in cues_sent(cues, kept, [0.0, None])] == ["left out before", "one", "two", "three"]
    # Only consecutive cues: of two runs inside, the longer one.
    gap = [Cue(2.0, 3.0, "a"), Cue(3.0, 25.0, "b"), Cue(4.0, 5.0, "c"), Cue(5.0, 6.0, "d")]
    assert [c.text for c in cues_sent(gap, kept, span)] == ["c", "d"]
    # A cue wholly in cut silence names nothing the prompt holds.
    assert cues_sent([Cue(10.2, 11.8, "cough")], kept, span) == []


def test_locales_give_the_languages_voiceclone_takes() -> None:
    assert [language_of_locale(x) for x in ("en-US", "ja-JP", "zh-CN", "zh-TW", "pt_BR", "", "x")] == [
        "en", "ja", "zh", "zh-tw", "pt", None, None,
    ]  # fmt: skip
    assert accepted_language("en-GB", None) == "en"
    assert accepted_language("fr-FR", "flow_01_ex") == "fr"
    assert accepted_language("fr-FR", "flow_02_turbo") is None  # not documented for that model
    assert accepted_language("xx-YY", "flow_01_ex") is None


# -- with_transcript, called directly -------------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture
async def fetcher(slack: SlackStandIn, tmp_path: Path) -> AsyncIterator[Fetcher]:
    settings = Settings(slack_bot_token=Secret(slack.bot_token), slack_api_url=slack.api_url)
    async with aiohttp.ClientSession() as session, httpx.AsyncClient(timeout=10) as http:
        yield Fetcher(settings, Workspaces(settings, session), http, tmp_path, None)


async def prompt_of(content: bytes, tmp_path: Path) -> Prompt:
    path = tmp_path / "clip.m4a"
    path.write_bytes(content)
    prompt = await prepare_prompt(path, CloneRequest(name="x"))
    # As the prompt is stored while it waits for consent.
    return Prompt.from_meta(json.loads(json.dumps(prompt.meta())), prompt.wav)


def clip_file(slack: SlackStandIn, content: bytes, **kwargs: Any) -> dict[str, Any]:
    return slack.add_file(content, "audio_message.m4a", "audio/mp4", "m4a", subtype="slack_audio", **kwargs)


async def test_a_22_s_clip_gives_its_transcript_and_english(
    slack: SlackStandIn, fetcher: Fetcher, clip22: bytes, tmp_path: Path
) -> None:
    file = clip_file(slack, clip22, transcript=clip22_vtt())
    prompt = await prompt_of(clip22, tmp_path)
    request = await with_transcript(CloneRequest(name="x"), prompt, file, fetcher)
    assert request.text == FOUR_SENTENCES and request.language == "en"
    assert request.transcript == TranscriptUse(locale="en-US", language="en", text=True, cues=4, total=4)
    # The transcript came from Slack's file host, with the bot token.
    [fetched] = slack.file_requests
    assert fetched.path.endswith(".vtt") and fetched.authorized and fetched.status == 200


async def test_a_300_s_recording_sends_only_the_cues_inside_the_window(
    slack: SlackStandIn, fetcher: Fetcher, long300: bytes, tmp_path: Path
) -> None:
    file = clip_file(slack, long300, transcript=thirty_cues())
    prompt = await prompt_of(long300, tmp_path)
    assert prompt.trimmed and 46 <= prompt.kept[0][0] <= 51 and 250 <= prompt.kept[-1][1] <= 257
    request = await with_transcript(CloneRequest(name="x"), prompt, file, fetcher)
    # Segments 5..24 are in whole, and cues 6..25 cover exactly them; cues 5 and 26 run into speech left out.
    assert request.text == parts(6, 25)
    assert (request.transcript.cues, request.transcript.total) == (20, 30)


async def test_what_the_user_typed_wins(slack: SlackStandIn, fetcher: Fetcher, clip22: bytes, tmp_path: Path) -> None:
    file = clip_file(slack, clip22, transcript=clip22_vtt())
    prompt = await prompt_of(clip22, tmp_path)
    both = CloneRequest(name="x", text="my own words", language="ja")
    assert await with_transcript(both, prompt, file, fetcher) == both
    assert slack.file_requests == [] and slack.calls == []  # nothing looked up
    text_only = await with_transcript(CloneRequest(name="x", text="my own words"), prompt, file, fetcher)
    assert (text_only.text, text_only.language, text_only.transcript.why_not) == ("my own words", "en", "yours")
    lang_only = await with_transcript(CloneRequest(name="x", language="de"), prompt, file, fetcher)
    assert (lang_only.text, lang_only.language, lang_only.transcript.language) == (FOUR_SENTENCES, "de", None)


async def test_ja_jp_gives_ja(slack: SlackStandIn, fetcher: Fetcher, clip22: bytes, tmp_path: Path) -> None:
    vtt = write_vtt([Cue(0.0, 22.0, JAPANESE)])
    file = clip_file(slack, clip22, transcript=vtt, transcript_locale="ja-JP")
    request = await with_transcript(CloneRequest(name="x"), await prompt_of(clip22, tmp_path), file, fetcher)
    assert (request.text, request.language) == (JAPANESE, "ja")


async def test_files_without_a_transcript_clone_as_before(
    slack: SlackStandIn, fetcher: Fetcher, clip22: bytes, tmp_path: Path
) -> None:
    prompt = await prompt_of(clip22, tmp_path)
    plain = CloneRequest(name="x")
    uploaded = slack.add_file(clip22, "memo.m4a", "audio/mp4", "m4a")
    assert await with_transcript(plain, prompt, uploaded, fetcher) == plain
    assert slack.calls == []  # an uploaded file is not a Slack clip: nothing to ask
    clip = clip_file(slack, clip22)
    assert await with_transcript(plain, prompt, clip, fetcher) == plain
    assert [c.method for c in slack.calls] == ["files.info"]  # a clip is asked about once


async def test_a_transcript_still_processing_is_looked_up_again(
    slack: SlackStandIn, fetcher: Fetcher, clip22: bytes, tmp_path: Path
) -> None:
    prompt = await prompt_of(clip22, tmp_path)
    shared = clip_file(slack, clip22, transcript=clip22_vtt(), transcript_status="processing")
    assert shared["transcription"] == {"status": "processing"} and "vtt" not in shared
    # Still processing at clone time: as before.
    assert await with_transcript(CloneRequest(name="x"), prompt, shared, fetcher) == CloneRequest(name="x")
    # Finished since: files.info tells, and the text is used.
    slack.transcribe(shared["id"], clip22_vtt())
    request = await with_transcript(CloneRequest(name="x"), prompt, shared, fetcher)
    assert (request.text, request.language) == (FOUR_SENTENCES, "en")
    assert [c.method for c in slack.calls] == ["files.info", "files.info"]


async def test_a_transcript_too_long_to_send_or_without_timing(
    slack: SlackStandIn, fetcher: Fetcher, clip22: bytes, tmp_path: Path
) -> None:
    prompt = await prompt_of(clip22, tmp_path)
    long_vtt = write_vtt([Cue(0.0, 11.0, "word " * 120), Cue(11.0, 22.0, "word " * 120)])  # 1199 characters
    long_file = clip_file(slack, clip22, transcript=long_vtt)
    request = await with_transcript(CloneRequest(name="x"), prompt, long_file, fetcher)
    assert (request.text, request.language, request.transcript.why_not) == (None, "en", "too_long")
    # No `vtt`, but Slack's preview is all of it and none of the speech was left out: the words still match.
    whole = {"status": "complete", "locale": "en-GB", "preview": {"content": FOUR_SENTENCES, "has_more": False}}
    untimed = clip_file(slack, clip22, extra={"transcription": whole})
    request = await with_transcript(CloneRequest(name="x"), prompt, untimed, fetcher)
    assert (request.text, request.language) == (FOUR_SENTENCES, "en")
    cut = {**whole, "preview": {"content": FOUR_SENTENCES[:60], "has_more": True}}
    partial = clip_file(slack, clip22, extra={"transcription": cut})
    request = await with_transcript(CloneRequest(name="x"), prompt, partial, fetcher)
    assert (request.text, request.language, request.transcript.why_not) == (None, "en", "untimed")


async def test_a_transcript_on_another_host_is_never_fetched(
    slack: SlackStandIn, fetcher: Fetcher, clip22: bytes, tmp_path: Path
) -> None:
    prompt = await prompt_of(clip22, tmp_path)
    with ForeignHost() as foreign:
        file = clip_file(slack, clip22, transcript=clip22_vtt())
        file["vtt"] = f"{foreign.url}/files-pri/T0TEST-F0X/audio_message.vtt"
        request = await with_transcript(CloneRequest(name="x"), prompt, file, fetcher)
    assert foreign.requests == [] and slack.file_requests == []
    # The locale is on the file object: the Language still comes from it; the words could not be had.
    assert (request.text, request.language, request.transcript.why_not) == (None, "en", "unavailable")


async def test_download_text_takes_only_slacks_host_and_the_token(slack: SlackStandIn, clip22: bytes) -> None:
    file = clip_file(slack, clip22, transcript=clip22_vtt())
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as http:
        options = {"api_url": slack.api_url, "max_bytes": 1 << 20}
        assert await download_text(http, file["vtt"], token=slack.bot_token, **options) == clip22_vtt()
        with pytest.raises(UnsafeURLError):
            await download_text(http, "https://files.slack.com.evil.example/x.vtt", token=slack.bot_token, **options)
        with pytest.raises(FileAccessError) as redirected:  # Slack's sign-in redirect is never followed
            await download_text(http, file["vtt"], token="xoxb-not-the-bot-token", **options)
    assert redirected.value.status == 302
    assert [(r.authorization_present, r.authorized, r.status) for r in slack.file_requests] == [
        (True, True, 200), (True, False, 302),
    ]  # fmt: skip


# -- the answer ----------------------------------------------------------------------------------------


def test_the_answer_gives_one_length_and_where_the_transcript_came_from() -> None:
    report = AudioReport(recording_seconds=22.4, source_seconds=22.4, speech_seconds=19.0, used_speech_seconds=19.0,
                         sent_seconds=22.05, window_end=22.05)  # fmt: skip
    use = TranscriptUse(locale="en-US", language="en", text=True, cues=4, total=4)
    result = CloneResult(voice_id="v_1", request_id="r1", name="v", seconds=22.05, source_seconds=22.4,
                         trimmed=False, text_sent=True, text_dropped=False, model=None, language="en",
                         audio=report.to_dict(), transcript=use.to_dict())  # fmt: skip
    blocks = json.dumps(build_success(result, "audio_message.m4a")[1])
    assert "Sent all 22 s of the recording" in blocks
    assert "*Transcript*\\nSlack, English" in blocks and "English (from Slack's transcript)" in blocks
    assert "Audio used" not in blocks and "Audio sent" not in blocks and "of speech" not in blocks
    assert transcript_source(TranscriptUse(locale="ja-JP", why_not="too_long"), text_sent=False) == (
        "none sent: Slack's (Japanese) is too long to send as the transcript"
    )
    assert transcript_source(None, text_sent=True) == "yours"
    assert transcript_source(None, text_sent=False) is None
    partial = CloneResult.from_dict({**result.to_dict(), "transcript": {**use.to_dict(), "cues": 20, "total": 30}})
    assert "Slack, English (20 of its 30 lines: those wholly in the audio sent)" in json.dumps(
        build_success(partial, "a.m4a")[1]
    )


# -- through the running bot (needs the runner's call to with_transcript) -----------------------------


def answer(bot: BotHarness, body: dict[str, Any]) -> str:
    assert bot.wait_final(*where(body)) == "white_check_mark", [m.get("text") for m in bot.replies(*where(body))]
    return json.dumps([m.get("blocks") for m in bot.replies(*where(body))])


def share_clip(bot: BotHarness, content: bytes, text: str = "", **file_extra: Any) -> dict[str, Any]:
    extra = {"subtype": "slack_audio", **file_extra}
    _, body = bot.share(content, "audio_message.m4a", "audio/mp4", "m4a", text=text, file_extra=extra)
    return body


def test_the_bot_sends_a_clips_transcript_and_language(bot: BotHarness, clip22: bytes) -> None:
    shown = answer(bot, share_clip(bot, clip22, transcript=clip22_vtt()))
    [request] = bot.trtc.requests
    assert (request.prompt_text, request.language) == (FOUR_SENTENCES, "en")
    assert "*Transcript*\\nSlack, English" in shown


def test_the_bot_sends_the_cues_of_the_window_of_a_300_s_recording(bot: BotHarness, long300: bytes) -> None:
    shown = answer(bot, share_clip(bot, long300, transcript=thirty_cues()))
    [request] = bot.trtc.requests
    assert request.prompt_text == parts(6, 25) and request.language == "en"
    assert 178 <= request.audio_seconds <= 180
    assert "20 of its 30 lines" in shown


def test_the_bot_keeps_what_the_user_typed_and_clones_plain_files_as_before(bot: BotHarness, clip22: bytes) -> None:
    typed = share_clip(bot, clip22, text='text="Just my words." lang=ja', transcript=clip22_vtt())
    answer(bot, typed)
    plain = bot.share(clip22, "memo.m4a", "audio/mp4", "m4a")[1]
    shown = answer(bot, plain)
    first, second = bot.trtc.requests
    assert (first.prompt_text, first.language) == ("Just my words.", "ja")
    assert (second.prompt_text, second.language) == (None, None)
    assert "Transcript" not in shown


def test_the_bot_never_sends_the_token_to_a_transcript_elsewhere(bot: BotHarness, clip22: bytes) -> None:
    with ForeignHost() as foreign:
        locale = {"status": "complete", "locale": "en-US", "preview": {"content": "Hello", "has_more": True}}
        extra = {"transcription": locale, "vtt": f"{foreign.url}/files-pri/T0TEST-F0X/audio_message.vtt"}
        shown = answer(bot, share_clip(bot, clip22, extra=extra))
    assert foreign.requests == []
    assert all(not r.path.endswith(".vtt") for r in bot.slack.file_requests)
    [request] = bot.trtc.requests
    assert (request.prompt_text, request.language) == (None, "en")
    assert "could not be fetched" in shown


def test_a_transcript_finished_while_consent_was_asked_is_used(tmp_path: Path, clip22: bytes) -> None:
    with BotHarness(tmp_path, extra_env={"CONSENT": "ask"}) as bot:
        body = share_clip(bot, clip22, transcript=clip22_vtt(), transcript_status="processing")
        channel, ts = where(body)

        def question() -> dict[str, Any] | None:
            for message in bot.replies(channel, ts):
                for block in message.get("blocks") or []:
                    if any(e.get("action_id") == CONFIRM_ACTION for e in block.get("elements") or []):
                        return message
            return None

        assert bot.wait(lambda: question() is not None)
        bot.slack.transcribe(body["event"]["files"][0]["id"], clip22_vtt())  # Slack finished meanwhile
        press = block_actions(question(), channel, CONFIRM_ACTION, "U0USER", trigger_id=bot.slack.issue_trigger_id(),
                              response_url=bot.slack.issue_response_url(), team_id=bot.slack.team_id,
                              api_app_id=bot.slack.app_id)  # fmt: skip
        assert bot.deliver(press, kind="interactive").status_code == 200
        answer(bot, body)
        [request] = bot.trtc.requests
    assert (request.prompt_text, request.language) == (FOUR_SENTENCES, "en")
