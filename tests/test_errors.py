"""Which Tencent Cloud errors are worth retrying."""

from __future__ import annotations

import pytest

from bot.errors import ApiError


@pytest.mark.parametrize(
    "code",
    [
        "RequestLimitExceeded",
        "RequestLimitExceeded.UinLimitExceeded",
        "InternalError",
        "InternalError.Timeout",
        "ServerNetworkError",
        "NetworkError",
        "ResourceUnavailable",
    ],
)
def test_transient(code):
    assert ApiError(code).transient


@pytest.mark.parametrize(
    "code",
    [
        "InvalidParameter.AudioPrompt",
        "AuthFailure.SignatureFailure",
        "LimitExceeded.VoiceCloneMaxNumLimit",
        "UnsupportedOperation.InternalError",
        "ResourceUnavailable.ServiceNotOpened",
    ],
)
def test_not_transient(code):
    assert not ApiError(code).transient
