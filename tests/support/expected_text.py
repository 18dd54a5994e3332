"""What people are told about each Tencent Cloud error code, written out as literals.

The tests compare the bot's words against these, never against the bot's own tables (bot.ui.texts): a sentence
changed there has to be changed here too, on purpose. Each entry is the text before " (RequestId: ...)".

SLACK_API_SENTENCES: what a Slack user reads (mrkdwn; configuration fixes go through "your Slack admin").
OPERATOR_API_SENTENCES: what the operator reads at a terminal (`python -m bot clone`: plain text, what to change).
"""

from __future__ import annotations

SLACK_API_SENTENCES: dict[str, str] = {
    "AuthFailure": (
        "Tencent Cloud did not accept the bot's credentials. Please ask your Slack admin to check "
        "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY."
    ),
    "AuthFailure.InvalidSecretId": (
        "The bot's TENCENTCLOUD_SECRET_ID is not a Tencent Cloud API key. Please ask your Slack admin to create an "
        "API key in the CAM console and use that."
    ),
    "AuthFailure.SecretIdNotFound": (
        "Tencent Cloud does not recognise the bot's key ID: it was deleted, disabled or mistyped. Please ask your "
        "Slack admin to check TENCENTCLOUD_SECRET_ID."
    ),
    "AuthFailure.SignatureExpire": (
        "Tencent Cloud refused the request because the bot server's clock is more than 5 minutes off. Please ask your"
        " Slack admin to synchronise the server's clock."
    ),
    "AuthFailure.SignatureFailure": (
        "Tencent Cloud rejected the bot's signature: the secret key does not match the key ID. Please ask your Slack "
        "admin to check TENCENTCLOUD_SECRET_KEY."
    ),
    "AuthFailure.UnauthorizedOperation": (
        "The bot's Tencent Cloud key is not allowed to clone voices. Please ask your Slack admin to grant it access "
        "to TRTC in the CAM console."
    ),
    "FailedOperation": "Tencent Cloud could not complete the clone. Try again later.",
    "FailedOperation.SdkAppIdNotExist": (
        "Tencent Cloud does not know the bot's TRTC application (TRTC_SDK_APP_ID). Please ask your Slack admin to "
        "check it against the TRTC console."
    ),
    "InternalError": "Tencent Cloud had an internal error, several times in a row. Try again in a few minutes.",
    "InvalidParameter": (
        "Tencent Cloud rejected part of the request. Check the voice name and the recording and try again; if it "
        "keeps failing, tell your Slack admin."
    ),
    "InvalidParameter.AudioPrompt": (
        "Tencent Cloud could not use this recording as a voice sample. Send a clear recording of one person speaking,"
        " 10 seconds to 3 minutes long, with little background noise."
    ),
    "InvalidParameter.Pitch": "Tencent Cloud rejected the pitch: it must be a whole number from -12 to 12.",
    "InvalidParameter.SampleRate": (
        "Tencent Cloud rejected the audio format the bot converted your recording to. That is a bug on our side, not "
        "yours: please tell your Slack admin."
    ),
    "InvalidParameter.SdkAppId": "The bot's TRTC_SDK_APP_ID is not valid. Please ask your Slack admin to check it.",
    "InvalidParameter.Speed": "Tencent Cloud rejected the speed: it must be between 0.5 and 2.0.",
    "InvalidParameter.TextLength": (
        "Tencent Cloud says the transcript is too long. Shorten it to exactly what is said in the recording, or leave"
        " it out: the transcript is optional."
    ),
    "InvalidParameter.VoiceId": "Tencent Cloud does not know that voice ID. Check the ID, or clone the voice again.",
    "InvalidParameter.VoiceName": (
        "Tencent Cloud rejected the voice name. Use only letters, digits and underscores, at most 36 characters, for "
        "example `Alice_2`."
    ),
    "InvalidParameter.Volume": "Tencent Cloud rejected the volume: it must be above 0 and at most 10.",
    "LimitExceeded": "This Tencent Cloud account has reached one of its limits. Please tell your Slack admin.",
    "LimitExceeded.VoiceCloneMaxNumLimit": (
        "This Tencent Cloud account has reached its maximum number of cloned voices, and voices cannot be deleted "
        "through the API. Please ask your Slack admin to request a higher limit from Tencent Cloud."
    ),
    "MissingParameter": (
        "Tencent Cloud said the request was incomplete. That is a bug on our side: tell your Slack admin."
    ),
    "MissingParameter.APIKey": (
        "Tencent Cloud asked for a TTS API key, which means voice cloning is not set up for this TRTC application "
        "yet. Please ask your Slack admin to enable it in the TRTC console."
    ),
    "NetworkError": (
        "The bot could not reach Tencent Cloud: the connection failed or timed out. Try again in a few minutes; if it"
        " keeps happening, tell your Slack admin."
    ),
    "RequestLimitExceeded": (
        "Tencent Cloud is getting too many requests from this bot right now. Wait a minute and try again."
    ),
    "ResourceUnavailable": "Tencent Cloud's voice cloning service is unavailable right now. Try again later.",
    "ServerNetworkError": (
        "Tencent Cloud's servers answered with an error page, several times in a row. They are probably having "
        "trouble: try again in a few minutes."
    ),
    "UnauthorizedOperation": (
        "The bot's Tencent Cloud key is not allowed to do this. Please ask your Slack admin to check its permissions."
    ),
    "UnauthorizedOperation.SdkAppId": (
        "The bot's Tencent Cloud key may not use its TRTC application. Please ask your Slack admin to check that "
        "TRTC_SDK_APP_ID belongs to the same account as the key."
    ),
    "UnexpectedResponse": (
        "Tencent Cloud's answer was not one the bot understands, so the clone may not have worked. Please tell your "
        "Slack admin (the TRTC_ENDPOINT setting may be wrong)."
    ),
    "UnsupportedOperation": "Tencent Cloud does not allow this operation for the bot's account. Tell your Slack admin.",
    "UnsupportedOperation.InternalError": (
        "Tencent Cloud could not carry out the clone because of a problem on their side. Try again in a few minutes; "
        "if it keeps failing, tell your Slack admin, who can take the RequestId to Tencent Cloud support."
    ),
    "UnsupportedOperation.NotAllowed": (
        "Voice cloning is not enabled for this Tencent Cloud account. Please ask your Slack admin to have it enabled "
        "(Tencent Cloud support can do this)."
    ),
    "UnsupportedOperation.VoiceCloneError": (
        "Tencent Cloud could not clone a voice from this recording. Try another one: a single speaker, steady volume,"
        " no music, 10 seconds to 3 minutes."
    ),
}

