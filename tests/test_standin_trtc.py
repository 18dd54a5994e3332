"""The TRTC stand-in checks requests the way Tencent does: signatures, clocks, and VoiceClone's body rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import math
import struct
import threading
import time
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

import httpx
import pytest
from tencentcloud.common.credential import Credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.trtc.v20190722 import models
from tencentcloud.trtc.v20190722.trtc_client import TrtcClient

from bot.testing.standin_trtc import TrtcStandIn

SECRET_ID = "AKID-standin-test-id"
SECRET_KEY = "standin-secret-key-0123456789abcdef"
APP_ID = 1400000001


@cache
def make_wav(seconds: float = 11.0, rate: int = 16000, channels: int = 1, width: int = 2) -> bytes:
    """A 220 Hz tone as a PCM WAV, written with the stdlib."""
    wave_form = [math.sin(2 * math.pi * 220 * i / rate) for i in range(rate)]
    if width == 2:
        second = struct.pack(
            f"<{rate * channels}h", *(int(8000 * v) for v in wave_form for _ in range(channels))
        )
    else:
        second = bytes(128 + int(60 * v) for v in wave_form for _ in range(channels))
    whole, rest = divmod(int(seconds * rate), rate)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(second * whole + second[: rest * channels * width])
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def trtc() -> Iterator[TrtcStandIn]:
    with TrtcStandIn(SECRET_ID, SECRET_KEY, sdk_app_id=APP_ID) as standin:
        yield standin


def sdk(url: str, secret_id: str = SECRET_ID, secret_key: str = SECRET_KEY) -> TrtcClient:
    """The official synchronous SDK client aimed at the stand-in."""
    http = HttpProfile(protocol="http", endpoint=url.split("://", 1)[1], reqTimeout=10)
    profile = ClientProfile(httpProfile=http, language="en-US", disable_region_breaker=True)
    return TrtcClient(Credential(secret_id, secret_key), "ap-singapore", profile)


def clone(client: TrtcClient, **overrides: Any) -> models.VoiceCloneResponse:
    request = models.VoiceCloneRequest()
    request.SdkAppId = APP_ID
    request.VoiceName = "Alice_1"
    request.PromptAudio = b64(make_wav())
    for key, value in overrides.items():
        setattr(request, key, value)
    return client.VoiceClone(request)


def error_code(client: TrtcClient, **overrides: Any) -> str:
    with pytest.raises(TencentCloudSDKException) as caught:
        clone(client, **overrides)
    assert caught.value.get_request_id(), "errors carry a RequestId"
    return caught.value.get_code()


def hand_signed(
    url: str,
    params: dict[str, Any],
    *,
    timestamp: int | None = None,
    action: str = "VoiceClone",
    version: str = "2019-07-22",
    secret_key: str = SECRET_KEY,
    body: bytes | None = None,
) -> httpx.Response:
    """POST signed by TC3-HMAC-SHA256 as Tencent's documentation spells it (for what the SDK won't do)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    host = url.split("://", 1)[1]
    payload = json.dumps(params).encode()
    date = datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")
    canonical = (
        f"POST\n/\n\ncontent-type:application/json\nhost:{host}\n\ncontent-type;host\n"
        f"{hashlib.sha256(payload).hexdigest()}"
    )
    scope = f"{date}/trtc/tc3_request"
    to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("TC3" + secret_key).encode()
    for part in (date, "trtc", "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Version": version,
        "X-TC-Region": "ap-singapore",
        "X-TC-Timestamp": str(timestamp),
        "Authorization": f"TC3-HMAC-SHA256 Credential={SECRET_ID}/{scope}, "
        f"SignedHeaders=content-type;host, Signature={signature}",
    }
    return httpx.post(url + "/", content=payload if body is None else body, headers=headers, timeout=10)


def good_params(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"SdkAppId": APP_ID, "VoiceName": "Bob", "PromptAudio": b64(make_wav())}
    params.update(overrides)
    return params


def answer_code(response: httpx.Response) -> str | None:
    assert response.status_code == 200
    answer = response.json()["Response"]
    assert answer["RequestId"]
    return answer["Error"]["Code"] if "Error" in answer else None


