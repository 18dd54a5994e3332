""""Speak in my voice", the message shortcut: a message read aloud (Slack markup turned into what a person says) in
the presser's voice, posted in its thread as one mp3, through signed `message_action` payloads to the real app, the
voice picker for several voices, the refusals (no voice, someone else's voice, too long, over the quota)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.views import View
from support.driving import where
from support.harness import BotHarness
from support.media import ffmpeg_exe

from bot.slack.readaloud import speakable
from bot.store.library import VoiceRecord
from bot.testing.standin_slack import message_action
from bot.ui.speak_blocks import (
    NO_VOICE,
    SPEAK_CALLBACK,
    SPEAK_SHORTCUT,
    build_voice_picker,
    read_voice_picker,
    too_long,
)

ADMIN = "U0ADMIN"
# The module's bot (tests/conftest.py): two clips a minute per person, so the quota test can reach the limit.
BOT_ENV = {"ADMIN_USERS": ADMIN, "SAYS_PER_MINUTE_PER_USER": "2"}

# 673 characters of Slack markup; 606 read aloud; three TextToSpeech requests.
MESSAGE = (
    "Morning <@U0SOLO>! :wave: Here is the plan for the *launch week*, read it before Monday. "
    "First, the release notes go out on Tuesday at nine, after <@U0NOBODY> checks the links in <#C0NEWS|news> "
    "and the draft at <https://example.com/notes|the notes page>. "
    "Second, the support team answers every ticket within a day, and anything urgent goes straight to the on-call "
    "person, whose name is pinned in the channel, together with the phone number and the escalation steps. "
    "Third, we meet on Friday to look back at what went well, what did not, and what we would change next time, "
    "so bring your notes &amp; your questions. Thanks, everyone, this is going to be a great week! :tada:"
)
PARTS = [
    "Morning sam! Here is the plan for the launch week, read it before Monday. First, the release notes go out on "
    "Tuesday at nine, after someone checks the links in #news and the draft at the notes page.",
    "Second, the support team answers every ticket within a day, and anything urgent goes straight to the on-call "
    "person, whose name is pinned in the channel, together with the phone number and the escalation steps.",
    "Third, we meet on Friday to look back at what went well, what did not, and what we would change next time, "
    "so bring your notes & your questions. Thanks, everyone, this is going to be a great week!",
]


# -- reading Slack markup aloud (pure) ----------------------------------------------------------------------------


@pytest.mark.parametrize(("markup", "spoken"), [
    ("Hi <@U1>, ask <@U2> or <@U3|carol>", "Hi Alice, ask someone or carol"),
    ("in <#C1|general> and <#C2>", "in #general and a channel"),
    ("see <https://x.com/a|the doc>, <https://a.b/c>, https://foo.bar/baz?q=1 and <http://x.com|x.com>",
     "see the doc, a link, a link and x.com"),
    ("<https://a.b|https://a.b>", "a link"),
    ("ship it :rocket: :+1::skin-tone-2:", "ship it"),
    (":+1::skin-tone-2:", "thumbs up"),
    (":white_check_mark: :tada:", "white check mark tada"),
    ("*bold* _italic_ ~strike~ `code` snake_case_name 2*3*4 a * b",
     "bold italic strike code snake_case_name 2*3*4 a * b"),
    ("&gt; quoted &amp; done &lt;3", "quoted & done <3"),
    ("<!here> <!channel> <!everyone> <!subteam^S1|@devs>", "everyone here everyone in the channel everyone devs"),
    ("<!date^1392734382^{date}|Feb 18, 2014>", "Feb 18, 2014"),
    ("Agenda\n\n• bullet two\n- dash three!\n1. numbered", "Agenda.\nbullet two.\ndash three!\n1. numbered."),
    ("at 10:30:45 we go", "at 10:30:45 we go"),
    ("```\nprint(1)\n```", "print(1)"),
    ("", ""),
])
def test_slack_markup_is_read_as_a_person_would(markup, spoken):
    assert speakable(markup, {"U1": "Alice"}) == spoken


def test_the_long_message_reads_as_expected():
    assert len(MESSAGE) == 673
    assert speakable(MESSAGE, {"U0SOLO": "sam"}) == " ".join(PARTS)
    assert len(" ".join(PARTS)) == 606


# -- Block Kit (pure) ---------------------------------------------------------------------------------------------


def voice(voice_id: str, name: str, owner: str = "U1", label: str | None = None) -> VoiceRecord:
    return VoiceRecord(team_id="T0TEST", voice_id=voice_id, voice_name=name, owner=owner, created_at=time.time(),
                       label=label, model="flow_01_turbo", language="en")


def test_the_picker_is_valid_block_kit_within_slacks_limits():
    voices = [voice(f"v{i}_{'x' * 40}", f"Voice_{i}", label="L" * 90 if i == 1 else None) for i in range(120)]
    view = build_voice_picker(voices, "C1", "1.2", "y" * 3000)
    View(**view).validate_json()
    select = view["blocks"][0]["element"]
    assert len(select["options"]) == 100 and select["initial_option"] == select["options"][0]
    assert select["options"][1]["text"]["text"] == "L" * 74 + "…"
    assert json.loads(view["private_metadata"]) == {"channel": "C1", "thread_ts": "1.2"}
    assert len(view["private_metadata"]) < 3000


def test_the_picker_reads_its_values_and_says_what_is_missing():
    view = build_voice_picker([voice("v1", "One")], "C1", "1.2", "hello")
    view["state"] = {"values": {"voice": {"voice": {"selected_option": {"value": "v1"}}},
                                "text": {"text": {"value": "  hello there "}}}}
    assert read_voice_picker(view) == ({"voice_id": "v1", "text": "hello there", "channel": "C1", "thread_ts": "1.2"},
                                       {})
    view["state"] = {"values": {"text": {"text": {"value": "z" * 3001}}}}
    assert read_voice_picker(view)[1] == {"voice": "Pick one of your voices.", "text": "Write 1 to 3,000 characters."}


def test_the_stand_in_builds_slacks_message_action_payload():
    message = {"type": "message", "user": "U2", "text": "hi", "ts": "1.5", "thread_ts": "1.0"}
    body = message_action(message, "C9", SPEAK_SHORTCUT, "U1", trigger_id="t.1", user_name="ann")
    assert {k: body[k] for k in ("type", "callback_id", "trigger_id", "message_ts", "channel", "user", "team")} == {
        "type": "message_action", "callback_id": "speak_in_my_voice", "trigger_id": "t.1", "message_ts": "1.5",
        "channel": {"id": "C9", "name": "c9"}, "user": {"id": "U1", "username": "ann", "name": "ann",
                                                       "team_id": "T0TEST"},
        "team": {"id": "T0TEST", "domain": "standin"},
    }
    assert body["message"] == message and body["response_url"].startswith("https://")


# -- through the real app -------------------------------------------------------------------------------------------


def give_voices(bot: BotHarness, user: str, *names: str) -> list[str]:
    """Voices of `user` in the library (and known to the TRTC stand-in), oldest first; their VoiceIds."""
    ids = []
    for n, name in enumerate(names):
        voice_id = f"{name}_{user.lower()}"
        bot.trtc.voices[voice_id] = "flow_01_turbo"
        record = VoiceRecord(team_id=bot.slack.team_id, voice_id=voice_id, voice_name=name, owner=user,
                             created_at=time.time() + n, model="flow_01_turbo", language="en")
        assert bot.submit(bot.runtime.voices.library.add(record)).result(10)
        ids.append(voice_id)
    return ids


def post(bot: BotHarness, channel: str, text: str, author: str = "U0AUTHOR", thread_ts: str | None = None) -> str:
    """A person's message in `channel` (stored in the stand-in, as Slack holds it); its ts."""
    body = bot.slack.user_message(channel, author, text=text, thread_ts=thread_ts, subtype=None)
    return body["event"]["ts"]


