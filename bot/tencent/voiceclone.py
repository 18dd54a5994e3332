"""The Tencent Cloud TRTC VoiceClone client: validation, rate limiting, retries and error mapping."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from tencentcloud.common.abstract_client_async import LOGGER_NAME as SDK_LOGGER_NAME
from tencentcloud.common.credential import Credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.sign import Sign
from tencentcloud.trtc.v20190722.trtc_client_async import TrtcClient

from bot.errors import ApiError, ConfigError, InvalidVoiceNameError, PromptTextError
from bot.retry import jittered_delay, retrying
from bot.settings import Settings
from bot.tencent.limiter import PerActionLimiter, RateLimiter, limiter_for

try:  # SIMD base64: a 180 s prompt's 5.8 MB in ~0.5 ms, against ~12 ms for the standard library's
    from pybase64 import b64encode as _b64encode
except ImportError:  # pragma: no cover - the standard library's gives the same bytes
    from base64 import b64encode as _b64encode

log = logging.getLogger(__name__)

T = TypeVar("T")

VOICE_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,36}")
MAX_VOICE_NAME = 36
# Tencent documents no PromptText cap. 1000 characters is more than a minute of brisk English speech or three
# minutes of Chinese, while good prompts are 10-30 s; a longer transcript has almost always been pasted by
# mistake, and a mismatched transcript hurts the clone more than no transcript at all.
MAX_PROMPT_TEXT = 1000
NETWORK_ERROR = "NetworkError"
UNEXPECTED_RESPONSE = "UnexpectedResponse"
ACTION = "VoiceClone"
SERVICE = "trtc"
# The API version of the SDK module imported above (tencentcloud.trtc.v20190722), which keeps it only in a private
# class attribute (TrtcClient._apiVersion).
API_VERSION = "2019-07-22"
JSON_CONTENT = "application/json"


class _QuietBelowInfo(logging.Filter):
    """Drops DEBUG records: at DEBUG the SDK logs whole requests, the audio and signed headers included."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


_QUIET = _QuietBelowInfo()


def silence_sdk_debug_logging() -> None:
    """Keep the SDK's logger at INFO or above whatever the root logger's level is."""
    sdk_logger = logging.getLogger(SDK_LOGGER_NAME)
    if sdk_logger.level < logging.INFO:  # NOTSET (0) would inherit DEBUG from the root
        sdk_logger.setLevel(logging.INFO)
    if _QUIET not in sdk_logger.filters:
        sdk_logger.addFilter(_QUIET)


silence_sdk_debug_logging()


# Latin letters that NFKD does not decompose into an ASCII letter plus accents.
_LATIN_LETTERS = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "Th",
        "ı": "i",
    }
)


def validate_voice_name(name: str) -> str:
    """Return `name` if TRTC accepts it as a VoiceName (letters, digits, underscore, 1-36), else raise."""
    if not isinstance(name, str) or not VOICE_NAME_RE.fullmatch(name):
        raise InvalidVoiceNameError(str(name))
    return name


def default_voice_name(filename: str) -> str:
    """A valid VoiceName derived from a file name: "Voice Memo 12.m4a" -> "Voice_Memo_12"."""
    stem = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", stem)
    # NFKD splits "é" into "e" + accent, so it keeps its "e"; scripts with no ASCII form drop out.
    latin = unicodedata.normalize("NFKD", stem.translate(_LATIN_LETTERS))
    ascii_only = latin.encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^A-Za-z0-9]+", "_", ascii_only).strip("_")
    name = name[:MAX_VOICE_NAME].rstrip("_")
    return name or "voice"


def sdk_client(settings: Settings) -> TrtcClient:
    """The official async TRTC client aimed at TRTC_ENDPOINT; raises ConfigError naming missing credentials.

    Shared by VoiceClone and TextToSpeech: one place for the endpoint, the profile and the status hook.
    """
    missing = {
        key: "missing"
        for key, value in (
            ("TENCENTCLOUD_SECRET_ID", settings.tencent_secret_id),
            ("TENCENTCLOUD_SECRET_KEY", settings.tencent_secret_key),
            ("TRTC_SDK_APP_ID", settings.trtc_sdk_app_id),
        )
        if not value
    }
    if missing:
        raise ConfigError(missing)
    assert settings.tencent_secret_id is not None and settings.tencent_secret_key is not None
    silence_sdk_debug_logging()
    parts = urlsplit(settings.trtc_url)
    http_profile = HttpProfile(protocol=parts.scheme, endpoint=parts.netloc, reqTimeout=settings.trtc_timeout)
    # The region breaker would fail over to a backup endpoint in another region; English error messages.
    profile = ClientProfile(httpProfile=http_profile, language="en-US", disable_region_breaker=True)
    credential = Credential(settings.tencent_secret_id.get(), settings.tencent_secret_key.get())
    sdk = TrtcClient(credential, settings.trtc_region, profile)
    # The SDK would turn any non-200 answer into ServerNetworkError carrying the raw page as its message.
    sdk.http_client.event_hooks["response"].append(_check_status)
    return sdk


