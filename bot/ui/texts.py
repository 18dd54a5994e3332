"""What the bot tells people when something fails: short, specific, and right for where it is read.

Two readers: the Slack user (mrkdwn, escaped; a fix in the configuration is for "your Slack admin") and the
operator at a terminal (`describe_for_operator`: plain text, says what to change).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from bot.errors import (
    ApiError,
    AudioError,
    ConfigError,
    DamagedAudioError,
    DownloadError,
    FileAccessError,
    InputError,
    InvalidVoiceNameError,
    NoAudioStreamError,
    NotAudioError,
    NoVoiceError,
    OptionError,
    PromptTextError,
    QuotaError,
    StartupError,
    TooLargeError,
    TooShortError,
    UnsafeURLError,
)
from bot.voice.analysis import NotEnoughSpeechError, TooNoisyError

GENERIC = "Something went wrong on our side. Please try again; if it keeps happening, tell your Slack admin."
# Slack users never see the bot's configuration: a fix there goes through whoever runs the app.
ADMIN = "your Slack admin"

# One sentence per Tencent Cloud error code. A code with a dot falls back to its family (the part before
# the dot), then to API_FALLBACK.
API_MESSAGES: dict[str, str] = {
    # VoiceClone's own codes
    "InvalidParameter.AudioPrompt": (
        "Tencent Cloud could not use this recording as a voice sample. Send a clear recording of one person "
        "speaking, 10 seconds to 3 minutes long, with little background noise."
    ),
    "InvalidParameter.SampleRate": (
        "Tencent Cloud rejected the audio format the bot converted your recording to. That is a bug on our "
        f"side, not yours: please tell {ADMIN}."
    ),
    "InvalidParameter.TextLength": (
        "Tencent Cloud says the transcript is too long. Shorten it to exactly what is said in the recording, "
        "or leave it out: the transcript is optional."
    ),
    "InvalidParameter.VoiceName": (
        "Tencent Cloud rejected the voice name. Use only letters, digits and underscores, at most 36 "
        "characters, for example `Alice_2`."
    ),
    "InvalidParameter.VoiceId": ("Tencent Cloud does not know that voice ID. Check the ID, or clone the voice again."),
    "InvalidParameter.Pitch": "Tencent Cloud rejected the pitch: it must be a whole number from -12 to 12.",
    "InvalidParameter.Speed": "Tencent Cloud rejected the speed: it must be between 0.5 and 2.0.",
    "InvalidParameter.Volume": "Tencent Cloud rejected the volume: it must be above 0 and at most 10.",
    "MissingParameter.APIKey": (
        "Tencent Cloud asked for a TTS API key, which means voice cloning is not set up for this TRTC "
        f"application yet. Please ask {ADMIN} to enable it in the TRTC console."
    ),
    "UnsupportedOperation.InternalError": (
        "Tencent Cloud could not carry out the clone because of a problem on their side. Try again in a few "
        "minutes; if it keeps failing, tell your Slack admin, who can take the RequestId to Tencent Cloud support."
    ),
    "UnsupportedOperation.NotAllowed": (
        f"Voice cloning is not enabled for this Tencent Cloud account. Please ask {ADMIN} to have it enabled "
        "(Tencent Cloud support can do this)."
    ),
    "UnsupportedOperation.VoiceCloneError": (
        "Tencent Cloud could not clone a voice from this recording. Try another one: "
        "a single speaker, steady volume, no music, 10 seconds to 3 minutes."
    ),
    "LimitExceeded.VoiceCloneMaxNumLimit": (
        "This Tencent Cloud account has reached its maximum number of cloned voices, and voices cannot be "
        f"deleted through the API. Please ask {ADMIN} to request a higher limit from Tencent Cloud."
    ),
    # The SdkAppId
    "InvalidParameter.SdkAppId": f"The bot's TRTC_SDK_APP_ID is not valid. Please ask {ADMIN} to check it.",
    "FailedOperation.SdkAppIdNotExist": (
        f"Tencent Cloud does not know the bot's TRTC application (TRTC_SDK_APP_ID). Please ask {ADMIN} to "
        "check it against the TRTC console."
    ),
    "UnauthorizedOperation.SdkAppId": (
        f"The bot's Tencent Cloud key may not use its TRTC application. Please ask {ADMIN} to check that "
        "TRTC_SDK_APP_ID belongs to the same account as the key."
    ),
    # Credentials and permissions
    "AuthFailure.SignatureFailure": (
        "Tencent Cloud rejected the bot's signature: the secret key does not match the key ID. Please ask "
        f"{ADMIN} to check TENCENTCLOUD_SECRET_KEY."
    ),
    "AuthFailure.SignatureExpire": (
        "Tencent Cloud refused the request because the bot server's clock is more than 5 minutes off. Please "
        f"ask {ADMIN} to synchronise the server's clock."
    ),
    "AuthFailure.SecretIdNotFound": (
        "Tencent Cloud does not recognise the bot's key ID: it was deleted, disabled or mistyped. Please ask "
        f"{ADMIN} to check TENCENTCLOUD_SECRET_ID."
    ),
    "AuthFailure.InvalidSecretId": (
        "The bot's TENCENTCLOUD_SECRET_ID is not a Tencent Cloud API key. Please ask "
        f"{ADMIN} to create an API key in the CAM console and use that."
    ),
    "AuthFailure.UnauthorizedOperation": (
        "The bot's Tencent Cloud key is not allowed to clone voices. Please ask "
        f"{ADMIN} to grant it access to TRTC in the CAM console."
    ),
    "AuthFailure": (
        "Tencent Cloud did not accept the bot's credentials. Please ask "
        f"{ADMIN} to check TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY."
    ),
    # Load and outages (the client has already retried these)
    "RequestLimitExceeded": (
        "Tencent Cloud is getting too many requests from this bot right now. Wait a minute and try again."
    ),
    "InternalError": ("Tencent Cloud had an internal error, several times in a row. Try again in a few minutes."),
    "ServerNetworkError": (
        "Tencent Cloud's servers answered with an error page, several times in a row. They are probably "
        "having trouble: try again in a few minutes."
    ),
    "NetworkError": (
        "The bot could not reach Tencent Cloud: the connection failed or timed out. Try again in a few "
        f"minutes; if it keeps happening, tell {ADMIN}."
    ),
    "ResourceUnavailable": "Tencent Cloud's voice cloning service is unavailable right now. Try again later.",
    "UnexpectedResponse": (
        "Tencent Cloud's answer was not one the bot understands, so the clone may not have worked. "
        f"Please tell {ADMIN} (the TRTC_ENDPOINT setting may be wrong)."
    ),
    # Families
    "InvalidParameter": (
        "Tencent Cloud rejected part of the request. Check the voice name and the recording and try again; "
        f"if it keeps failing, tell {ADMIN}."
    ),
    "MissingParameter": (f"Tencent Cloud said the request was incomplete. That is a bug on our side: tell {ADMIN}."),
    "UnsupportedOperation": (f"Tencent Cloud does not allow this operation for the bot's account. Tell {ADMIN}."),
    "FailedOperation": "Tencent Cloud could not complete the clone. Try again later.",
    "LimitExceeded": f"This Tencent Cloud account has reached one of its limits. Please tell {ADMIN}.",
    "UnauthorizedOperation": (
        f"The bot's Tencent Cloud key is not allowed to do this. Please ask {ADMIN} to check its permissions."
    ),
}
API_FALLBACK = f"Tencent Cloud refused the request. Try again later; if it keeps failing, tell {ADMIN}."

# Codes whose fix is in the user's hands (another recording, another name, a shorter transcript).
USER_FIXABLE_CODES = frozenset(
    {
        "InvalidParameter.AudioPrompt",
        "InvalidParameter.TextLength",
        "InvalidParameter.VoiceName",
        "InvalidParameter.VoiceId",
        "InvalidParameter.Pitch",
        "InvalidParameter.Speed",
        "InvalidParameter.Volume",
        "UnsupportedOperation.VoiceCloneError",
    }
)


# The same codes for the operator at a terminal (`clone`): what to change, where. Codes not listed here read the
# same for both audiences (their fix is the recording, the name, or waiting).
OPERATOR_API_MESSAGES: dict[str, str] = {
    "UnsupportedOperation.InternalError": (
        "Tencent Cloud could not carry out the clone because of a problem on their side. Try again in a few "
        "minutes; if it keeps failing, contact Tencent Cloud support."
    ),
    "InvalidParameter.SampleRate": (
        "Tencent Cloud rejected the audio format the bot converted the recording to. That is a bug in the bot: "
        "please report it with the RequestId."
    ),
    "MissingParameter.APIKey": (
        "Tencent Cloud asked for a TTS API key: voice cloning is not enabled for the TRTC application "
        "TRTC_SDK_APP_ID names. Enable it in the TRTC console."
    ),
    "UnsupportedOperation.NotAllowed": (
        "Voice cloning is not enabled for this Tencent Cloud account. Ask Tencent Cloud support to enable it."
    ),
    "LimitExceeded.VoiceCloneMaxNumLimit": (
        "This Tencent Cloud account has reached its maximum number of cloned voices, and voices cannot be "
        "deleted through the API. Request a higher limit from Tencent Cloud support."
    ),
    "InvalidParameter.SdkAppId": "TRTC_SDK_APP_ID is not valid: set it to the SDKAppID shown in the TRTC console.",
    "FailedOperation.SdkAppIdNotExist": (
        "Tencent Cloud does not know the TRTC application TRTC_SDK_APP_ID names: set it to the SDKAppID shown "
        "in the TRTC console."
    ),
    "UnauthorizedOperation.SdkAppId": (
        "The Tencent Cloud key may not use the TRTC application TRTC_SDK_APP_ID names: use a key and an "
        "application of the same account."
    ),
    "AuthFailure.SignatureFailure": (
        "Tencent Cloud rejected the signature: TENCENTCLOUD_SECRET_KEY does not match TENCENTCLOUD_SECRET_ID. "
        "Set both from the same API key (CAM console -> API keys)."
    ),
    "AuthFailure.SignatureExpire": (
        "Tencent Cloud refused the request because this machine's clock is more than 5 minutes off. "
        "Synchronise the clock (NTP) and try again."
    ),
    "AuthFailure.SecretIdNotFound": (
        "Tencent Cloud does not recognise TENCENTCLOUD_SECRET_ID: it was deleted, disabled or mistyped. "
        "Set it to an active key's SecretId (CAM console -> API keys)."
    ),
    "AuthFailure.InvalidSecretId": (
        "TENCENTCLOUD_SECRET_ID is not a Tencent Cloud API key. Create an API key in the CAM console and set "
        "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY from it."
    ),
    "AuthFailure.UnauthorizedOperation": (
        "The Tencent Cloud key is not allowed to clone voices. Grant it access to TRTC in the CAM console."
    ),
    "AuthFailure": (
        "Tencent Cloud did not accept the credentials. Check TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY."
    ),
    "NetworkError": (
        "Could not reach Tencent Cloud: the connection failed or timed out. Check the network, any proxy, and "
        "TRTC_ENDPOINT."
    ),
    "UnexpectedResponse": (
        "Tencent Cloud's answer was not one the bot understands, so the clone may not have worked. Check "
        "TRTC_ENDPOINT (leave it unset for Tencent Cloud itself)."
    ),
    "InvalidParameter": (
        "Tencent Cloud rejected part of the request. Check the voice name, the options and the recording."
    ),
    "MissingParameter": "Tencent Cloud said the request was incomplete. That is a bug in the bot: please report it.",
    "UnsupportedOperation": (
        "Tencent Cloud does not allow this operation for this account. Check the account's TRTC features in "
        "the TRTC console."
    ),
    "LimitExceeded": "This Tencent Cloud account has reached one of its limits. Check its quotas in the console.",
    "UnauthorizedOperation": (
        "The Tencent Cloud key is not allowed to do this. Check its permissions in the CAM console."
    ),
}
OPERATOR_API_FALLBACK = (
    "Tencent Cloud refused the request. Try again later; if it keeps failing, contact Tencent Cloud support."
)


def api_message(code: str) -> str:
    """The sentence for a Tencent Cloud error code: its own, else its family's or the general one naming the code."""
    return _api_sentence(code, API_MESSAGES, API_FALLBACK)