def shortcut(bot: BotHarness, channel: str, ts: str, user: str, user_name: str = "user") -> None:
    body = bot.slack.message_shortcut(channel, ts, SPEAK_SHORTCUT, user, user_name=user_name)
    response = bot.deliver(body, kind="interactive")
    assert response.status_code == 200 and not response.content.strip(b"{} ")


def uploads_in(bot: BotHarness, channel: str, thread_ts: str) -> list[dict[str, Any]]:
    return [m for m in bot.slack.messages(channel)
            if m.get("files") and m.get("bot_id") and m.get("thread_ts") == thread_ts]


def tts_requests(bot: BotHarness) -> list[Any]:
    return [r for r in bot.trtc.requests if r.action == "TextToSpeech"]


def notes_for(bot: BotHarness, user: str) -> list[str]:
    return [e["text"] for e in bot.slack.ephemerals() if e.get("user") == user]


def say_jobs(bot: BotHarness, user: str) -> int:
    return bot.sql("SELECT COUNT(*) FROM jobs WHERE kind = 'say' AND user_id = ?", (user,))[0][0]


def seconds_of(audio: bytes, tmp: Path) -> float:
    """The clip's length, by decoding all of it (it must be mp3)."""
    path = tmp / "clip.mp3"
    path.write_bytes(audio)
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "24000",
                           "-"], capture_output=True, check=True)
    assert "Audio: mp3" in done.stderr.decode()
    return len(done.stdout) / 2 / 24000


