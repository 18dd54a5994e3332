"""A local stand-in of Tencent Cloud's TRTC API (VoiceClone, TextToSpeech), checking requests as the real one does.

It verifies TC3-HMAC-SHA256 signatures with the secret key, enforces the documented VoiceClone body
rules, answers in Tencent's envelope ({"Response": {...}} over HTTP 200), limits the request rate per action as
Tencent does (`max_rps`: each action counted in its own one-second window), and can be scripted to fail,
answer slowly, send a gateway error page, drop the connection or go down altogether (outage). It runs its own
event loop in a daemon thread, so synchronous and asynchronous callers can use it alike.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import io
import json
import re
import secrets
import socket
import struct
import threading
import time
import uuid
import wave
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from aiohttp import web

from bot.testing.speech import synthesize

SERVICE = "trtc"
VERSION = "2019-07-22"
ALGORITHM = "TC3-HMAC-SHA256"
ACTIONS = frozenset({"VoiceClone", "TextToSpeech"})
REGIONS = frozenset(
    {
        "ap-singapore",
        "ap-guangzhou",
        "ap-shanghai",
        "ap-beijing",
        "ap-chengdu",
        "ap-chongqing",
        "ap-nanjing",
        "ap-hongkong",
        "ap-mumbai",
        "ap-seoul",
        "ap-tokyo",
        "ap-bangkok",
        "na-siliconvalley",
        "na-ashburn",
        "eu-frankfurt",
    }
)
OUTAGE_MODES = ("refuse", "html")
MODELS = frozenset({"flow_01_turbo", "flow_01_ex", "flow_02_turbo"})
BODY_KEYS = frozenset(
    {"SdkAppId", "VoiceName", "PromptAudio", "APIKey", "PromptText", "Model", "Language", "ExtraParams"}
)
REQUIRED_KEYS = ("SdkAppId", "VoiceName", "PromptAudio")
TTS_KEYS = frozenset({"SdkAppId", "Text", "Voice", "AudioFormat", "APIKey", "Model", "Language"})
TTS_MAX_TEXT = 255  # the international TextToSpeech documentation: 1-255 characters
TTS_FORMATS = ("pcm", "wav", "mp3")
TTS_SAMPLE_RATES = (16000, 24000)
VOICE_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,36}")
CLOCK_SKEW = 300  # seconds; Tencent rejects timestamps further off than five minutes
SAMPLE_RATE = 16000
MIN_SECONDS = 10.0
MAX_SECONDS = 180.0
# Distinct TextToSpeech answers kept (see TrtcStandIn._speech).
SPEECH_CACHE = 64
# Tencent does not publish a PromptText cap; this matches the bot's own (bot.tencent.voiceclone.MAX_PROMPT_TEXT).
MAX_PROMPT_TEXT = 1000
_AUTH_RE = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/]+)"
    r"/(?P<term>[^,]+),"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)

# Wording of Tencent's own answers (common error code documentation), used when a script gives none.
MESSAGES = {
    "AuthFailure.SignatureFailure": (
        "The provided credentials could not be validated. Please check your signature is correct."
    ),
    "AuthFailure.SignatureExpire": (
        "Signature expired. Timestamp and server time cannot differ by more than five minutes. "
        "Please ensure your current local time matches the standard time."
    ),
    "AuthFailure.SecretIdNotFound": "The SecretId is not found, please ensure that your SecretId is correct.",
    "AuthFailure.InvalidSecretId": "Invalid key (not a TencentCloud API key type).",
    "AuthFailure.InvalidAuthorization": "The Authorization header does not meet the TencentCloud standard.",
    "AuthFailure.UnauthorizedOperation": "The request does not have CAM authorization.",
    "RequestLimitExceeded": "Your current request count exceeds the frequency limit. Please try again later.",
    "InternalError": "An internal error has occurred. Retry your request, but if the problem persists, "
    "contact us with details by filing a ticket.",
    "ResourceUnavailable": "The resource is unavailable.",
    "LimitExceeded.VoiceCloneMaxNumLimit": "The number of cloned voices has reached the maximum.",
    "UnsupportedOperation.NotAllowed": "This operation is not allowed. Please contact technical support.",
    "UnsupportedOperation.VoiceCloneError": "Voice clone failed.",
    "UnsupportedOperation.InternalError": "Unsupported operation.",
    "MissingParameter.APIKey": "Invalid APIKey.",
}


@dataclass(frozen=True)
class TrtcRequest:
    """What the stand-in saw of one request, and how it answered."""

    time: float  # time.monotonic() when the request arrived
    action: str | None
    secret_id: str | None
    sdk_app_id: Any
    voice_name: str | None
    audio_seconds: float | None
    sample_rate: int | None
    channels: int | None
    prompt_text: str | None
    model: str | None
    language: str | None
    outcome: str  # "ok", an error code, "HTTP 502", "dropped" or "reset" (an outage)
    request_id: str | None
    # TextToSpeech only: what was asked for.
    text: str | None = None
    voice: dict[str, Any] | None = None
    audio_format: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Script:
    kind: str  # "fail", "http" or "drop"
    code: str = ""
    message: str | None = None
    status: int = 502
    body: str = ""
    action: str | None = None  # only requests of this action take the script (None: any)


@dataclass
class _Audio:
    seconds: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    sample_width: int | None = None
    problem: tuple[str, str] | None = None  # (code, message) when the audio is unusable


class _Refusal(Exception):
    """An error answer in Tencent's envelope."""

    def __init__(self, code: str, message: str | None = None):
        super().__init__(code)
        self.code = code
        self.message = message or MESSAGES.get(code, code)


