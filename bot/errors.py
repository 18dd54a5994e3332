"""The bot's exception tree, documented in one place.

    BotError                      anything the bot explains to a user (never shown raw: see bot.ui.texts)
    ├── ConfigError               settings missing, invalid or unknown; names every key at once
    ├── StartupError              the bot cannot start serving (token refused, Slack unreachable, port in use,
    │                             database not writable); its text is the one line the operator sees
    ├── QuotaError                a fair-use limit refused the request (bot.work.quotas); its text names the limit
    ├── InputError                the user's input cannot be used; no API call was made
    │   ├── InvalidVoiceNameError
    │   ├── PromptTextError       transcript too long
    │   ├── OptionError           an option in the message or command is not understood (model=..., lang=...)
    │   └── AudioError            the recording itself
    │       ├── NotAudioError         not a media file ffmpeg can open
    │       ├── NoAudioStreamError    a media file with no audio track (a silent video, an image)
    │       ├── DamagedAudioError     ffmpeg reported decode errors
    │       ├── NoVoiceError          silence, near-silence, no speech-like signal
    │       ├── TooShortError         under the minimum length after conversion
    │       └── TooLargeError         over the size cap (download or decode)
    ├── DownloadError             fetching a Slack file failed
    │   ├── FileAccessError           login page / redirect: token lacks files:read or cannot see the file
    │   └── UnsafeURLError            the URL is not on a host the bot token may be sent to
    └── ApiError                  Tencent Cloud answered with an error (code, message, request_id)

Every class carries what the friendly message needs; the text shown to users lives in bot.ui.texts.
"""

from __future__ import annotations

# Codes that are worth retrying: the request may well succeed a moment later.
TRANSIENT_API_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "InternalError",
        "ServerNetworkError",  # SDK: non-200 HTTP status
        "NetworkError",  # ours: timeouts, refused connections
        "ResourceUnavailable",
    }
)

_TRANSIENT_FAMILIES = frozenset({"RequestLimitExceeded", "InternalError"})


class BotError(Exception):
    """Base of every error the bot turns into a friendly message."""


class ConfigError(BotError):
    """Settings missing or invalid."""

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(problems)
        lines = "; ".join(f"{key}: {why}" for key, why in self.problems.items())
        super().__init__(f"configuration error: {lines}")


class StartupError(BotError):
    """The bot cannot start: the text says what failed and what to change, in one line, no secret in it."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class QuotaError(BotError):
    """A fair-use limit refused the request; the text (bot.work.quotas.Refusal) says which and when it frees up."""

    def __init__(self, refusal: str):
        self.refusal = refusal
        super().__init__(refusal)


class InputError(BotError):
    """The user's input cannot be used; nothing was sent to the API."""


class InvalidVoiceNameError(InputError):
    """The voice name breaks TRTC's rule (letters, digits, underscore, 1-36)."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"invalid voice name {name!r}")


class PromptTextError(InputError):
    """The transcript is longer than the bot accepts."""

    def __init__(self, length: int, limit: int):
        self.length = length
        self.limit = limit
        super().__init__(f"transcript has {length} characters, limit {limit}")


class OptionError(InputError):
    """An option the user typed has a value the bot cannot use."""

    def __init__(self, option: str, value: str, allowed: str):
        self.option = option
        self.value = value
        self.allowed = allowed
        super().__init__(f"option {option} has an unusable value")


class AudioError(InputError):
    """The recording cannot be turned into a prompt."""


class NotAudioError(AudioError):
    """Not a media file ffmpeg can open."""


class NoAudioStreamError(AudioError):
    """A media file without an audio track."""


class DamagedAudioError(AudioError):
    """ffmpeg reported decode errors: the file is truncated or corrupt."""


class NoVoiceError(AudioError):
    """Silence, near-silence or no speech-like signal."""

    def __init__(self, peak_dbfs: float | None = None):
        self.peak_dbfs = peak_dbfs
        super().__init__("no voice found in the recording")


class TooShortError(AudioError):
    """Shorter than the minimum after conversion."""

    def __init__(self, seconds: float, minimum: float):
        self.seconds = seconds
        self.minimum = minimum
        super().__init__(f"recording is {seconds:.1f} s, minimum {minimum:.0f} s")


class TooLargeError(AudioError):
    """Over the size cap."""

    def __init__(self, size: int | None, limit: int):
        self.size = size
        self.limit = limit
        super().__init__(f"file of {size} bytes is over the {limit}-byte cap")


class DownloadError(BotError):
    """Fetching a Slack file failed."""

    def __init__(self, reason: str, status: int | None = None):
        self.reason = reason
        self.status = status
        super().__init__(reason if status is None else f"{reason} (HTTP {status})")


class FileAccessError(DownloadError):
    """Slack answered with its sign-in page or a redirect: files:read is missing or the file is hidden."""


class UnsafeURLError(DownloadError):
    """The URL is not on a host the bot token may be sent to."""


class ApiError(BotError):
    """Tencent Cloud answered with an error."""

    def __init__(self, code: str, message: str = "", request_id: str | None = None):
        self.code = code
        self.message = message
        self.request_id = request_id
        super().__init__(f"{code}: {message}" + (f" (RequestId {request_id})" if request_id else ""))

    @property
    def transient(self) -> bool:
        """True when retrying may succeed."""
        # Sub-codes of a throttling or internal error (RequestLimitExceeded.UinLimitExceeded...) are transient too.
        return self.code in TRANSIENT_API_CODES or self.code.split(".", 1)[0] in _TRANSIENT_FAMILIES