def test_a_600_character_message_is_spoken_into_its_thread_as_one_mp3(bot, media, tmp_path):
    # A voice cloned the real way (a shared recording), then its owner is U0SOLO.
    response, share = bot.share(media.speech(15, ".wav").read_bytes(), "sam.wav", "audio/wav", "wav",
                                channel="C0CLONES")
    assert response.status_code == 200 and bot.wait_final(*where(share)) == "white_check_mark"
    voice_id = next(m["text"] for m in bot.replies(*where(share)) if m["text"].startswith("Voice cloned: ")).split()[-1]
    bot.sql("UPDATE voices SET owner = ? WHERE voice_id = ?", ("U0SOLO", voice_id))
    bot.drain()
    bot.trtc.reset()

    ts = post(bot, "C0SPEAK", MESSAGE)
    shortcut(bot, "C0SPEAK", ts, "U0SOLO", user_name="sam")
    assert bot.wait(lambda: uploads_in(bot, "C0SPEAK", ts) or len(notes_for(bot, "U0SOLO")) > 1, 60)
    assert uploads_in(bot, "C0SPEAK", ts), notes_for(bot, "U0SOLO")
    bot.drain()
    # One clip, in the message's thread, and no other upload anywhere.
    (upload,) = uploads_in(bot, "C0SPEAK", ts)
    assert len(bot.slack.calls_to("files.completeUploadExternal")) == 1
    file = upload["files"][0]
    assert file["name"].endswith("-says.mp3") and "<@U0SOLO>" in upload["text"]
    # Spoken in three parts at sentence ends, in that voice, none over TextToSpeech's 255 characters.
    requests = tts_requests(bot)
    assert sorted(r.text for r in requests) == sorted(PARTS)
    assert [len(p) for p in PARTS] == [198, 210, 196]
    assert all(r.outcome == "ok" and r.voice["VoiceId"] == voice_id for r in requests)
    assert max(len(r.text) for r in requests) <= 255
    # Decodable, and as long as the parts (the stand-in speaks 0.065 s a character) plus two 150 ms pauses.
    expected = sum(max(0.5, 0.065 * len(p)) for p in PARTS) + 2 * 0.150
    assert expected == pytest.approx(39.56)
    assert seconds_of(bot.slack.file_content(file["id"]), tmp_path) == pytest.approx(expected, abs=0.2)
    assert notes_for(bot, "U0SOLO") == [
        f":speaking_head_in_silhouette: *{upload['files'][0]['title'].removesuffix(' says')}* is reading it; "
        "the clip follows in the thread."
    ]


def test_someone_without_a_voice_is_told_how_to_make_one(bot):
    ts = post(bot, "C0NOVOICE", "Read me, please.")
    shortcut(bot, "C0NOVOICE", ts, "U0NOVOICE")
    assert bot.wait(lambda: notes_for(bot, "U0NOVOICE"))
    (note,) = bot.slack.ephemerals("C0NOVOICE")
    assert note["text"] == NO_VOICE and note.get("thread_ts") == ts
    assert "drop a recording of yourself speaking (10 s to 3 min, only you)" in note["text"]
    assert "`/clone`" in note["text"]
    assert bot.slack.calls_to("views.open") == [] and tts_requests(bot) == [] and say_jobs(bot, "U0NOVOICE") == 0


def test_one_voice_goes_straight_away_into_the_thread_the_message_is_in(bot):
    (voice_id,) = give_voices(bot, "U0ONE", "Only_voice")
    parent = post(bot, "C0ONE", "Who is on call?")
    reply = post(bot, "C0ONE", "*Dana* is, until Friday :sunglasses:", thread_ts=parent)
    shortcut(bot, "C0ONE", reply, "U0ONE")
    assert bot.wait(lambda: uploads_in(bot, "C0ONE", parent))
    assert bot.slack.calls_to("views.open") == []
    (request,) = tts_requests(bot)
    assert request.text == "Dana is, until Friday" and request.voice["VoiceId"] == voice_id
    assert request.audio_format == {"Format": "mp3", "SampleRate": 24000}  # one part: one mp3 request, as before
    assert notes_for(bot, "U0ONE") == [
        ":speaking_head_in_silhouette: *Only_voice* is reading it; the clip follows in the thread."]