def test_accepts_a_request_signed_by_the_sdk_and_records_it(trtc: TrtcStandIn) -> None:
    response = clone(sdk(trtc.url), PromptText="hello there", Model="flow_01_ex", Language="en")

    assert response.VoiceId.startswith("Alice_1_") and len(response.VoiceId) > len("Alice_1_")
    assert response.RequestId
    [seen] = trtc.requests
    assert seen.outcome == "ok" and seen.request_id == response.RequestId
    assert (seen.action, seen.secret_id, seen.voice_name) == ("VoiceClone", SECRET_ID, "Alice_1")
    assert (seen.sample_rate, seen.channels) == (16000, 1)
    assert seen.audio_seconds == pytest.approx(11.0)
    assert (seen.prompt_text, seen.model, seen.language) == ("hello there", "flow_01_ex", "en")


def test_voice_ids_differ_between_clones_of_the_same_name(trtc: TrtcStandIn) -> None:
    client = sdk(trtc.url)
    assert clone(client).VoiceId != clone(client).VoiceId


def test_refuses_a_wrong_secret_key(trtc: TrtcStandIn) -> None:
    assert error_code(sdk(trtc.url, secret_key="not-the-key")) == "AuthFailure.SignatureFailure"


def test_refuses_an_unknown_secret_id(trtc: TrtcStandIn) -> None:
    assert error_code(sdk(trtc.url, secret_id="AKIDsomebodyelse")) == "AuthFailure.SecretIdNotFound"


def test_hand_signer_is_right_so_the_failures_below_are_for_their_own_reason(trtc: TrtcStandIn) -> None:
    assert answer_code(hand_signed(trtc.url, good_params())) is None


def test_refuses_a_timestamp_ten_minutes_old(trtc: TrtcStandIn) -> None:
    response = hand_signed(trtc.url, good_params(), timestamp=int(time.time()) - 600)
    assert answer_code(response) == "AuthFailure.SignatureExpire"
    assert "five minutes" in response.json()["Response"]["Error"]["Message"]


def test_refuses_a_timestamp_from_the_future(trtc: TrtcStandIn) -> None:
    assert answer_code(hand_signed(trtc.url, good_params(), timestamp=int(time.time()) + 400)) == (
        "AuthFailure.SignatureExpire"
    )


def test_refuses_a_body_changed_after_signing(trtc: TrtcStandIn) -> None:
    tampered = json.dumps(good_params(VoiceName="Mallory")).encode()
    assert answer_code(hand_signed(trtc.url, good_params(), body=tampered)) == "AuthFailure.SignatureFailure"


def test_refuses_an_unknown_action_and_version(trtc: TrtcStandIn) -> None:
    assert answer_code(hand_signed(trtc.url, good_params(), action="DeleteVoice")) == "InvalidAction"
    assert answer_code(hand_signed(trtc.url, good_params(), version="2020-01-01")) == "NoSuchVersion"


def test_refuses_a_missing_authorization_header(trtc: TrtcStandIn) -> None:
    response = httpx.post(
        trtc.url + "/",
        json=good_params(),
        headers={
            "X-TC-Action": "VoiceClone",
            "X-TC-Version": "2019-07-22",
            "X-TC-Region": "ap-singapore",
            "X-TC-Timestamp": str(int(time.time())),
        },
    )
    assert answer_code(response) == "AuthFailure.InvalidAuthorization"


@pytest.mark.parametrize("app_id", ["1400000001", 14.5, True])
def test_refuses_a_non_integer_sdk_app_id(trtc: TrtcStandIn, app_id: Any) -> None:
    assert error_code(sdk(trtc.url), SdkAppId=app_id) == "InvalidParameter"


def test_refuses_another_accounts_sdk_app_id(trtc: TrtcStandIn) -> None:
    assert error_code(sdk(trtc.url), SdkAppId=APP_ID + 1) == "FailedOperation.SdkAppIdNotExist"