def _api_sentence(code: str, table: dict[str, str], fallback: str) -> str:
    if code in table:
        return table[code]
    family = code.split(".", 1)[0]
    general = table.get(family, API_MESSAGES[family]) if family in API_MESSAGES else fallback
    # A code we have no sentence for keeps its name: it is what to search for or quote to Tencent support.
    return f"{general} (Error code {code_span(code)}.)"


def describe(error: BaseException) -> str:
    """What to tell the user about `error`; never the exception's own text."""
    for cls in type(error).__mro__:
        describer = _DESCRIBERS.get(cls)
        if describer is not None:
            return describer(error)
    return GENERIC


def describe_for_operator(error: BaseException) -> str:
    """What to tell the operator at a terminal about `error`: plain text, and what to change where."""
    if isinstance(error, ApiError):
        text = _api_sentence(error.code, {**API_MESSAGES, **OPERATOR_API_MESSAGES}, OPERATOR_API_FALLBACK)
        if error.request_id:
            text += f" (RequestId: {error.request_id})"
        return plain_text(text)
    if isinstance(error, OptionError):
        allowed = error.allowed if error.allowed.startswith(("a ", "an ")) else f"one of {error.allowed}"
        return f"{error.option} {error.value!r} can't be used: it should be {allowed}."
    if isinstance(error, ConfigError):
        return config_report(error)
    if isinstance(error, StartupError):
        return error.reason
    return plain_text(describe(error))