OPERATOR_API_SENTENCES: dict[str, str] = {
    "AuthFailure": (
        "Tencent Cloud did not accept the credentials. Check TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY."
    ),
    "AuthFailure.InvalidSecretId": (
        "TENCENTCLOUD_SECRET_ID is not a Tencent Cloud API key. Create an API key in the CAM console and set "
        "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY from it."
    ),
    "AuthFailure.SecretIdNotFound": (
        "Tencent Cloud does not recognise TENCENTCLOUD_SECRET_ID: it was deleted, disabled or mistyped. Set it to an "
        "active key's SecretId (CAM console -> API keys)."
    ),
    "AuthFailure.SignatureExpire": (
        "Tencent Cloud refused the request because this machine's clock is more than 5 minutes off. Synchronise the "
        "clock (NTP) and try again."
    ),
    "AuthFailure.SignatureFailure": (
        "Tencent Cloud rejected the signature: TENCENTCLOUD_SECRET_KEY does not match TENCENTCLOUD_SECRET_ID. Set "
        "both from the same API key (CAM console -> API keys)."
    ),
    "AuthFailure.UnauthorizedOperation": (
        "The Tencent Cloud key is not allowed to clone voices. Grant it access to TRTC in the CAM console."
    ),
    "FailedOperation": "Tencent Cloud could not complete the clone. Try again later.",
    "FailedOperation.SdkAppIdNotExist": (
        "Tencent Cloud does not know the TRTC application TRTC_SDK_APP_ID names: set it to the SDKAppID shown in the "
        "TRTC console."
    ),
    "InternalError": "Tencent Cloud had an internal error, several times in a row. Try again in a few minutes.",
    "InvalidParameter": (
        "Tencent Cloud rejected part of the request. Check the voice name, the options and the recording."
    ),
    "InvalidParameter.AudioPrompt": (
        "Tencent Cloud could not use this recording as a voice sample. Send a clear recording of one person speaking,"
        " 10 seconds to 3 minutes long, with little background noise."
    ),
    "InvalidParameter.Pitch": "Tencent Cloud rejected the pitch: it must be a whole number from -12 to 12.",
    "InvalidParameter.SampleRate": (
        "Tencent Cloud rejected the audio format the bot converted the recording to. That is a bug in the bot: please"
        " report it with the RequestId."
    ),
    "InvalidParameter.SdkAppId": "TRTC_SDK_APP_ID is not valid: set it to the SDKAppID shown in the TRTC console.",
    "InvalidParameter.Speed": "Tencent Cloud rejected the speed: it must be between 0.5 and 2.0.",
    "InvalidParameter.TextLength": (
        "Tencent Cloud says the transcript is too long. Shorten it to exactly what is said in the recording, or leave"
        " it out: the transcript is optional."
    ),
    "InvalidParameter.VoiceId": "Tencent Cloud does not know that voice ID. Check the ID, or clone the voice again.",
    "InvalidParameter.VoiceName": (
        "Tencent Cloud rejected the voice name. Use only letters, digits and underscores, at most 36 characters, for "
        "example Alice_2."
    ),
    "InvalidParameter.Volume": "Tencent Cloud rejected the volume: it must be above 0 and at most 10.",
    "LimitExceeded": "This Tencent Cloud account has reached one of its limits. Check its quotas in the console.",
    "LimitExceeded.VoiceCloneMaxNumLimit": (
        "This Tencent Cloud account has reached its maximum number of cloned voices, and voices cannot be deleted "
        "through the API. Request a higher limit from Tencent Cloud support."
    ),
    "MissingParameter": "Tencent Cloud said the request was incomplete. That is a bug in the bot: please report it.",
    "MissingParameter.APIKey": (
        "Tencent Cloud asked for a TTS API key: voice cloning is not enabled for the TRTC application TRTC_SDK_APP_ID"
        " names. Enable it in the TRTC console."
    ),
    "NetworkError": (
        "Could not reach Tencent Cloud: the connection failed or timed out. Check the network, any proxy, and "
        "TRTC_ENDPOINT."
    ),
    "RequestLimitExceeded": (
        "Tencent Cloud is getting too many requests from this bot right now. Wait a minute and try again."
    ),
    "ResourceUnavailable": "Tencent Cloud's voice cloning service is unavailable right now. Try again later.",
    "ServerNetworkError": (
        "Tencent Cloud's servers answered with an error page, several times in a row. They are probably having "
        "trouble: try again in a few minutes."
    ),
    "UnauthorizedOperation": (
        "The Tencent Cloud key is not allowed to do this. Check its permissions in the CAM console."
    ),
    "UnauthorizedOperation.SdkAppId": (
        "The Tencent Cloud key may not use the TRTC application TRTC_SDK_APP_ID names: use a key and an application "
        "of the same account."
    ),
    "UnexpectedResponse": (
        "Tencent Cloud's answer was not one the bot understands, so the clone may not have worked. Check "
        "TRTC_ENDPOINT (leave it unset for Tencent Cloud itself)."
    ),
    "UnsupportedOperation": (
        "Tencent Cloud does not allow this operation for this account. Check the account's TRTC features in the TRTC "
        "console."
    ),
    "UnsupportedOperation.InternalError": (
        "Tencent Cloud could not carry out the clone because of a problem on their side. Try again in a few minutes; "
        "if it keeps failing, contact Tencent Cloud support."
    ),
    "UnsupportedOperation.NotAllowed": (
        "Voice cloning is not enabled for this Tencent Cloud account. Ask Tencent Cloud support to enable it."
    ),
    "UnsupportedOperation.VoiceCloneError": (
        "Tencent Cloud could not clone a voice from this recording. Try another one: a single speaker, steady volume,"
        " no music, 10 seconds to 3 minutes."
    ),
}


def is_slack_sentence(code: str, actual: str) -> bool:
    """`actual` (the text before " (RequestId: ...)") is what a Slack user should read for `code`."""
    return actual == SLACK_API_SENTENCES[code]