def test_several_voices_get_the_picker_and_the_chosen_one_speaks(bot):
    first, second = give_voices(bot, "U0MANY", "Morning_voice", "Evening_voice")
    ts = post(bot, "C0MANY", "Good evening, _everyone_.")
    shortcut(bot, "C0MANY", ts, "U0MANY")
    assert bot.wait(lambda: bot.slack.views)
    (opened,) = bot.slack.calls_to("views.open")
    sent = opened["view"] if isinstance(opened["view"], dict) else json.loads(opened["view"])
    View(**sent).validate_json()
    (view_id,) = bot.slack.views
    view = bot.slack.views[view_id]
    assert view["callback_id"] == SPEAK_CALLBACK
    options = view["blocks"][0]["element"]["options"]
    assert [(o["text"]["text"], o["value"]) for o in options] == [("Evening_voice", second), ("Morning_voice", first)]
    assert view["blocks"][1]["element"]["initial_value"] == "Good evening, everyone."
    assert tts_requests(bot) == [] and say_jobs(bot, "U0MANY") == 0  # nothing until a voice is picked
    values = {"voice": {"voice": {"type": "static_select", "selected_option": options[1]}},
              "text": {"text": {"type": "plain_text_input", "value": "Good evening, everyone."}}}
    done = bot.deliver(bot.slack.view_submission(view_id, "U0MANY", values), kind="interactive")
    assert done.status_code == 200 and not done.content.strip(b"{} ")
    assert bot.wait(lambda: uploads_in(bot, "C0MANY", ts))
    (request,) = tts_requests(bot)
    assert request.text == "Good evening, everyone." and request.voice["VoiceId"] == first
    assert uploads_in(bot, "C0MANY", ts)[0]["files"][0]["name"] == "Morning_voice-says.mp3"


def test_someone_elses_voice_cannot_be_used(bot):
    (theirs,) = give_voices(bot, "U0OWNER", "Owners_voice")
    mine = give_voices(bot, "U0THIEF", "Thief_a", "Thief_b")
    ts = post(bot, "C0THEFT", "Say this in the owner's voice.")
    shortcut(bot, "C0THEFT", ts, "U0THIEF")
    assert bot.wait(lambda: bot.slack.views)
    (view_id,) = bot.slack.views
    # The picker offers only the presser's own voices...
    assert [o["value"] for o in bot.slack.views[view_id]["blocks"][0]["element"]["options"]] == mine[::-1]
    # ...and a forged submission naming another person's voice is refused on the form.
    forged = {"voice": {"voice": {"selected_option": {"value": theirs}}}, "text": {"text": {"value": "hi"}}}
    answer = bot.deliver(bot.slack.view_submission(view_id, "U0THIEF", forged), kind="interactive").json()
    assert answer == {"response_action": "errors",
                      "errors": {"voice": "Only the person who cloned it can use this voice."}}
    bot.drain()
    assert tts_requests(bot) == [] and say_jobs(bot, "U0THIEF") == 0
    # A workspace admin may (ADMIN_USERS), as with /clone say.
    answer = bot.deliver(bot.slack.view_submission(view_id, ADMIN, forged), kind="interactive")
    assert answer.status_code == 200 and not answer.content.strip(b"{} ")
    assert bot.wait(lambda: uploads_in(bot, "C0THEFT", ts))
    assert [(r.text, r.voice["VoiceId"]) for r in tts_requests(bot)] == [("hi", theirs)]


def test_a_message_too_long_to_read_is_refused_plainly(bot):
    give_voices(bot, "U0LONG", "Long_voice")
    ts = post(bot, "C0LONG", "word " * 700)  # 3,499 characters to speak
    shortcut(bot, "C0LONG", ts, "U0LONG")
    assert bot.wait(lambda: notes_for(bot, "U0LONG"))
    assert notes_for(bot, "U0LONG") == [too_long(3499)]
    assert too_long(3499) == ("That message is too long to read aloud: it has 3,499 characters to speak, and I read at "
                              "most 3,000. Copy the part you want into `/clone say`, or shorten it.")
    assert tts_requests(bot) == [] and say_jobs(bot, "U0LONG") == 0


def test_the_say_quota_applies(bot):
    give_voices(bot, "U0BUSY", "Busy_voice")
    ts = post(bot, "C0BUSY", "Again.")
    for n in range(1, 4):  # one after the other: each is answered before the next is asked
        shortcut(bot, "C0BUSY", ts, "U0BUSY")
        assert bot.wait(lambda n=n: len(notes_for(bot, "U0BUSY")) == n)
    notes = notes_for(bot, "U0BUSY")
    on_it = ":speaking_head_in_silhouette: *Busy_voice* is reading it; the clip follows in the thread."
    assert notes[:2] == [on_it, on_it]
    assert notes[2].startswith("You've asked for 2 clips in the last minute, the most one person may.")
    bot.drain()
    assert say_jobs(bot, "U0BUSY") == 2 and len(uploads_in(bot, "C0BUSY", ts)) == 2
