"""A local Slack on 127.0.0.1: Web API, private files, Socket Mode, signed event delivery and Workflow Builder steps
(`function_executed`, then functions.completeSuccess / completeError: bot.testing.standin_slack.functions).

Shapes and error strings follow Slack's documentation and real payloads (see /work/shared/FIELD-NOTES.md).
Where Slack's behaviour is undocumented the stand-in picks the plausible answer and says so in a comment.

    with SlackStandIn() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        file = slack.add_file(b"...", "audio_message.m4a", "audio/mp4", "m4a", subtype="slack_audio")
        body = slack.user_message("C0TEST", files=[file])  # an event_callback body, stored as a message
        post_signed(app_url, body, signing_secret=slack.signing_secret)  # HTTP mode
        slack.send_envelope("events_api", body)  # Socket Mode

Many workspaces: the constructor's is the default; `add_workspace()` or the OAuth install flow
(`GET /oauth/v2/authorize`, then `oauth.v2.access`) adds more, each with its own bot token. Every Web API call and
file download is answered for the workspace of the token it carries; `with slack.workspace(team_id):` makes the
test-side helpers (add_file, user_message, slash_command...) act in another workspace; `uninstall(team_id)`
revokes its tokens and returns the `app_uninstalled` event Slack sends.
"""

from __future__ import annotations

from bot.testing.standin_slack.common import (
    CODE_TTL,
    DEFAULT_APP_ID,
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_ID,
    DEFAULT_BOT_TOKEN,
    DEFAULT_BOT_USER_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_SIGNING_SECRET,
    DEFAULT_TEAM_DOMAIN,
    DEFAULT_TEAM_ID,
    DEFAULT_TEAM_NAME,
    DEFAULT_USER_ID,
    OUTAGE_MODES,
    RESPONSE_URL_TTL,
    RESPONSE_URL_USES,
    SLACK_USER_AGENT,
    TRIGGER_TTL,
    VERIFICATION_TOKEN,
    Call,
    FileRequest,
    JsonDict,
    OutageRequest,
    ResponseURLPost,
    Workspace,
    new_event_id,
    new_ts,
)
from bot.testing.standin_slack.content import Content
from bot.testing.standin_slack.faults import Faults
from bot.testing.standin_slack.filehost import FileHost
from bot.testing.standin_slack.functions import FUNCTION_TOKEN_TTL, function_executed_event, user_context
from bot.testing.standin_slack.interactions import Interactions, message_action
from bot.testing.standin_slack.oauth_flow import OAuth
from bot.testing.standin_slack.payloads import (
    app_home_opened_event,
    block_actions,
    event_callback,
    file_shared_event,
    message_event,
    post_signed,
    post_signed_async,
    sign,
    slash_command,
    view_submission,
)
from bot.testing.standin_slack.socket_mode import SocketMode
from bot.testing.standin_slack.webapi import WebApi


class SlackStandIn(WebApi, FileHost, OAuth, SocketMode, Interactions, Content, Faults):
    """Slack's Web API, file host and Socket Mode on one loopback port, in its own thread and event loop.

    Each base is one concern over the shared state of StandInCore (bot.testing.standin_slack.core): one object, so a
    fault injected, a file added or a workspace uninstalled is seen at once by every endpoint.
    """


__all__ = [
    "CODE_TTL",
    "DEFAULT_APP_ID",
    "DEFAULT_APP_TOKEN",
    "DEFAULT_BOT_ID",
    "DEFAULT_BOT_TOKEN",
    "DEFAULT_BOT_USER_ID",
    "DEFAULT_CHANNEL_ID",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_SIGNING_SECRET",
    "DEFAULT_TEAM_DOMAIN",
    "DEFAULT_TEAM_ID",
    "DEFAULT_TEAM_NAME",
    "DEFAULT_USER_ID",
    "FUNCTION_TOKEN_TTL",
    "OUTAGE_MODES",
    "RESPONSE_URL_TTL",
    "RESPONSE_URL_USES",
    "SLACK_USER_AGENT",
    "TRIGGER_TTL",
    "VERIFICATION_TOKEN",
    "Call",
    "FileRequest",
    "JsonDict",
    "OutageRequest",
    "ResponseURLPost",
    "SlackStandIn",
    "Workspace",
    "app_home_opened_event",
    "block_actions",
    "event_callback",
    "file_shared_event",
    "function_executed_event",
    "message_action",
    "message_event",
    "new_event_id",
    "new_ts",
    "post_signed",
    "post_signed_async",
    "sign",
    "slash_command",
    "user_context",
    "view_submission",
]