def config_report(error: ConfigError, source: str | None = None) -> str:
    """Every configuration problem, one line each, for the operator; no secret value is ever in a problem."""
    count = len(error.problems)
    where = f" (read from the environment and {source})" if source else ""
    lines = [f"The configuration has {count} problem{'s' if count != 1 else ''}{where}:"]
    lines += [f"  {key} {why}" for key, why in error.problems.items()]
    lines.append("Change these in .env or the environment (every setting is described in .env.example).")
    return "\n".join(lines)


_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]+))?>")
_CODE = re.compile(r"`([^`\n]*)`")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")
_STRIKE = re.compile(r"(?<![\w~])~([^~\n]+)~(?![\w~])")
_EMOJI = re.compile(r"(?<![\w:]):([a-z0-9_+\-]+):(?![\w:])")
EMOJI_WORDS = {"white_check_mark": "[done]", "x": "[failed]", "hourglass_flowing_sand": "[working]", "warning": "[!]"}


def plain_text(mrkdwn: str) -> str:
    """Slack mrkdwn as a terminal should show it: no *bold*, backticks or :emoji: codes; links spelled out."""

    def link(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith(("@", "#", "!")):
            return label or target
        return f"{label} ({target})" if label and label != target else target

    text = _LINK.sub(link, mrkdwn)
    text = _CODE.sub(r"\1", text)
    text = _BOLD.sub(r"\1", text)
    text = _STRIKE.sub(r"\1", text)
    text = _EMOJI.sub(lambda m: EMOJI_WORDS.get(m.group(1), ""), text)
    text = re.sub(r"(?<=\S)[ \t]{2,}", " ", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def is_user_fixable(error: BaseException) -> bool:
    """True when the user can fix it themselves (another file, a name, a transcript), not the admin or us."""
    if isinstance(error, InputError):
        return True
    return isinstance(error, ApiError) and error.code in USER_FIXABLE_CODES


def escape(text: str) -> str:
    """Escape the three characters Slack treats as markup in any text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code_span(text: str, limit: int = 60) -> str:
    """Show untrusted text as inline code: escaped, backticks and newlines removed, shortened."""
    text = " ".join(text.replace("`", "'").split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{escape(text)}`" if text else "(empty)"


def _mb(size: float, rounding: Callable[[float], float] = round) -> str:
    megabytes = rounding(size / (1024 * 1024) * 10) / 10
    return f"{megabytes:g}"


def _config(error: ConfigError) -> str:
    keys = ", ".join(code_span(key) for key in error.problems) or "some settings"
    return f"The bot is not configured correctly ({keys} missing or invalid). Please tell {ADMIN}."


def _voice_name(error: InvalidVoiceNameError) -> str:
    return (
        f"{code_span(error.name, 40)} can't be a voice name. Use 1 to 36 letters, digits or underscores, "
        "for example `Alice_Smith`."
    )


def _prompt_text(error: PromptTextError) -> str:
    return (
        f"The transcript is {error.length} characters long; the limit is {error.limit}. "
        "Shorten it to exactly what is said in the recording, or leave it out: the transcript is optional."
    )


def _option(error: OptionError) -> str:
    given = code_span(f"{error.option}={error.value}", 40)
    # `allowed` is either a description ("a two-letter code ...") or a list of values.
    allowed = error.allowed if error.allowed.startswith(("a ", "an ")) else f"one of {error.allowed}"
    return (
        f"The bot can't use {given}: {escape(error.option)} should be {escape(allowed)}. "
        "Fix it and send again, or leave the option out."
    )


def _too_short(error: TooShortError) -> str:
    # Round down so a 9.96 s clip never reads as "10.0 seconds" against a 10-second minimum.
    seconds = math.floor(error.seconds * 10) / 10
    return (
        f"The recording is only {seconds:g} seconds long; voice cloning needs at least {error.minimum:g} "
        "seconds of speech. Record a longer sample (20 to 30 seconds works well) and send it again."
    )


def _too_large(error: TooLargeError) -> str:
    limit = _mb(error.limit)
    head = (
        f"That file is {_mb(error.size, math.ceil)} MB, over the {limit} MB limit."
        if error.size is not None
        else f"That file is over the {limit} MB limit."
    )
    return f"{head} Send a shorter recording (at most 3 minutes are used) or a compressed one, such as m4a."


def _not_enough_speech(error: NotEnoughSpeechError) -> str:
    speech = math.floor(error.seconds * 10) / 10
    return (
        f"I found only {speech:g} seconds of speech in this {error.recording_seconds:.0f}-second recording "
        f"(silence and noise don't count); voice cloning needs at least {error.minimum:g} seconds of speech. "
        "Record 20 to 30 seconds of steady talking and send it again."
    )


def _too_noisy(error: TooNoisyError) -> str:
    heard = (
        f" (the voice, if any, is only about {max(error.snr_db, 0):.0f} dB above the noise)"
        if error.snr_db is not None
        else ""
    )
    return (
        f"The recording is mostly background noise{heard}, so a voice can't be cloned from it. "
        "Record again in a quiet room, close to the microphone, and speak for at least 10 seconds."
    )


def _no_voice(error: NoVoiceError) -> str:
    loudest = f" (its loudest moment is {error.peak_dbfs:.0f} dBFS)" if error.peak_dbfs is not None else ""
    return (
        f"The recording is silent or too quiet to hear a voice{loudest}. "
        "Record again close to the microphone and speak for at least 10 seconds."
    )


def _download(error: DownloadError) -> str:
    status = f" (HTTP {error.status})" if error.status is not None else ""
    return f"The bot couldn't download that file from Slack{status}. Try again in a minute."


def _api(error: ApiError) -> str:
    text = api_message(error.code)
    if error.request_id:
        text += f" (RequestId: {escape(error.request_id)})"
    return text


_DESCRIBERS: dict[type[BaseException], Callable[[BaseException], str]] = {
    ConfigError: _config,  # type: ignore[dict-item]
    QuotaError: lambda e: e.refusal,  # type: ignore[attr-defined]  # the limit's own sentence, and when it frees
    StartupError: lambda _: f"The bot is having trouble connecting to Slack. Please tell {ADMIN}.",
    InvalidVoiceNameError: _voice_name,  # type: ignore[dict-item]
    PromptTextError: _prompt_text,  # type: ignore[dict-item]
    OptionError: _option,  # type: ignore[dict-item]
    NotAudioError: lambda _: (
        "That file isn't a recording the bot can read. Send audio or video, such as m4a, mp3, wav, "
        "ogg, webm, mp4 or a Slack voice clip."
    ),
    NoAudioStreamError: lambda _: (
        "That file has no sound track (is it an image or a silent video?). Send a recording of someone speaking."
    ),
    DamagedAudioError: lambda _: (
        "That recording seems damaged or cut off, so it can't be decoded. Export or record it again and send "
        "the new file."
    ),
    TooNoisyError: _too_noisy,  # type: ignore[dict-item]
    NoVoiceError: _no_voice,  # type: ignore[dict-item]
    NotEnoughSpeechError: _not_enough_speech,  # type: ignore[dict-item]
    TooShortError: _too_short,  # type: ignore[dict-item]
    TooLargeError: _too_large,  # type: ignore[dict-item]
    AudioError: lambda _: "That recording can't be used for cloning. Try another recording of one person speaking.",
    InputError: lambda _: "That input can't be used. Check it and try again.",
    FileAccessError: lambda _: (
        "Slack wouldn't let the bot download that file. Either the app lacks the `files:read` scope, "
        "or the bot may not see the file (it was shared somewhere the bot isn't a member). "
        "Invite the bot to the channel and share the file again; if that doesn't help, "
        f"ask {ADMIN} to add `files:read` and reinstall the app."
    ),
    UnsafeURLError: lambda _: (
        "The bot won't fetch that file: its link doesn't point to Slack's own file servers, and the bot only "
        "sends its Slack credentials there. Upload the file to Slack directly and try again."
    ),
    DownloadError: _download,  # type: ignore[dict-item]
    ApiError: _api,  # type: ignore[dict-item]
}
