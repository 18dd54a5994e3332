"""Installing into many workspaces: Bolt's OAuth flow at /slack/install and /slack/oauth_redirect.

The flow exchanges the code with oauth.v2.access on SLACK_API_URL and keeps the installation in DATABASE_URL
(bot.store.installations); each request is then served with its workspace's token (Bolt's authorize), and every call
outside a request asks bot.slack.workspaces, which looks the token up in the same store.
"""

from __future__ import annotations

import html
import logging
from urllib.parse import urlsplit, urlunsplit

from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_callback_options import AsyncCallbackOptions, AsyncFailureArgs, AsyncSuccessArgs
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings
from bot.store.installations import STATE_SECONDS, Installations

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
# manifest.yml's oauth_config.scopes.bot (tests/test_oauth.py checks they are the same): the manifest is not
# shipped in the image, and an install must ask for exactly what the app was configured with.
BOT_SCOPES = (
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
    "files:read",
    "files:write",
    "chat:write",
    "commands",
    "reactions:write",
)

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:36em;margin:4em auto;
padding:0 1em;line-height:1.5}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""

# Why an install did not complete, in words for the person who clicked (Bolt's reasons, and Slack's `error`).
_FAILURES = {
    "access_denied": "The installation was cancelled in Slack.",
    "invalid_browser": "This browser did not start the installation (or its cookie expired).",
    "invalid_state": "The installation link expired or was already used.",
    "missing_code": "Slack did not send an authorization code.",
    "invalid_code": "Slack did not accept the authorization code (it may have expired or been used).",
    "storage_error": "The installation could not be saved. Please try again in a moment.",
}


def authorization_url(api_url: str) -> str:
    """Where Slack's authorize page is, from SLACK_API_URL: the `api/` path replaced by `oauth/v2/authorize`.

    https://slack.com/api/ gives https://slack.com/oauth/v2/authorize (Slack's own); the stand-in's
    http://127.0.0.1:PORT/api/ gives http://127.0.0.1:PORT/oauth/v2/authorize, where it serves its authorize page.
    """
    parts = urlsplit(api_url)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    base = path[: -len("api/")] if path.endswith("/api/") else path
    return urlunsplit((parts.scheme, parts.netloc, base + "oauth/v2/authorize", "", ""))


def _page(title: str, body: str, status: int, settings: AsyncOAuthSettings) -> BoltResponse:
    return BoltResponse(
        status=status,
        body=_PAGE.format(title=html.escape(title), body=body),
        # The state cookie has done its job either way.
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Set-Cookie": settings.state_utils.build_set_cookie_for_deletion(),
        },
    )


async def handle_install_success(args: AsyncSuccessArgs) -> BoltResponse:
    """The page after a completed install: which workspace, and what to do next."""
    installation = args.installation
    team = installation.team_name or installation.team_id or "your workspace"
    log.info("installed into workspace %s (%s)", installation.team_id, installation.team_name)
    body = (
        f"<p>Voice Clone is now installed in <b>{html.escape(team)}</b>.</p>"
        "<p>Invite <code>@voiceclone</code> to a channel and drop a recording of one person speaking "
        "(10 seconds to 3 minutes) there, send it to the bot in a DM, or run <code>/clone help</code>.</p>"
        "<p>You can close this page.</p>"
    )
    return _page("Installed", body, 200, args.settings)


async def handle_install_failure(args: AsyncFailureArgs) -> BoltResponse:
    """The page after a failed install: why, in words, and a link to start again."""
    reason = _FAILURES.get(args.reason, "Slack reported an error.")
    log.warning("an install did not complete: %s", args.reason)
    body = (
        f"<p>{html.escape(reason)}</p>"
        f'<p><a href="{INSTALL_PATH}">Start the installation again</a>.</p>'
        f"<p><small>Reason code: <code>{html.escape(args.reason)}</code></small></p>"
    )
    return _page("The installation did not complete", body, args.suggested_status_code, args.settings)


def oauth_flow(settings: Settings, installations: Installations, client: AsyncWebClient) -> AsyncOAuthFlow:
    """Bolt's OAuth flow for this app; `client` (no token) calls oauth.v2.access and auth.test on SLACK_API_URL."""
    assert settings.slack_client_id is not None and settings.slack_client_secret is not None
    oauth_settings = AsyncOAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret.get(),
        scopes=list(BOT_SCOPES),
        user_scopes=[],  # the bot acts as itself; no user tokens are asked for or kept
        install_path=INSTALL_PATH,
        redirect_uri_path=REDIRECT_PATH,
        authorization_url=authorization_url(settings.slack_api_url),
        installation_store=installations.store,
        installation_store_bot_only=True,
        state_store=installations.states,
        state_expiration_seconds=STATE_SECONDS,
        callback_options=AsyncCallbackOptions(success=handle_install_success, failure=handle_install_failure),
        logger=log,
    )
    return AsyncOAuthFlow(client=client, logger=log, settings=oauth_settings)


def authorize(
    settings: Settings, installations: Installations, client: AsyncWebClient
) -> AsyncInstallationStoreAuthorize:
    """How a request finds its workspace's token: the bots table (one query), auth.test once per token.

    Bolt's default looks the installation up twice per request and calls auth.test on every one (a burst of 200
    shares made 200 calls); the cache is keyed by token, and only consulted after the store returned that token,
    so an uninstalled workspace (rows deleted) is never authorized from it.
    """
    assert settings.slack_client_id is not None and settings.slack_client_secret is not None
    return AsyncInstallationStoreAuthorize(
        logger=log,
        installation_store=installations.store,
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret.get(),
        bot_only=True,
        cache_enabled=True,
        client=client,
    )
