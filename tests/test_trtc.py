"""VoiceCloneClient against the TRTC stand-in over real loopback HTTP: answers, retries, pacing, logging."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import math
import re
import socket
import struct
import wave
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache
from typing import Any

import httpx
import pytest

from bot.errors import ApiError, ConfigError, InvalidVoiceNameError, PromptTextError
from bot.runtime import trtc_limiter
from bot.settings import Secret, Settings
from bot.tencent.limiter import PerActionLimiter, RateLimiter, SlidingWindowLimiter
from bot.tencent.tts import TextToSpeechClient, Voice
from bot.tencent.voiceclone import (
    MAX_PROMPT_TEXT,
    VOICE_NAME_RE,
    CloneOutcome,
    VoiceCloneClient,
    default_voice_name,
    validate_voice_name,
)
from bot.testing.standin_trtc import TrtcStandIn

SECRET_ID = "AKID-client-test-id"
SECRET_KEY = "client-secret-key-do-not-log-0123456789"
APP_ID = 1400000002
ATTEMPTS = 4


@lru_cache(maxsize=1)
def prompt_wav() -> bytes:
    """10.5 s of a 220 Hz tone, 16 kHz mono 16-bit: what the stand-in (and TRTC) accepts."""
    rate = 16000
    second = struct.pack(
        f"<{rate}h", *(int(8000 * math.sin(2 * math.pi * 220 * i / rate)) for i in range(rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(second * 10 + second[:rate])
    return out.getvalue()


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "tencent_secret_id": Secret(SECRET_ID),
        "tencent_secret_key": Secret(SECRET_KEY),
        "trtc_sdk_app_id": APP_ID,
        "trtc_endpoint": url,
        "trtc_timeout": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


def fast_client(settings: Settings, **overrides: Any) -> VoiceCloneClient:
    options: dict[str, Any] = {"max_attempts": ATTEMPTS, "backoff_base": 0.01, "backoff_max": 0.02}
    options.update(overrides)
    return VoiceCloneClient(settings, **options)


@pytest.fixture
def trtc() -> Iterator[TrtcStandIn]:
    with TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID) as standin:
        yield standin


@pytest.fixture
async def client(trtc: TrtcStandIn) -> AsyncIterator[VoiceCloneClient]:
    async with fast_client(settings_for(trtc.url)) as voice_clone:
        yield voice_clone


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- success -------------------------------------------------------------------------------------------


async def test_clone_returns_the_voice_id_and_request_id(client: VoiceCloneClient, trtc: TrtcStandIn) -> None:
    outcome = await client.clone(name="Alice_1", wav=prompt_wav(), text="  hello there  ")

    [seen] = trtc.requests
    assert outcome == CloneOutcome(voice_id=outcome.voice_id, request_id=seen.request_id)
    assert outcome.voice_id.startswith("Alice_1_") and outcome.request_id
    assert seen.outcome == "ok" and seen.voice_name == "Alice_1"
    assert seen.audio_seconds == pytest.approx(10.5) and seen.sample_rate == 16000
    assert seen.prompt_text == "hello there"
    assert seen.model is None and seen.language is None


async def test_model_and_language_default_to_settings_and_can_be_overridden(trtc: TrtcStandIn) -> None:
    settings = settings_for(trtc.url, voiceclone_model="flow_01_ex", voiceclone_language="zh")
    async with fast_client(settings) as client:
        await client.clone(name="a", wav=prompt_wav())
        await client.clone(name="b", wav=prompt_wav(), model="flow_02_turbo", language="en")
    first, second = trtc.requests
    assert (first.model, first.language) == ("flow_01_ex", "zh")
    assert (second.model, second.language) == ("flow_02_turbo", "en")


# -- errors that must not be retried ------------------------------------------------------------------

NON_TRANSIENT = [
    "InvalidParameter.AudioPrompt",
    "InvalidParameter.SampleRate",
    "InvalidParameter.TextLength",
    "InvalidParameter.VoiceName",
    "MissingParameter.APIKey",
    "UnsupportedOperation.InternalError",
    "UnsupportedOperation.NotAllowed",
    "UnsupportedOperation.VoiceCloneError",
    "LimitExceeded.VoiceCloneMaxNumLimit",
    "AuthFailure.SignatureFailure",
    "AuthFailure.UnauthorizedOperation",
    "InvalidParameter",
]


@pytest.mark.parametrize("code", NON_TRANSIENT)
async def test_non_transient_codes_raise_at_once(
    client: VoiceCloneClient, trtc: TrtcStandIn, code: str
) -> None:
    trtc.fail_next(code, times=ATTEMPTS)
    with pytest.raises(ApiError) as caught:
        await client.clone(name="Alice", wav=prompt_wav())

    [seen] = trtc.requests
    assert caught.value.code == code
    assert caught.value.request_id == seen.request_id is not None
    assert not caught.value.transient


async def test_a_wrong_secret_key_fails_once_with_the_servers_code(trtc: TrtcStandIn) -> None:
    settings = settings_for(trtc.url, tencent_secret_key=Secret("not-the-right-key"))
    async with fast_client(settings) as client:
        with pytest.raises(ApiError) as caught:
            await client.clone(name="Alice", wav=prompt_wav())
    assert caught.value.code == "AuthFailure.SignatureFailure"
    assert caught.value.request_id == trtc.requests[0].request_id
    assert len(trtc.requests) == 1


async def test_audio_the_server_rejects_fails_once(client: VoiceCloneClient, trtc: TrtcStandIn) -> None:
    cd_rate = io.BytesIO()
    with wave.open(cd_rate, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(44100)
        wav.writeframes(bytes(44100 * 2 * 11))
    with pytest.raises(ApiError) as caught:
        await client.clone(name="Alice", wav=cd_rate.getvalue())
    assert caught.value.code == "InvalidParameter.SampleRate"
    assert len(trtc.requests) == 1


async def test_an_http_404_is_not_retried(client: VoiceCloneClient, trtc: TrtcStandIn) -> None:
    trtc.http_error_next(404, times=ATTEMPTS, body="<html>404 Not Found</html>")
    with pytest.raises(ApiError) as caught:
        await client.clone(name="Alice", wav=prompt_wav())
    assert caught.value.code == "UnexpectedResponse"
    assert "<html>" not in str(caught.value)
    assert len(trtc.requests) == 1


async def test_a_200_page_that_is_not_tencents_json_is_unexpected(
    client: VoiceCloneClient, trtc: TrtcStandIn
) -> None:
    """A proxy or captive portal answering 200 with HTML: reported, not retried, not shown."""
    trtc.http_error_next(200, times=ATTEMPTS, body="<html>Please sign in to the Wi-Fi</html>")
    with pytest.raises(ApiError) as caught:
        await client.clone(name="Alice", wav=prompt_wav())
    assert caught.value.code == "UnexpectedResponse"
    assert "Wi-Fi" not in str(caught.value)
    assert len(trtc.requests) == 1


# -- transient errors: retried -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "failures"),
    [
        (lambda t: t.fail_next("RequestLimitExceeded", times=2), 2),
        (lambda t: t.fail_next("InternalError", times=3), 3),
        (lambda t: t.fail_next("ResourceUnavailable"), 1),
        (lambda t: t.http_error_next(502, times=2), 2),
        (lambda t: t.http_error_next(500, body="<html>500 Internal Server Error</html>"), 1),
        (lambda t: t.drop_next(), 1),
    ],
    ids=["RequestLimitExceeded", "InternalError", "ResourceUnavailable", "HTTP502", "HTTP500", "dropped"],
)
async def test_transient_failures_are_retried_until_success(
    client: VoiceCloneClient, trtc: TrtcStandIn, script: Any, failures: int
) -> None:
    script(trtc)
    outcome = await client.clone(name="Alice", wav=prompt_wav())

    outcomes = [r.outcome for r in trtc.requests]
    assert len(outcomes) == failures + 1
    assert outcomes[-1] == "ok" and "ok" not in outcomes[:-1]
    assert outcome.request_id == trtc.requests[-1].request_id


async def test_exhausted_retries_raise_the_last_error(client: VoiceCloneClient, trtc: TrtcStandIn) -> None:
    trtc.fail_next("InternalError", times=10)
    with pytest.raises(ApiError) as caught:
        await client.clone(name="Alice", wav=prompt_wav())
    assert len(trtc.requests) == ATTEMPTS
    assert caught.value.code == "InternalError"
    assert caught.value.request_id == trtc.requests[-1].request_id


async def test_a_gateway_error_page_never_reaches_the_message(
    client: VoiceCloneClient, trtc: TrtcStandIn
) -> None:
    trtc.http_error_next(502, times=10, body="<html><body>502 Bad Gateway nginx/1.25</body></html>")
    with pytest.raises(ApiError) as caught:
        await client.clone(name="Alice", wav=prompt_wav())
    assert caught.value.code == "ServerNetworkError"
    assert "HTTP 502" in caught.value.message
    assert "<html>" not in str(caught.value) and "nginx" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert len(trtc.requests) == ATTEMPTS


async def test_a_slow_answer_becomes_a_network_error_after_bounded_attempts(trtc: TrtcStandIn) -> None:
    trtc.delay_next(30, times=10)
    async with fast_client(settings_for(trtc.url, trtc_timeout=0.2)) as client:
        with pytest.raises(ApiError) as caught:
            await client.clone(name="Alice", wav=prompt_wav())
    assert caught.value.code == "NetworkError" and caught.value.transient
    assert "did not answer within 0.2 s" in caught.value.message
    assert len(trtc.requests) == ATTEMPTS


async def test_a_refused_connection_becomes_a_network_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.tencent.voiceclone")
    async with fast_client(settings_for(f"http://127.0.0.1:{closed_port()}")) as client:
        with pytest.raises(ApiError) as caught:
            await client.clone(name="Alice", wav=prompt_wav())
    assert caught.value.code == "NetworkError"
    assert caught.value.request_id is None
    retries = [r for r in caplog.records if r.name == "bot.tencent.voiceclone" and "retrying" in r.getMessage()]
    assert len(retries) == ATTEMPTS - 1


async def test_a_dropped_connection_becomes_a_network_error(
    client: VoiceCloneClient, trtc: TrtcStandIn
) -> None:
    trtc.drop_next(times=10)
    with pytest.raises(ApiError) as caught:
        await client.clone(name="Alice", wav=prompt_wav())
    assert caught.value.code == "NetworkError"
    assert len(trtc.requests) == ATTEMPTS


# -- input checked before any call ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "has space", "x" * 37, "dash-name", "名前", "tab\t"])
async def test_invalid_voice_names_fail_before_any_call(
    client: VoiceCloneClient, trtc: TrtcStandIn, name: str
) -> None:
    with pytest.raises(InvalidVoiceNameError):
        await client.clone(name=name, wav=prompt_wav())
    assert trtc.requests == []


async def test_a_long_transcript_fails_before_any_call(client: VoiceCloneClient, trtc: TrtcStandIn) -> None:
    with pytest.raises(PromptTextError) as caught:
        await client.clone(name="Alice", wav=prompt_wav(), text="x" * (MAX_PROMPT_TEXT + 1))
    assert (caught.value.length, caught.value.limit) == (MAX_PROMPT_TEXT + 1, MAX_PROMPT_TEXT)
    assert trtc.requests == []
    await client.clone(name="Alice", wav=prompt_wav(), text="x" * MAX_PROMPT_TEXT)
    assert trtc.requests[0].outcome == "ok"


def test_missing_credentials_are_a_config_error_naming_every_key() -> None:
    with pytest.raises(ConfigError) as caught:
        VoiceCloneClient(Settings())
    assert set(caught.value.problems) == {
        "TENCENTCLOUD_SECRET_ID",
        "TENCENTCLOUD_SECRET_KEY",
        "TRTC_SDK_APP_ID",
    }


async def test_a_host_name_endpoint_means_https() -> None:
    async with VoiceCloneClient(settings_for("trtc.intl.tencentcloudapi.com")) as client:
        profile = client._sdk.profile.httpProfile
        assert (profile.scheme, profile.endpoint) == ("https", "trtc.intl.tencentcloudapi.com")
        assert profile.reqTimeout == 5.0


@pytest.mark.parametrize(
    ("name", "valid"),
    [("A", True), ("Alice_Smith_2", True), ("x" * 36, True), ("_", True), ("x" * 37, False)]
    + [(bad, False) for bad in ["", "a b", "a-b", "a.b", "é", "a\n", "ａ"]],
)
def test_validate_voice_name(name: str, valid: bool) -> None:
    if valid:
        assert validate_voice_name(name) == name
    else:
        with pytest.raises(InvalidVoiceNameError):
            validate_voice_name(name)


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("Voice Memo 12.m4a", "Voice_Memo_12"),
        ("audio_message.m4a", "audio_message"),
        ("IMG_0001.MOV", "IMG_0001"),
        ("録音.m4a", "voice"),
        ("my voice (final) v2.mp3", "my_voice_final_v2"),
        ("Grüße von Zoë.wav", "Grusse_von_Zoe"),
        ("Café – take 3.webm", "Cafe_take_3"),
        ("声音 Alice.ogg", "Alice"),
        (".m4a", "voice"),
        ("Smørrebrød Æble Łódź.mp3", "Smorrebrod_AEble_Lodz"),
        ("", "voice"),
        ("---.wav", "voice"),
        ("dir/sub\\name.mp3", "name"),
        ("v1.2 final", "v1_2_final"),
        ("a" * 50 + ".wav", "a" * 36),
        ("a" * 35 + " b.wav", "a" * 35),
    ],
)
def test_default_voice_name(filename: str, expected: str) -> None:
    name = default_voice_name(filename)
    assert name == expected
    assert VOICE_NAME_RE.fullmatch(name)


# -- pacing ---------------------------------------------------------------------------------------------


async def test_limiter_keeps_at_most_n_starts_in_any_window_and_is_fifo() -> None:
    limiter = SlidingWindowLimiter(3, 0.2)
    loop = asyncio.get_running_loop()
    starts: list[tuple[float, int]] = []

    async def one(index: int) -> None:
        async with limiter:
            starts.append((loop.time(), index))

    await asyncio.gather(*(one(i) for i in range(10)))

    assert [index for _, index in starts] == list(range(10)), "served in arrival order"
    times = [at for at, _ in starts]
    assert all(times[i + 3] - times[i] >= 0.2 for i in range(len(times) - 3))
    assert times[-1] - times[0] < 2.0, "and it does not wait needlessly"


async def test_a_call_in_progress_keeps_its_place_until_a_period_after_it_ends() -> None:
    """What keeps a server that counts arrivals (later than our starts) under the limit."""
    loop = asyncio.get_running_loop()
    limiter = SlidingWindowLimiter(1, 0.1)
    finish = asyncio.Event()

    async def long_call() -> None:
        async with limiter:
            await finish.wait()

    async def next_call() -> float:
        await limiter.acquire()
        return loop.time()  # when it got in

    running = asyncio.create_task(long_call())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(next_call())
    # The call runs over twice the period: counting starts alone would have let the next one in at 0.1 s.
    await asyncio.sleep(0.25)
    ended = loop.time()
    finish.set()
    await running
    got_in = await waiting
    # Judged by when the waiter really got in, not by a look at it at some moment: a period after the call ended,
    # so neither while it ran nor at its end.
    assert got_in - ended >= 0.1


async def test_limiter_lets_a_burst_through_at_once_when_idle() -> None:
    limiter = SlidingWindowLimiter(5, 10.0)
    await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(5))), timeout=1.0)


async def test_a_cancelled_waiter_does_not_use_up_a_start() -> None:
    loop = asyncio.get_running_loop()
    limiter = SlidingWindowLimiter(1, 0.3)
    await limiter.acquire()
    first = loop.time()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await limiter.acquire()
    # Next free start is first + 0.3; had the cancelled waiter taken that slot, this would be first + 0.6.
    assert 0.3 <= loop.time() - first < 0.55


async def test_thirty_concurrent_clones_stay_under_the_servers_rate_limit() -> None:
    with TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID, max_rps=10) as trtc:
        async with fast_client(settings_for(trtc.url, trtc_max_rps=10), max_attempts=1) as client:
            outcomes = await asyncio.gather(
                *(client.clone(name=f"v{i}", wav=prompt_wav()) for i in range(30))
            )
        assert len({o.voice_id for o in outcomes}) == 30
        assert trtc.refusals == 0
        assert [r.outcome for r in trtc.requests] == ["ok"] * 30


async def test_without_the_limiter_the_same_burst_is_refused() -> None:
    """The control for the test above: the stand-in does refuse a burst over max_rps."""
    with TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID, max_rps=10) as trtc:
        unlimited = SlidingWindowLimiter(1000, 1.0)
        async with fast_client(settings_for(trtc.url), max_attempts=1, limiter=unlimited) as client:
            results = await asyncio.gather(
                *(client.clone(name=f"v{i}", wav=prompt_wav()) for i in range(30)), return_exceptions=True
            )
        refused = [r for r in results if isinstance(r, ApiError) and r.code == "RequestLimitExceeded"]
        assert refused and trtc.refusals == len(refused)


async def _clones_each_previewed(limiter: RateLimiter | PerActionLimiter, shares: int = 40) -> TrtcStandIn:
    """What the bot does with `shares` recordings and PREVIEW=on: a pool of workers clones them one after another;
    each answered clone's TextToSpeech preview runs on the side while the worker goes on to the next clone (as
    bot.work.runner hands it to bot.work.voice_service). Against a stand-in allowing 20 requests a second (per
    action, as Tencent does); returns the stopped stand-in with its records."""
    with TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID, max_rps=20) as trtc:
        settings = settings_for(trtc.url)
        clones = fast_client(settings, max_attempts=1, limiter=limiter)
        tts = TextToSpeechClient(settings, limiter=limiter, max_attempts=1)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(shares):
            queue.put_nowait(index)
        previews: list[asyncio.Task[object]] = []

        async def worker() -> None:
            while not queue.empty():
                outcome = await clones.clone(name=f"v{queue.get_nowait()}", wav=prompt_wav())
                previews.append(asyncio.create_task(tts.speak("Hello.", Voice(outcome.voice_id), fmt="pcm")))

        try:
            await asyncio.gather(*(worker() for _ in range(8)))
            await asyncio.gather(*previews)
        finally:
            await clones.aclose()
            await tts.aclose()
    return trtc


def _clones_within_two_seconds(trtc: TrtcStandIn) -> int:
    times = [r.time for r in trtc.requests_of("VoiceClone") if r.outcome == "ok"]
    return sum(1 for at in times if at < times[0] + 2.0)


async def test_previews_take_nothing_from_the_clone_rate_one_window_per_action() -> None:
    """Issue 19: with TRTC_MAX_RPS per action (the runtime's limiter), 40 clones each followed by its preview run at
    the full 20 VoiceClone/s, while TextToSpeech uses its own 20/s."""
    trtc = await _clones_each_previewed(trtc_limiter(settings_for("http://127.0.0.1:9")))

    assert trtc.refusals == 0
    assert [r.outcome for r in trtc.requests_of("VoiceClone")] == ["ok"] * 40
    assert [r.outcome for r in trtc.requests_of("TextToSpeech")] == ["ok"] * 40
    # Each action used its whole cap and never more, by the stand-in's arrival times...
    assert trtc.max_requests_per_second("VoiceClone") == 20
    assert trtc.max_requests_per_second("TextToSpeech") == 20
    # ...in windows of their own: 20 clones and 20 previews arrived within one second.
    assert trtc.max_requests_per_second() == 40
    # 20 clones a second: all 40 within two seconds of the first.
    cloned = _clones_within_two_seconds(trtc)
    print(f"\none window per action: {cloned} clones in the first 2 s ({cloned / 2:.0f}/s), with 40 previews")
    assert cloned == 40


async def test_one_window_for_both_actions_halves_the_clone_rate() -> None:
    """The control for the test above: one limiter for VoiceClone and TextToSpeech together (the bot before issue
    19) gives the previews half the window, so the same 40 clones go at about 10 a second."""
    trtc = await _clones_each_previewed(SlidingWindowLimiter(20, 1.0))

    assert trtc.refusals == 0
    assert trtc.max_requests_per_second() == 20
    cloned = _clones_within_two_seconds(trtc)
    print(f"\none window for both actions: {cloned} clones in the first 2 s ({cloned / 2:.0f}/s), with 40 previews")
    assert cloned <= 28


async def test_a_per_action_limiter_keeps_one_limiter_per_action() -> None:
    limiter = PerActionLimiter.in_process(1, 10.0)
    clone, speech = limiter.for_action("VoiceClone"), limiter.for_action("TextToSpeech")
    assert clone is limiter.for_action("VoiceClone") and clone is not speech
    assert limiter.limiters == {"VoiceClone": clone, "TextToSpeech": speech}
    # VoiceClone's only call in ten seconds does not hold up TextToSpeech's.
    await clone.acquire()
    await asyncio.wait_for(speech.acquire(), timeout=1.0)
    with pytest.raises(ValueError):
        PerActionLimiter.in_process(0, 1.0)


# -- logging ----------------------------------------------------------------------------------------------


async def test_debug_logging_leaks_neither_the_secret_key_nor_the_audio(
    trtc: TrtcStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger and its handler, as LOG_LEVEL=DEBUG would
    caplog.set_level(logging.DEBUG, logger="httpcore")  # in case another test quietened it
    sdk_logger = logging.getLogger("tencentcloud_sdk_common")
    audio_chunk = base64.b64encode(prompt_wav()).decode()[4000:4064]
    sdk_logger.setLevel(logging.NOTSET)  # as in a fresh process, whatever tests ran before
    try:
        async with fast_client(settings_for(trtc.url)) as client:
            await client.clone(name="Alice", wav=prompt_wav(), text="private words")
            trtc.fail_next("InternalError")
            trtc.http_error_next(502)
            await client.clone(name="Alice", wav=prompt_wav())
            trtc.fail_next("InvalidParameter.AudioPrompt")
            with pytest.raises(ApiError) as caught:
                await client.clone(name="Alice", wav=prompt_wav())
            # Even someone turning the SDK's own logger up to DEBUG gets nothing below INFO from it.
            sdk_logger.setLevel(logging.DEBUG)
            await client.clone(name="Alice", wav=prompt_wav())
    finally:
        sdk_logger.setLevel(logging.INFO)

    assert any(r.name.startswith("httpcore") for r in caplog.records), "DEBUG records were captured"
    assert not [r for r in caplog.records if r.name == "tencentcloud_sdk_common" and r.levelno < logging.INFO]
    text = (
        "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.__dict__}" for r in caplog.records)
        + caplog.text
        + str(caught.value)
        + repr(caught.value)
    )
    assert SECRET_KEY not in text
    assert audio_chunk not in text


# -- the hand-built, hand-signed request body -------------------------------------------------------------


async def test_the_hand_built_body_is_json_signed_over_its_exact_bytes(
    client: VoiceCloneClient, trtc: TrtcStandIn
) -> None:
    """The body is valid JSON carrying every field; the stand-in's TC3 verifier accepts exactly those bytes."""
    wav = prompt_wav()
    fields: dict[str, Any] = {"SdkAppId": APP_ID, "VoiceName": "Alice", "PromptText": 'a "b"\n\\c', "Model": None}
    body, digest = client._body(wav, **fields)
    assert json.loads(body) == {
        "SdkAppId": APP_ID,
        "VoiceName": "Alice",
        "PromptText": 'a "b"\n\\c',
        "PromptAudio": base64.b64encode(wav).decode(),
    }
    assert digest == hashlib.sha256(body).hexdigest()

    async with httpx.AsyncClient() as http:
        signed = await http.post(client._url, content=body, headers=client._headers(digest))
        assert "Error" not in signed.json()["Response"]
        [seen] = trtc.requests
        assert seen.outcome == "ok" and seen.audio_seconds == pytest.approx(10.5)
        assert seen.prompt_text == 'a "b"\n\\c'

        # The same headers over a body differing in one byte of the audio: the signature no longer matches.
        tampered = body.replace(b'"PromptAudio": "UklG', b'"PromptAudio": "UklH', 1)
        assert tampered != body
        refused = await http.post(client._url, content=tampered, headers=client._headers(digest))
        assert refused.json()["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"

        # A signature made with another key over the right body is refused as well.
        headers = client._headers(digest)
        headers["Authorization"] = re.sub(r"Signature=[0-9a-f]{64}", "Signature=" + "0" * 64, headers["Authorization"])
        wrong = await http.post(client._url, content=body, headers=headers)
        assert wrong.json()["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"


async def test_the_body_without_optional_fields_is_still_json(client: VoiceCloneClient) -> None:
    quoted, _ = client._body(b"", VoiceName='Zoë "x"', Language="\u2028")
    assert json.loads(quoted) == {"VoiceName": 'Zoë "x"', "Language": "\u2028", "PromptAudio": ""}
    body, _ = client._body(b"\x00\x01\x02\x03", SdkAppId=APP_ID, VoiceName="a", PromptText=None)
    assert json.loads(body) == {"SdkAppId": APP_ID, "VoiceName": "a", "PromptAudio": "AAECAw=="}
    empty, _ = client._body(b"", PromptText=None)
    assert json.loads(empty) == {"PromptAudio": ""}