async def with_retries(
    action: str,
    limiter: RateLimiter | PerActionLimiter,
    call: Callable[[], Awaitable[T]],
    *,
    max_attempts: int = 4,
    backoff_base: float = 0.5,
    backoff_max: float = 8.0,
) -> T:
    """Run `call` under `action`'s limit (its own window when `limiter` is a PerActionLimiter), retrying transient
    ApiErrors with the bot's backoff (bot.retry).

    Not the SDK's StandardRetryer, which retries inside the SDK where our limiter cannot pace each attempt and does
    not retry InternalError.
    """

    window = limiter_for(limiter, action)

    async def attempt() -> T:
        # Each attempt holds its place in the limiter while it runs (see SlidingWindowLimiter).
        async with window:
            return await call()

    def log_retry(retry: int, error: Exception, seconds: float) -> None:
        assert isinstance(error, ApiError)
        log.warning(
            "%s attempt %d/%d failed with %s (RequestId %s); retrying in %.2f s",
            action, retry, max_attempts, error.code, error.request_id, seconds,
        )

    return await retrying(
        attempt,
        attempts=max_attempts,
        delay=lambda retry: jittered_delay(retry, base=backoff_base, cap=backoff_max),
        retry_on=lambda error: isinstance(error, ApiError) and error.transient,
        on_retry=log_retry,
    )


class _Body:
    """A VoiceClone request body that is never held whole: JSON `prefix`, the WAV's base64 made slice by slice as it
    is hashed and again as it is sent, JSON `suffix`. The one body-sized buffer is the WAV the caller holds anyway."""

    SLICE = 3 * (1 << 16)  # WAV bytes encoded at a time (256 KiB of base64): a multiple of 3, so the pieces join up

    def __init__(self, prefix: bytes, wav: bytes | bytearray, suffix: bytes):
        self.prefix, self.wav, self.suffix = prefix, wav, suffix
        self.size = len(prefix) + 4 * math.ceil(len(wav) / 3) + len(suffix)
        digest = hashlib.sha256()
        for piece in self.pieces():
            digest.update(piece)
        self.digest = digest.hexdigest()

    def pieces(self) -> Iterator[bytes]:
        yield self.prefix
        view = memoryview(self.wav)
        for start in range(0, len(view), self.SLICE):
            yield _b64encode(view[start : start + self.SLICE])
        yield self.suffix

    async def chunks(self) -> AsyncIterator[bytes]:
        """pieces() for the HTTP client: it writes each and waits for the socket to drain before the next, as it
        never does for one body-sized write (the event loop would buffer whatever the socket did not take)."""
        for piece in self.pieces():
            yield piece


@dataclass(frozen=True)
class CloneOutcome:
    """What VoiceClone returned."""

    voice_id: str
    request_id: str | None