@pytest.mark.parametrize("name", ["has space", "x" * 37, "dash-name", "名前", "semi;colon"])
def test_refuses_a_bad_voice_name(trtc: TrtcStandIn, name: str) -> None:
    assert error_code(sdk(trtc.url), VoiceName=name) == "InvalidParameter.VoiceName"


def test_accepts_a_36_character_voice_name(trtc: TrtcStandIn) -> None:
    assert clone(sdk(trtc.url), VoiceName="A" * 36).VoiceId.startswith("A" * 36)


@pytest.mark.parametrize(
    ("audio", "code"),
    [
        (make_wav(rate=44100), "InvalidParameter.SampleRate"),
        (make_wav(channels=2), "InvalidParameter.AudioPrompt"),
        (make_wav(seconds=8), "InvalidParameter.AudioPrompt"),
        (make_wav(seconds=181), "InvalidParameter.AudioPrompt"),
        (make_wav(width=1), "InvalidParameter.AudioPrompt"),
        (b"ID3\x04\x00" + bytes(4000), "InvalidParameter.AudioPrompt"),
    ],
    ids=["44.1kHz", "stereo", "8s", "181s", "8-bit", "mp3"],
)
def test_refuses_unusable_prompt_audio(trtc: TrtcStandIn, audio: bytes, code: str) -> None:
    assert error_code(sdk(trtc.url), PromptAudio=b64(audio)) == code


def test_refuses_prompt_audio_that_is_not_base64(trtc: TrtcStandIn) -> None:
    assert error_code(sdk(trtc.url), PromptAudio="this is not base64!") == "InvalidParameter.AudioPrompt"


def test_accepts_the_limits_of_the_length_range(trtc: TrtcStandIn) -> None:
    client = sdk(trtc.url)
    assert clone(client, PromptAudio=b64(make_wav(seconds=10))).VoiceId
    assert clone(client, PromptAudio=b64(make_wav(seconds=180))).VoiceId


def test_refuses_missing_parameters_an_unknown_model_and_a_long_transcript(trtc: TrtcStandIn) -> None:
    client = sdk(trtc.url)
    assert error_code(client, PromptAudio=None) == "MissingParameter"
    assert error_code(client, VoiceName=None) == "MissingParameter"
    assert error_code(client, Model="flow_99") == "InvalidParameter"
    assert error_code(client, PromptText="x" * 1001) == "InvalidParameter.TextLength"
    assert clone(client, PromptText="x" * 1000, Model="flow_02_turbo").VoiceId


def test_refuses_unknown_parameters(trtc: TrtcStandIn) -> None:
    assert answer_code(hand_signed(trtc.url, good_params(Speed=1.0))) == "UnknownParameter"


def test_max_rps_refuses_the_request_over_the_limit() -> None:
    with TrtcStandIn(SECRET_ID, SECRET_KEY, max_rps=3) as trtc:
        # Tiny unsigned requests: the limit applies before anything else, and five of them take milliseconds.
        codes = [answer_code(httpx.post(trtc.url + "/", json={})) for _ in range(5)]
        first_arrival, last_arrival = trtc.requests[0].time, trtc.requests[-1].time
        assert last_arrival - first_arrival < 1.0, "the machine was too slow for this test to mean anything"
        assert [code == "RequestLimitExceeded" for code in codes] == [False, False, False, True, True]
        assert trtc.refusals == 2

        trtc.reset()
        assert trtc.refusals == 0 and trtc.requests == []
        assert answer_code(httpx.post(trtc.url + "/", json={})) != "RequestLimitExceeded"


