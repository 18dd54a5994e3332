"""Friendly messages: one specific sentence per error, RequestIds shown, nothing raw leaked into Slack."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
from support.expected_text import SLACK_API_SENTENCES, is_slack_sentence

import bot.errors as errors
from bot.errors import (
    ApiError,
    BotError,
    ConfigError,
    FileAccessError,
    InvalidVoiceNameError,
    OptionError,
    PromptTextError,
    TooLargeError,
    TooShortError,
    UnsafeURLError,
)
from bot.ui.texts import (
    API_MESSAGES,
    OPERATOR_API_MESSAGES,
    api_message,
    config_report,
    describe,
    describe_for_operator,
    is_user_fixable,
    plain_text,
)

# What the Slack user reads when something fails on the bot's side (never the exception's own text).
GENERIC = "Something went wrong on our side. Please try again; if it keeps happening, tell your Slack admin."

VOICECLONE_CODES = [
    "InvalidParameter.AudioPrompt",
    "InvalidParameter.Pitch",
    "InvalidParameter.SampleRate",
    "InvalidParameter.Speed",
    "InvalidParameter.TextLength",
    "InvalidParameter.VoiceId",
    "InvalidParameter.VoiceName",
    "InvalidParameter.Volume",
    "MissingParameter.APIKey",
    "UnsupportedOperation.InternalError",
    "UnsupportedOperation.NotAllowed",
    "UnsupportedOperation.VoiceCloneError",
]
COMMON_CODES = [
    "LimitExceeded.VoiceCloneMaxNumLimit",
    "AuthFailure.SignatureFailure",
    "AuthFailure.SignatureExpire",
    "AuthFailure.SecretIdNotFound",
    "AuthFailure.InvalidSecretId",
    "AuthFailure.UnauthorizedOperation",
    "AuthFailure",
    "RequestLimitExceeded",
    "InternalError",
    "ServerNetworkError",
    "NetworkError",
    "InvalidParameter",
    "MissingParameter",
    "ResourceUnavailable",
    "UnsupportedOperation",
]

# Arguments by parameter name, for building any BotError subclass.
SAMPLE_ARGS: dict[str, Any] = {
    "refusal": "You already have 10 voices, the most one person may keep here (10).",
    "problems": {"TENCENTCLOUD_SECRET_KEY": "missing"},
    "name": "bad name!",
    "length": 1200,
    "limit": 1000,
    "option": "model",
    "value": "flow_99",
    "allowed": "flow_01_turbo, flow_01_ex",
    "peak_dbfs": -70.0,
    "seconds": 4.2,
    "minimum": 10.0,
    "size": 150 * 1024 * 1024,
    "reason": "HTTP error",
    "status": 503,
    "code": "InternalError",
    "message": "boom",
    "request_id": "req-123",
}


def bot_error_classes() -> list[type[BotError]]:
    found: list[type[BotError]] = []
    stack: list[type[BotError]] = [BotError]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub.__module__ == errors.__name__ and sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


def sample(cls: type[BotError]) -> BotError:
    if cls.__init__ is Exception.__init__:
        return cls()
    params = [p for p in inspect.signature(cls).parameters.values() if p.default is inspect.Parameter.empty]
    missing = [p.name for p in params if p.name not in SAMPLE_ARGS]
    assert not missing, f"add sample values for {cls.__name__}({', '.join(missing)}) to SAMPLE_ARGS"
    if cls is TooLargeError:
        return cls(size=150 * 1024 * 1024, limit=100 * 1024 * 1024)
    return cls(**{p.name: SAMPLE_ARGS[p.name] for p in params})


def test_every_documented_code_has_its_own_sentence() -> None:
    codes = VOICECLONE_CODES + COMMON_CODES
    assert set(codes) <= set(API_MESSAGES)
    texts = [api_message(code) for code in codes]
    assert len(set(texts)) == len(texts)


def test_every_code_in_the_table_has_its_expected_sentence_written_out() -> None:
    # tests/support/expected_text.py spells out every sentence: a code added to bot.ui.texts needs its words there too.
    assert set(API_MESSAGES) == set(SLACK_API_SENTENCES)


def test_every_message_in_the_table_is_distinct() -> None:
    assert len(set(API_MESSAGES.values())) == len(API_MESSAGES)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "AuthFailure.MFAFailure",
            "Tencent Cloud did not accept the bot's credentials. Please ask your Slack admin to check "
            "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY. (Error code `AuthFailure.MFAFailure`.)",
        ),
        (
            "InvalidParameter.Model",
            "Tencent Cloud rejected part of the request. Check the voice name and the recording and try again; if it "
            "keeps failing, tell your Slack admin. (Error code `InvalidParameter.Model`.)",
        ),
        (
            "MissingParameter.SdkAppId",
            "Tencent Cloud said the request was incomplete. That is a bug on our side: tell your Slack admin. "
            "(Error code `MissingParameter.SdkAppId`.)",
        ),
        (
            "ResourceUnavailable.ServiceStopped",
            "Tencent Cloud's voice cloning service is unavailable right now. Try again later. "
            "(Error code `ResourceUnavailable.ServiceStopped`.)",
        ),
        (
            "UnsupportedOperation.Other",
            "Tencent Cloud does not allow this operation for the bot's account. Tell your Slack admin. "
            "(Error code `UnsupportedOperation.Other`.)",
        ),
        (
            "RequestLimitExceeded.UinLimitExceeded",
            "Tencent Cloud is getting too many requests from this bot right now. Wait a minute and try again. "
            "(Error code `RequestLimitExceeded.UinLimitExceeded`.)",
        ),
    ],
)
def test_unknown_codes_fall_back_to_their_family_keeping_the_code(code: str, expected: str) -> None:
    assert api_message(code) == expected
    assert describe(ApiError(code, "", "rid-7")) == expected + " (RequestId: rid-7)"


def test_config_fixes_are_for_the_slack_admin_in_slack_and_spelled_out_for_the_operator() -> None:
    for code in OPERATOR_API_MESSAGES:
        slack = describe(ApiError(code, "", "r"))
        operator = describe_for_operator(ApiError(code, "", "r"))
        assert "admin" not in operator, code
        assert "`" not in operator and "&amp;" not in operator, code
        assert operator != plain_text(slack), f"{code}: the operator needs different words"
    for code in ("AuthFailure.SignatureFailure", "MissingParameter.APIKey", "InvalidParameter.SdkAppId"):
        assert "ask your slack admin" in describe(ApiError(code)).lower()
    assert "TENCENTCLOUD_SECRET_KEY" in describe_for_operator(ApiError("AuthFailure.SignatureFailure"))


def test_the_operator_sees_every_config_problem_in_one_message() -> None:
    report = config_report(ConfigError({"SLACK_BOT_TOKEN": "is missing: set it in .env", "PORT": "must be..."}))
    lines = report.splitlines()
    assert lines[0] == "The configuration has 2 problems:"
    assert lines[1:3] == ["  SLACK_BOT_TOKEN is missing: set it in .env", "  PORT must be..."]
    assert "admin" not in report


@pytest.mark.parametrize(
    ("mrkdwn", "plain"),
    [
        ("*Voice ID*: `alice_1a2b`", "Voice ID: alice_1a2b"),
        (":white_check_mark: Voice cloned", "[done] Voice cloned"),
        ("see <https://api.slack.com/apps|your apps>", "see your apps (https://api.slack.com/apps)"),
        ("fish &amp; chips &lt;3", "fish & chips <3"),
        ("snake_case_name stays", "snake_case_name stays"),
        ("at 12:30:15 sharp", "at 12:30:15 sharp"),
    ],
)
def test_plain_text_for_terminals(mrkdwn: str, plain: str) -> None:
    assert plain_text(mrkdwn) == plain


def test_unknown_families_get_the_general_fallback_naming_the_code() -> None:
    text = describe(ApiError("Strange.<Code>", "raw server words", "rid-9"))
    assert text == (
        "Tencent Cloud refused the request. Try again later; if it keeps failing, tell your Slack admin. "
        "(Error code `Strange.&lt;Code&gt;`.) (RequestId: rid-9)"
    )


@pytest.mark.parametrize("code", VOICECLONE_CODES + COMMON_CODES)
def test_the_request_id_ends_the_message(code: str) -> None:
    text = describe(ApiError(code, "server text", "c0ffee-42"))
    sentence, request_id = text.rsplit(" (RequestId: ", 1)
    assert request_id == "c0ffee-42)"
    assert is_slack_sentence(code, sentence), (code, sentence)
    assert "server text" not in text
    without_id = describe(ApiError(code, "server text"))
    assert without_id == sentence and is_slack_sentence(code, without_id)


def test_auth_messages_name_what_to_fix() -> None:
    assert "TENCENTCLOUD_SECRET_KEY" in api_message("AuthFailure.SignatureFailure")
    assert "clock" in api_message("AuthFailure.SignatureExpire")
    assert "TENCENTCLOUD_SECRET_ID" in api_message("AuthFailure.SecretIdNotFound")


def test_every_bot_error_subclass_gets_a_specific_message() -> None:
    classes = bot_error_classes()
    assert len(classes) >= 16
    texts: dict[str, str] = {}
    for cls in classes:
        text = describe(sample(cls))
        assert text and text != GENERIC, cls.__name__
        texts[cls.__name__] = text
    # Subclasses never borrow their parent's wording.
    for cls in classes:
        for parent in cls.__mro__[1:]:
            if parent.__name__ in texts:
                assert texts[cls.__name__] != texts[parent.__name__], (cls.__name__, parent.__name__)


def test_messages_use_the_errors_fields() -> None:
    assert "4.2 seconds" in describe(TooShortError(4.29, 10.0))
    assert "10 seconds" in describe(TooShortError(4, 10))
    assert "9.9 seconds" in describe(TooShortError(9.96, 10.0)), "never rounds up to the minimum"
    large = describe(TooLargeError(size=150 * 1024 * 1024, limit=100 * 1024 * 1024))
    assert "150 MB" in large and "100 MB" in large
    assert "100 MB" in describe(TooLargeError(size=None, limit=100 * 1024 * 1024))
    assert "1200" in describe(PromptTextError(1200, 1000)) and "1000" in describe(PromptTextError(1200, 1000))
    config = describe(ConfigError({"TRTC_SDK_APP_ID": "missing", "SLACK_BOT_TOKEN": "must start with xoxb-"}))
    assert "`TRTC_SDK_APP_ID`" in config and "`SLACK_BOT_TOKEN`" in config
    option = describe(OptionError("model", "flow_99", "flow_01_turbo, flow_01_ex"))
    assert "`model=flow_99`" in option and "flow_01_turbo, flow_01_ex" in option
    assert "HTTP 503" in describe(errors.DownloadError("gateway", 503))


def test_file_access_names_the_scope_and_visibility() -> None:
    text = describe(FileAccessError("sign-in page", 200))
    assert "`files:read`" in text
    assert "see the file" in text


def test_unsafe_url_says_why_nothing_was_fetched() -> None:
    assert "Slack" in describe(UnsafeURLError("https://evil.example/x"))
    assert "evil.example" not in describe(UnsafeURLError("https://evil.example/x"))


@pytest.mark.parametrize(
    "name",
    [
        "<!channel>",
        "<https://evil.example|click>",
        "a & b",
        "*bold* _it_ ~s~",
        "back`tick`",
        "x" * 500,
        "a\nb",
    ],
)
def test_user_input_is_shown_inert(name: str) -> None:
    text = describe(InvalidVoiceNameError(name))
    assert "<" not in text and ">" not in text
    assert "\n" not in text
    assert len(text) < 250
    [shown, *_] = re.findall(r"`([^`]*)`", text)
    unescaped = shown.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").rstrip("…")
    assert unescaped in " ".join(name.replace("`", "'").split())


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("database password=hunter2 at /srv/secret"),
        KeyError("xoxb-123-secret-token"),
        ValueError("<!channel> look"),
        Exception("boom"),
    ],
)
def test_unknown_exceptions_never_leak_their_text(error: BaseException) -> None:
    text = describe(error)
    assert text == GENERIC
    assert str(error).strip("'") not in text


def test_user_fixable() -> None:
    assert is_user_fixable(TooShortError(3, 10))
    assert is_user_fixable(InvalidVoiceNameError("a b"))
    assert is_user_fixable(ApiError("InvalidParameter.AudioPrompt"))
    assert not is_user_fixable(ApiError("AuthFailure.SignatureFailure"))
    assert not is_user_fixable(ApiError("NetworkError"))
    assert not is_user_fixable(ConfigError({"X": "missing"}))
    assert not is_user_fixable(RuntimeError("x"))