class VoiceCloneClient:
    """Clones voices through TRTC VoiceClone, paced by a sliding-window limit of its own, retrying transient errors.

    `limiter`: a PerActionLimiter (VoiceClone gets its own window; the TextToSpeechClient given the same one gets
    another), or a single limiter every action shares; default: TRTC_MAX_RPS per action, in this process.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        limiter: RateLimiter | PerActionLimiter | None = None,
    ):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        # The SDK keeps the HTTP client (timeouts, keep-alive), the credential, the API version and the TC3 key
        # derivation; VoiceClone's request body is built and signed here (see _body and _headers).
        self._sdk = sdk_client(settings)
        self.settings = settings
        self.sdk_app_id = settings.trtc_sdk_app_id
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # TRTC_MAX_RPS per action: Tencent counts VoiceClone and TextToSpeech each in its own window.
        self.limiter = limiter or PerActionLimiter.in_process(settings.trtc_max_rps, 1.0)
        self.timeout = settings.trtc_timeout
        parts = urlsplit(settings.trtc_url)
        self._host = parts.netloc
        self._url = f"{parts.scheme}://{parts.netloc}/"

    async def clone(
        self,
        *,
        name: str,
        wav: bytes,
        text: str | None = None,
        model: str | None = None,
        language: str | None = None,
    ) -> CloneOutcome:
        """Clone a voice from a 16 kHz mono WAV; raises InputError before any call, ApiError on failure."""
        validate_voice_name(name)
        text = text.strip() if text else None
        if text and len(text) > MAX_PROMPT_TEXT:
            raise PromptTextError(len(text), MAX_PROMPT_TEXT)

        fields = {
            "SdkAppId": self.sdk_app_id, "VoiceName": name, "PromptText": text or None,
            "Model": model or self.settings.voiceclone_model,
            "Language": language or self.settings.voiceclone_language,
        }
        built: list[_Body] = []

        async def attempt() -> CloneOutcome:
            # Hashed once a rate-limit slot is ours (this runs inside it), not while waiting for one. Kept for retries
            # (it holds no copy of the audio: see _Body).
            if not built:
                built.append(self._parts(wav, **fields))
            return await self._attempt(built[0])

        return await with_retries(
            ACTION, self.limiter, attempt, max_attempts=self.max_attempts,
            backoff_base=self.backoff_base, backoff_max=self.backoff_max,
        )

    @classmethod
    def _body(cls, wav: bytes | bytearray, **fields: object) -> tuple[bytes, str]:
        """The whole JSON request body as sent (_Body's pieces joined), and its SHA-256 (hex)."""
        body = cls._parts(wav, **fields)
        return b"".join(body.pieces()), body.digest

    @staticmethod
    def _parts(wav: bytes | bytearray, **fields: object) -> _Body:
        """The JSON request body (as a _Body) and its SHA-256, with the audio's base64 written straight in.

        Hand-built rather than through the SDK, whose VoiceClone() makes a str of the base64, json.dumps()es the
        whole body (scanning megabytes of base64 for characters to escape) and encodes that to bytes again: a
        fifth of the share -> request time and three body-sized copies. The base64 alphabet (A-Z a-z 0-9 + / =)
        needs no escaping in JSON, so the audio goes in as it is encoded; every other field still goes through
        json.dumps. None fields are left out, as the SDK does. Nothing body-sized is made at all (see _Body): with
        SIMD base64 encoding the WAV twice (for the digest, then to send) costs less than a copy of it would.
        """
        head = json.dumps({key: value for key, value in fields.items() if value is not None})
        prefix = (head[:-1] + (', ' if len(head) > 2 else '') + '"PromptAudio": "').encode()
        return _Body(prefix, wav, b'"}')

    def _headers(self, digest: str) -> dict[str, str]:
        """The TC3-HMAC-SHA256 signed headers for a POST of a body whose SHA-256 is `digest`.

        The same header set as the SDK's own _build_req_with_tc3_signature; signed: content-type and host.
        """
        timestamp = int(time.time())
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        secret_id, secret_key, token = self._sdk.credential.get_credential_info()
        canonical = f"POST\n/\n\ncontent-type:{JSON_CONTENT}\nhost:{self._host}\n\ncontent-type;host\n{digest}"
        scope = f"{date}/{SERVICE}/tc3_request"
        string_to_sign = (
            f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = Sign.sign_tc3(secret_key, date, SERVICE, string_to_sign)
        headers = {
            "Content-Type": JSON_CONTENT,
            "Host": self._host,
            "X-TC-Action": ACTION,
            "X-TC-RequestClient": self._sdk.request_client,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": API_VERSION,
            "X-TC-Region": self._sdk.region,
            "X-TC-TraceId": str(uuid.uuid4()),
            "Authorization": (
                f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
                f"SignedHeaders=content-type;host, Signature={signature}"
            ),
        }
        if token:
            headers["X-TC-Token"] = token
        if self._sdk.profile.language:
            headers["X-TC-Language"] = self._sdk.profile.language
        return headers

    async def _attempt(self, body: _Body) -> CloneOutcome:
        try:
            # Signed per attempt: the timestamp is part of the signature and a retry may come minutes later.
            headers = {**self._headers(body.digest), "Content-Length": str(body.size)}
            answer = await self._sdk.http_client.post(self._url, content=body.chunks(), headers=headers)
        except httpx.TimeoutException as exc:
            raise ApiError(
                NETWORK_ERROR,
                f"Tencent Cloud did not answer within {self.timeout:g} s ({type(exc).__name__})",
            ) from exc
        except httpx.TransportError as exc:
            raise ApiError(NETWORK_ERROR, f"could not reach Tencent Cloud ({type(exc).__name__})") from exc
        try:
            envelope = json.loads(answer.content)["Response"]
            error = envelope.get("Error")
            if error is not None:
                raise _from_sdk(
                    TencentCloudSDKException(error.get("Code"), error.get("Message"), envelope.get("RequestId"))
                )
            # VoiceCloneResponse's two fields, read as the SDK's own deserialisation reads them.
            voice_id, request_id = envelope.get("VoiceId"), envelope.get("RequestId")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not Tencent's JSON envelope
            raise ApiError(UNEXPECTED_RESPONSE, "Tencent Cloud's answer could not be read") from exc
        if not voice_id or not isinstance(voice_id, str):
            raise ApiError(UNEXPECTED_RESPONSE, "Tencent Cloud's answer has no VoiceId", request_id)
        return CloneOutcome(voice_id=voice_id, request_id=request_id)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._sdk.close()

    async def __aenter__(self) -> VoiceCloneClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _check_status(response: httpx.Response) -> None:
    """Raise a summarised ApiError for a non-200 answer (gateways send HTML pages; we never pass them on)."""
    status = response.status_code
    if status == 200:
        return
    if status == 429:
        code = "RequestLimitExceeded"
    elif status >= 500:
        code = "ServerNetworkError"  # the SDK's code for it, which the retry policy knows as transient
    else:
        code = UNEXPECTED_RESPONSE  # a 4xx from a proxy or a wrong endpoint: retrying will not help
    raise ApiError(code, f"HTTP {status} from Tencent Cloud")


def _from_sdk(exc: TencentCloudSDKException) -> ApiError:
    code = exc.get_code() or "InternalError"
    message = exc.get_message()
    if code == "ServerNetworkError" or not isinstance(message, str):
        message = "unexpected HTTP answer from Tencent Cloud"  # the SDK puts the raw page here
    return ApiError(code, message, exc.get_request_id())