def test_max_rps_counts_each_action_in_its_own_window() -> None:
    """As Tencent counts API frequency limits: VoiceClone's requests never use up TextToSpeech's, nor the reverse."""
    with TrtcStandIn(SECRET_ID, SECRET_KEY, max_rps=3) as trtc, httpx.Client(timeout=10) as client:
        # Tiny unsigned requests over one connection, the two actions in turn: eight take milliseconds.
        codes: dict[str, list[str | None]] = {"VoiceClone": [], "TextToSpeech": []}
        for _ in range(4):
            for action, answers in codes.items():
                answers.append(answer_code(client.post(trtc.url + "/", json={}, headers={"X-TC-Action": action})))
        assert trtc.requests[-1].time - trtc.requests[0].time < 1.0, "too slow a machine for this test to mean anything"
        for action in ("VoiceClone", "TextToSpeech"):
            assert [code == "RequestLimitExceeded" for code in codes[action]] == [False, False, False, True], action
        assert trtc.refusals == 2
        assert trtc.refusals_by_action == {"VoiceClone": 1, "TextToSpeech": 1}
        assert [len(trtc.requests_of(action)) for action in ("VoiceClone", "TextToSpeech")] == [4, 4]
        assert trtc.max_requests_per_second("VoiceClone") == 4
        assert trtc.max_requests_per_second("TextToSpeech") == 4
        assert trtc.max_requests_per_second() == 8
        assert trtc.wait_for_requests(4, timeout=1, action="TextToSpeech")
        assert trtc.wait_for_requests(5, timeout=0.05, action="TextToSpeech") is False

        trtc.reset()
        assert trtc.refusals_by_action == {}
        assert answer_code(httpx.post(trtc.url + "/", json={}, headers={"X-TC-Action": "VoiceClone"})) != (
            "RequestLimitExceeded"
        )


def test_fail_next_answers_with_the_scripted_code_then_recovers(trtc: TrtcStandIn) -> None:
    client = sdk(trtc.url)
    trtc.fail_next("InternalError", times=2)
    trtc.fail_next("UnsupportedOperation.VoiceCloneError", "custom words")

    with pytest.raises(TencentCloudSDKException) as first:
        clone(client)
    assert first.value.get_code() == "InternalError" and "internal error" in first.value.get_message()
    assert error_code(client) == "InternalError"
    with pytest.raises(TencentCloudSDKException) as third:
        clone(client)
    assert (third.value.get_code(), third.value.get_message()) == (
        "UnsupportedOperation.VoiceCloneError",
        "custom words",
    )
    assert clone(client).VoiceId
    assert [r.outcome for r in trtc.requests] == [
        "InternalError",
        "InternalError",
        "UnsupportedOperation.VoiceCloneError",
        "ok",
    ]


def test_http_error_next_sends_a_gateway_page(trtc: TrtcStandIn) -> None:
    trtc.http_error_next(503, body="<html>503 Service Unavailable</html>")
    with pytest.raises(TencentCloudSDKException) as caught:
        clone(sdk(trtc.url))
    assert caught.value.get_code() == "ServerNetworkError"
    assert b"503 Service Unavailable" in caught.value.get_message()
    assert trtc.requests[0].outcome == "HTTP 503" and trtc.requests[0].request_id is None
    assert clone(sdk(trtc.url)).VoiceId


def test_drop_next_closes_the_connection_without_an_answer(trtc: TrtcStandIn) -> None:
    trtc.drop_next()
    with pytest.raises(httpx.RemoteProtocolError):
        hand_signed(trtc.url, good_params())
    assert trtc.requests[0].outcome == "dropped"
    assert answer_code(hand_signed(trtc.url, good_params())) is None


def test_delay_next_holds_one_answer_without_holding_up_others(trtc: TrtcStandIn) -> None:
    trtc.delay_next(30)
    slow: list[object] = []

    def send_slowly() -> None:
        try:
            slow.append(hand_signed(trtc.url, good_params()))
        except httpx.HTTPError as exc:  # the stand-in may close the connection when it stops
            slow.append(exc)

    thread = threading.Thread(target=send_slowly, daemon=True)
    thread.start()
    assert trtc.wait_for_requests(1, timeout=10)

    started = time.monotonic()
    assert answer_code(hand_signed(trtc.url, good_params())) is None
    assert time.monotonic() - started < 5
    assert slow == [], "the delayed request is still waiting"

    # Stopping wakes the delayed request, so a test never waits for the whole delay.
    trtc.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_wait_for_requests_times_out(trtc: TrtcStandIn) -> None:
    assert trtc.wait_for_requests(1, timeout=0.05) is False