class TrtcStandIn:
    """A TRTC API server on 127.0.0.1 (ephemeral port) in its own thread; `.url` is where to send requests.

    `max_rps`: at most this many requests of each action (X-TC-Action) in any one-second sliding window, the
    excess answered `RequestLimitExceeded`; as Tencent Cloud counts API frequency limits, VoiceClone and
    TextToSpeech each have a window of their own (so 20 of each in one second are all accepted). None: no limit.
    """

    def __init__(
        self,
        secret_id: str,
        secret_key: str,
        sdk_app_id: int | None = None,
        max_rps: int | None = None,
    ):
        self.secret_id = secret_id
        self._secret_key = secret_key
        self.sdk_app_id = sdk_app_id
        self.max_rps = max_rps
        self.url = ""
        self._cond = threading.Condition()
        self._requests: list[TrtcRequest] = []
        # Per action (None: a request without X-TC-Action): refusals, and the arrivals in the current window.
        self._refusals: Counter[str | None] = Counter()
        self._windows: dict[str | None, deque[float]] = {}
        self._answers: deque[_Script] = deque()
        self._delays: deque[tuple[float, str | None]] = deque()  # (seconds, only this action or any)
        self._outage: tuple[str, int] | None = None  # (mode, HTTP status for "html")
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        # Voices this stand-in cloned (VoiceId -> Model): TextToSpeech knows only these.
        self.voices: dict[str, str | None] = {}
        # Models whose voices TextToSpeech refuses (the international doc names only flow_01_turbo for TTS).
        self.tts_refused_models: set[str] = set()
        # TextToSpeech audio by (text, format, rate, speed, pitch), made once on the stand-in's loop: the same
        # request always gets the same audio, and its ffmpeg runs once, not once a request. The stand-in shares the
        # machine with the bot in tests and the bench, and Tencent speaks on its own servers: a preview burst must
        # not take the CPU the bot's conversions need.
        self._speech: dict[tuple[str, str, int, float, int], asyncio.Future[tuple[bytes, int]]] = {}

    @property
    def secret_key(self) -> str:
        """The key requests must be signed with (a stand-in's own, never a real one)."""
        return self._secret_key

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> TrtcStandIn:
        """Start serving; returns once the port is open."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="trtc-standin", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and wake any request that is being answered slowly."""
        if self._thread is None or self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> TrtcStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # handed to start(), which re-raises it in the caller's thread
            failure.append(exc)
            ready.set()
            loop.close()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            # A connection reset by an outage can leave its handler task waiting: cancel it, don't destroy it.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._outage_gate])
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def _shutdown(self) -> None:
        assert self._stopping is not None and self._runner is not None
        self._stopping.set()
        await self._runner.cleanup()

    # -- scripting (thread-safe) -----------------------------------------------------------------

    def fail_next(self, code: str, message: str | None = None, times: int = 1, action: str | None = None) -> None:
        """Answer the next `times` requests (of `action` only, when given) with this Tencent error code."""
        self._script(_Script("fail", code=code, message=message, action=action), times)

    def http_error_next(
        self, status: int = 502, times: int = 1, body: str = "<html>502 Bad Gateway</html>"
    ) -> None:
        """Answer the next `times` requests with a bare HTTP error page, as a gateway would."""
        self._script(_Script("http", status=status, body=body), times)

    def drop_next(self, times: int = 1) -> None:
        """Close the connection of the next `times` requests without answering."""
        self._script(_Script("drop"), times)

    def delay_next(self, seconds: float, times: int = 1, action: str | None = None) -> None:
        """Hold the answer to the next `times` requests (of `action` only, when given) for `seconds` (other
        requests are not held up)."""
        with self._cond:
            self._delays.extend([(seconds, action)] * times)

    def _script(self, script: _Script, times: int) -> None:
        with self._cond:
            self._answers.extend([script] * times)

    def outage(self, mode: str = "refuse", status: int = 502) -> None:
        """Take the API down until restore().

        "refuse": every request's connection is reset (TCP RST) before any HTTP answer, and open keep-alive
        connections are reset at once. "html": every request answers `status` (502 or 503) with an HTML page,
        as a load balancer without backends does. Either way each request is still recorded (outcome "reset"
        or "HTTP <status>", no RequestId) and still passes through its action's max_rps window, so `refusals` also
        counts requests over the limit sent during an outage; scripted answers and delays wait for restore().
        """
        if mode not in OUTAGE_MODES:
            raise ValueError(f"mode must be one of {OUTAGE_MODES}, not {mode!r}")
        with self._cond:
            self._outage = (mode, status)
        if mode == "refuse" and self._loop is not None and threading.current_thread() is not self._thread:
            asyncio.run_coroutine_threadsafe(self._reset_connections(), self._loop).result(timeout=10)

    def restore(self) -> None:
        """End an outage: the same port answers normally again (a no-op when there is none)."""
        with self._cond:
            self._outage = None

    @property
    def in_outage(self) -> str | None:
        """The current outage mode, or None."""
        with self._cond:
            return self._outage[0] if self._outage else None

    @web.middleware
    async def _outage_gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        with self._cond:
            outage = self._outage
        if outage is None:
            return await handler(request)
        arrived = time.monotonic()
        self._rate_limited(arrived, request.headers.get("X-TC-Action"))
        mode, status = outage
        self._record(
            TrtcRequest(
                time=arrived,
                action=request.headers.get("X-TC-Action"),
                secret_id=_secret_id(request.headers.get("Authorization", "")),
                sdk_app_id=None,
                voice_name=None,
                audio_seconds=None,
                sample_rate=None,
                channels=None,
                prompt_text=None,
                model=None,
                language=None,
                outcome="reset" if mode == "refuse" else f"HTTP {status}",
                request_id=None,
            )
        )
        if mode == "refuse":
            _reset_connection(request.transport)
            return web.Response(status=status)  # never sent: the connection is gone
        return web.Response(status=status, text=_gateway_page(status), content_type="text/html")

    async def _reset_connections(self) -> None:
        if self._runner is not None and self._runner.server is not None:
            for connection in list(self._runner.server.connections):
                _reset_connection(connection.transport)

    # -- records ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[TrtcRequest]:
        """Every request seen since start or reset(), oldest first (a copy)."""
        with self._cond:
            return list(self._requests)

    def requests_of(self, action: str) -> list[TrtcRequest]:
        """The requests of one action (X-TC-Action), oldest first."""
        with self._cond:
            return [r for r in self._requests if r.action == action]

    @property
    def refusals(self) -> int:
        """How many requests were refused by the max_rps limit, every action together."""
        with self._cond:
            return sum(self._refusals.values())

    @property
    def refusals_by_action(self) -> dict[str | None, int]:
        """How many requests of each action were refused by the max_rps limit (actions with none left out)."""
        with self._cond:
            return {action: count for action, count in self._refusals.items() if count}

    def max_requests_per_second(self, action: str | None = None) -> int:
        """The most requests that arrived within any 1-second sliding window (every request seen since start or
        reset(): answered, refused, scripted or turned away by an outage); of `action` only when given (the
        window max_rps limits), else of every action together."""
        with self._cond:
            times = sorted(r.time for r in self._requests if action is None or r.action == action)
        most, first = 0, 0
        for last, now in enumerate(times):
            while times[first] <= now - 1.0:
                first += 1
            most = max(most, last - first + 1)
        return most

    def wait_for_requests(self, n: int, timeout: float, action: str | None = None) -> bool:
        """Block until at least `n` requests (of `action` only, when given) were seen; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: sum(action is None or r.action == action for r in self._requests) >= n, timeout=timeout
            )

    def reset(self) -> None:
        """Forget requests, refusals, the rate window and any pending scripts."""
        with self._cond:
            self._requests.clear()
            self._refusals.clear()
            self._windows.clear()
            self._answers.clear()
            self._delays.clear()

    # -- the API ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        request_id = str(uuid.uuid4())
        action = request.headers.get("X-TC-Action")
        limited = self._rate_limited(arrived, action)
        script, delay = (None, 0.0) if limited else self._next_script(action)
        body = await request.read()
        parsed = _json_object(body)
        params = parsed if parsed is not None else {}
        audio = _read_audio(params.get("PromptAudio"))

        answer: dict[str, Any]
        if limited:
            outcome, answer = "RequestLimitExceeded", _error(request_id, _Refusal("RequestLimitExceeded"))
        elif script is not None and script.kind == "fail":
            refusal = _Refusal(script.code, script.message)
            outcome, answer = script.code, _error(request_id, refusal)
        elif script is not None:
            outcome, answer = ("dropped" if script.kind == "drop" else f"HTTP {script.status}"), {}
        else:
            try:
                if action == "TextToSpeech":
                    answer = await self._text_to_speech(request, body, parsed)
                    answer["RequestId"] = request_id
                else:
                    voice_id = self._voice_clone(request, body, parsed, audio)
                    answer = {"VoiceId": voice_id, "RequestId": request_id}
                outcome = "ok"
            except _Refusal as refusal:
                outcome, answer = refusal.code, _error(request_id, refusal)

        self._record(
            TrtcRequest(
                time=arrived,
                action=action,
                secret_id=_secret_id(request.headers.get("Authorization", "")),
                sdk_app_id=params.get("SdkAppId"),
                voice_name=_text(params.get("VoiceName")),
                audio_seconds=audio.seconds,
                sample_rate=audio.sample_rate,
                channels=audio.channels,
                prompt_text=_text(params.get("PromptText")),
                model=_text(params.get("Model")),
                language=_text(params.get("Language")),
                outcome=outcome,
                request_id=None if script is not None and script.kind != "fail" else request_id,
                text=_text(params.get("Text")) if action == "TextToSpeech" else None,
                voice=params.get("Voice") if isinstance(params.get("Voice"), dict) else None,
                audio_format=params.get("AudioFormat") if isinstance(params.get("AudioFormat"), dict) else None,
            )
        )
        if delay > 0:
            assert self._stopping is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        if script is not None and script.kind == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        if script is not None and script.kind == "http":
            return web.Response(status=script.status, text=script.body, content_type="text/html")
        # Exactly "application/json": the SDK only looks for errors under that content type.
        return web.Response(body=json.dumps({"Response": answer}).encode(), content_type="application/json")

    def _rate_limited(self, now: float, action: str | None) -> bool:
        """Whether this request of `action` is over max_rps in that action's own one-second window."""
        if self.max_rps is None:
            return False
        with self._cond:
            window = self._windows.setdefault(action, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self.max_rps:
                self._refusals[action] += 1
                return True
            window.append(now)
            return False

    def _next_script(self, action: str | None) -> tuple[_Script | None, float]:
        if action not in ACTIONS:
            return None, 0.0
        with self._cond:
            script = next((s for s in self._answers if s.action in (None, action)), None)
            if script is not None:
                self._answers.remove(script)
            held = next((d for d in self._delays if d[1] in (None, action)), None)
            if held is not None:
                self._delays.remove(held)
        return script, held[0] if held is not None else 0.0

    def _record(self, record: TrtcRequest) -> None:
        with self._cond:
            self._requests.append(record)
            self._cond.notify_all()

    def _voice_clone(
        self, request: web.Request, body: bytes, params: dict[str, Any] | None, audio: _Audio
    ) -> str:
        self._authenticate(request, body)
        if request.content_type != "application/json":
            raise _Refusal("InvalidParameter", f"Content-Type `{request.content_type}` is not supported.")
        if params is None:
            raise _Refusal("InvalidParameter", "The request body is not a valid JSON object.")
        for key in params:
            if key not in BODY_KEYS:
                raise _Refusal("UnknownParameter", f"The parameter `{key}` is not recognized.")
        for key in REQUIRED_KEYS:
            if params.get(key) in (None, ""):
                raise _missing(key)

        app_id = params["SdkAppId"]
        if isinstance(app_id, bool) or not isinstance(app_id, int):
            raise _bad_type("SdkAppId")
        if self.sdk_app_id is not None and app_id != self.sdk_app_id:
            raise _Refusal("FailedOperation.SdkAppIdNotExist", f"SdkAppId {app_id} does not exist.")

        name = params["VoiceName"]
        if not isinstance(name, str) or not VOICE_NAME_RE.fullmatch(name):
            raise _Refusal(
                "InvalidParameter.VoiceName",
                "Invalid VoiceName: only letters, digits and underscores are allowed, at most 36 characters.",
            )
        if audio.problem is not None:
            raise _Refusal(*audio.problem)

        model = params.get("Model")
        if model is not None and model not in MODELS:
            raise _Refusal("InvalidParameter", f"Invalid Model: must be one of {', '.join(sorted(MODELS))}.")
        language = params.get("Language")
        if language is not None and not isinstance(language, str):
            raise _bad_type("Language")
        text = params.get("PromptText")
        if text is not None and not isinstance(text, str):
            raise _bad_type("PromptText")
        if text is not None and len(text) > MAX_PROMPT_TEXT:
            limit = f"PromptText is too long: at most {MAX_PROMPT_TEXT} characters."
            raise _Refusal("InvalidParameter.TextLength", limit)
        voice_id = f"{name}_{secrets.token_hex(4)}"
        with self._cond:
            self.voices[voice_id] = model
        return voice_id

    async def _text_to_speech(self, request: web.Request, body: bytes, params: dict[str, Any] | None) -> dict[str, Any]:
        """TextToSpeech as documented: Text 1-255, Voice {VoiceId, Speed 0.5-2, Volume (0,10], Pitch -12..12},
        AudioFormat {Format pcm|wav|mp3, SampleRate 16000|24000}; answers real audio of that format, base64."""
        self._authenticate(request, body)
        if params is None:
            raise _Refusal("InvalidParameter", "The request body is not a valid JSON object.")
        for key in params:
            if key not in TTS_KEYS:
                raise _Refusal("UnknownParameter", f"The parameter `{key}` is not recognized.")
        for key in ("SdkAppId", "Text", "Voice"):
            if params.get(key) in (None, ""):
                raise _missing(key)
        if self.sdk_app_id is not None and params["SdkAppId"] != self.sdk_app_id:
            raise _Refusal("FailedOperation.SdkAppIdNotExist", f"SdkAppId {params['SdkAppId']} does not exist.")
        text = params["Text"]
        if not isinstance(text, str) or not 1 <= len(text) <= TTS_MAX_TEXT:
            raise _Refusal("InvalidParameter.TextLength", f"Text must be 1 to {TTS_MAX_TEXT} characters.")
        voice = params["Voice"]
        if not isinstance(voice, dict):
            raise _bad_type("Voice")
        speed, volume, pitch = voice.get("Speed", 1.0), voice.get("Volume", 1.0), voice.get("Pitch", 0)
        if not _number(speed) or not 0.5 <= speed <= 2.0:
            raise _Refusal("InvalidParameter.Speed", "Speed must be between 0.5 and 2.0.")
        if not _number(volume) or not 0 < volume <= 10:
            raise _Refusal("InvalidParameter.Volume", "Volume must be above 0 and at most 10.")
        if not _number(pitch) or pitch != int(pitch) or not -12 <= pitch <= 12:
            raise _Refusal("InvalidParameter.Pitch", "Pitch must be an integer from -12 to 12.")
        audio_format = params.get("AudioFormat") or {}
        fmt = audio_format.get("Format", "pcm")
        rate = audio_format.get("SampleRate", 24000)
        if fmt not in TTS_FORMATS:
            raise _Refusal("InvalidParameter", f"Invalid Format: must be one of {', '.join(TTS_FORMATS)}.")
        if rate not in TTS_SAMPLE_RATES:
            raise _Refusal("InvalidParameter.SampleRate", "SampleRate must be 16000 or 24000.")
        model = params.get("Model")
        if model is not None and model not in MODELS:
            raise _Refusal("InvalidParameter", f"Invalid Model: must be one of {', '.join(sorted(MODELS))}.")
        with self._cond:
            known = voice.get("VoiceId") in self.voices
            cloned_with = self.voices.get(voice.get("VoiceId"))
        if not known:
            raise _Refusal("InvalidParameter.VoiceId", "The VoiceId does not exist.")
        if cloned_with in self.tts_refused_models:
            raise _Refusal("InvalidParameter.VoiceId", f"The voice was cloned with {cloned_with}, which "
                           "TextToSpeech does not support.")
        audio, millis = await self._speak(text, fmt, rate, float(speed), int(pitch))
        return {"Audio": base64.b64encode(audio).decode("ascii"), "TotalDurationMs": millis, "Alignments": []}

    async def _speak(self, text: str, fmt: str, rate: int, speed: float, pitch: int) -> tuple[bytes, int]:
        """synthesize(), each distinct request once (requests asking for it meanwhile wait for that run)."""
        key = (text, fmt, rate, speed, pitch)
        made = self._speech.get(key)
        if made is None:
            if len(self._speech) >= SPEECH_CACHE:
                del self._speech[next(iter(self._speech))]  # the oldest
            made = self._speech[key] = asyncio.ensure_future(
                asyncio.to_thread(synthesize, text, fmt, rate, speed=speed, pitch=pitch)
            )
        try:
            # Shielded: a request given up on does not cancel the run others wait for.
            return await asyncio.shield(made)
        except Exception:
            if self._speech.get(key) is made:
                del self._speech[key]  # the next request tries again
            raise

    def _authenticate(self, request: web.Request, body: bytes) -> None:
        """Check the TC3-HMAC-SHA256 signature exactly as Tencent computes it."""
        headers = request.headers
        action = headers.get("X-TC-Action")
        version = headers.get("X-TC-Version")
        region = headers.get("X-TC-Region")
        stamp = headers.get("X-TC-Timestamp")
        required = {"Action": action, "Version": version, "Region": region, "Timestamp": stamp}
        for key, value in required.items():
            if not value:
                raise _missing(key)
        if action not in ACTIONS:
            raise _Refusal("InvalidAction", f"The requested action `{action}` does not exist.")
        if version != VERSION:
            raise _Refusal("NoSuchVersion", f"Version `{version}` of service `trtc` is not found.")
        if region not in REGIONS:
            raise _Refusal("UnsupportedRegion", f"The region `{region}` is not supported by this service.")
        try:
            timestamp = int(stamp)  # type: ignore[arg-type]
        except ValueError:
            raise _bad_type("Timestamp") from None
        if abs(time.time() - timestamp) > CLOCK_SKEW:
            raise _Refusal("AuthFailure.SignatureExpire")

        match = _AUTH_RE.fullmatch(headers.get("Authorization", "").strip())
        if match is None:
            raise _Refusal("AuthFailure.InvalidAuthorization")
        if match["id"] != self.secret_id:
            raise _Refusal("AuthFailure.SecretIdNotFound")
        date = datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")
        signed = match["signed"].split(";")
        if (
            match["date"] != date
            or match["service"] != SERVICE
            or match["term"] != "tc3_request"
            or not {"content-type", "host"} <= set(signed)
        ):
            raise _Refusal("AuthFailure.SignatureFailure")

        payload = body
        if headers.get("X-TC-Content-SHA256") == "UNSIGNED-PAYLOAD":
            payload = b"UNSIGNED-PAYLOAD"
        canonical_headers = "".join(f"{name}:{headers.get(name, '').strip().lower()}\n" for name in signed)
        canonical_request = "\n".join(
            [
                request.method,
                request.path,
                request.query_string,
                canonical_headers,
                match["signed"],
                hashlib.sha256(payload).hexdigest(),
            ]
        )
        scope = f"{date}/{SERVICE}/tc3_request"
        digest = hashlib.sha256(canonical_request.encode()).hexdigest()
        string_to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{digest}"
        expected = tc3_signature(self._secret_key, date, SERVICE, string_to_sign)
        if not hmac.compare_digest(expected, match["signature"]):
            raise _Refusal("AuthFailure.SignatureFailure")


def _reset_connection(transport: asyncio.BaseTransport | None) -> None:
    """Close a connection with a TCP RST (SO_LINGER 0), not a FIN: the client sees "connection reset"."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


def _gateway_page(status: int) -> str:
    """A load balancer's error page (nginx's wording: what a gateway without backends typically sends)."""
    reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}.get(status, "Error")
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


def tc3_signature(secret_key: str, date: str, service: str, string_to_sign: str) -> str:
    """The TC3-HMAC-SHA256 signature of `string_to_sign` (Tencent's key derivation)."""

    def digest(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = digest(digest(digest(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _missing(key: str) -> _Refusal:
    return _Refusal("MissingParameter", f"The request is missing a required parameter `{key}`.")


def _bad_type(key: str) -> _Refusal:
    return _Refusal("InvalidParameter", f"The value type of parameter `{key}` is not valid.")


def _error(request_id: str, refusal: _Refusal) -> dict[str, Any]:
    return {"Error": {"Code": refusal.code, "Message": refusal.message}, "RequestId": request_id}


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _secret_id(authorization: str) -> str | None:
    match = _AUTH_RE.fullmatch(authorization.strip())
    return match["id"] if match else None


def _read_audio(prompt: Any) -> _Audio:
    """Decode PromptAudio and judge it by VoiceClone's rules (16 kHz mono 16-bit WAV, 10-180 s)."""
    if prompt is None:
        return _Audio()
    bad = "InvalidParameter.AudioPrompt"
    if not isinstance(prompt, str):
        return _Audio(problem=(bad, "Invalid PromptAudio: it must be a base64 string."))
    try:
        data = base64.b64decode(prompt, validate=True)
    except (binascii.Error, ValueError):
        return _Audio(problem=(bad, "Invalid PromptAudio: it is not valid base64."))
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return _Audio(problem=(bad, "Invalid PromptAudio: the audio must be a WAV file."))
    try:
        with wave.open(io.BytesIO(data)) as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            # Count the samples actually present: a WAV written to a pipe may carry a placeholder size.
            frames = len(wav.readframes(wav.getnframes())) // max(1, channels * width)
    except (wave.Error, EOFError):
        return _Audio(problem=(bad, "Invalid PromptAudio: the WAV data could not be decoded."))
    seconds = frames / rate if rate else 0.0
    audio = _Audio(seconds=seconds, sample_rate=rate, channels=channels, sample_width=width)
    if rate != SAMPLE_RATE:
        audio.problem = (
            "InvalidParameter.SampleRate",
            f"Invalid sample rate {rate} Hz: the prompt audio must be {SAMPLE_RATE} Hz.",
        )
    elif channels != 1 or width != 2:
        audio.problem = (bad, "Invalid PromptAudio: the audio must be mono 16-bit PCM.")
    elif not MIN_SECONDS <= seconds <= MAX_SECONDS:
        audio.problem = (
            bad,
            f"Invalid PromptAudio: the audio is {seconds:.1f} s long; it must be "
            f"{MIN_SECONDS:.0f} to {MAX_SECONDS:.0f} seconds.",
        )
    return audio
