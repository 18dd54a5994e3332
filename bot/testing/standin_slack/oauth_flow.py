"""Installs: the OAuth v2 flow (authorize page, oauth.v2.access), uninstalls and revoked tokens."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Iterable
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from bot.testing.standin_slack.common import CODE_TTL, DEFAULT_TEAM_NAME, DEFAULT_USER_ID, JsonDict
from bot.testing.standin_slack.core import StandInCore
from bot.testing.standin_slack.payloads import event_callback


class OAuth(StandInCore):
    """The app's OAuth settings, the install flow that adds workspaces, and the events of leaving one."""

    def configure_oauth(
        self,
        redirect_urls: Iterable[str],
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> None:
        """The app's Redirect URLs (OAuth & Permissions) and, optionally, other client credentials."""
        with self._cond:
            self.redirect_urls = list(redirect_urls)
            self.client_id = client_id or self.client_id
            self.client_secret = client_secret or self.client_secret

    def sign_in(self, team_id: str, *, team_name: str | None = None, user: str = DEFAULT_USER_ID) -> None:
        """Who approves the next install on the authorize page: `user` of workspace `team_id` (new or known)."""
        with self._cond:
            self._next_installer = (team_id, team_name or f"Workspace {team_id}", user)

    def deny_next_install(self) -> None:
        """The next visitor of the authorize page presses Cancel: redirected back with error=access_denied."""
        with self._cond:
            self._deny_next = True

    def uninstall(self, team_id: str) -> JsonDict:
        """The workspace removes the app: its bot tokens answer "token_revoked" from now on (reset() keeps that).

        Returns the `app_uninstalled` event_callback Slack then sends (deliver it with deliver_event).
        """
        with self._cond:
            ws = self._teams[team_id]
            self._uninstalled_tokens.update(ws.tokens)
        self._notify()
        return self.app_uninstalled_event(team_id)

    def app_uninstalled_event(self, team_id: str) -> JsonDict:
        """The `app_uninstalled` event for `team_id`, in its envelope."""
        with self._cond:
            ws = self._teams[team_id]
        event = {"type": "app_uninstalled", "event_ts": f"{time.time():.6f}"}
        return event_callback(event, team_id=team_id, api_app_id=self.app_id, bot_user_id=ws.bot_user_id)

    def tokens_revoked_event(self, team_id: str, *, bot: bool = True, users: Iterable[str] = ()) -> JsonDict:
        """`tokens_revoked` for `team_id` (revoking the bot token here too when bot=True): ids, never tokens."""
        with self._cond:
            ws = self._teams[team_id]
            if bot:
                self._uninstalled_tokens.update(ws.tokens)
        self._notify()
        event = {
            "type": "tokens_revoked",
            "tokens": {"oauth": list(users), "bot": [ws.bot_user_id] if bot else []},
            "event_ts": f"{time.time():.6f}",
        }
        return event_callback(event, team_id=team_id, api_app_id=self.app_id, bot_user_id=ws.bot_user_id)

    # OAuth install flow -------------------------------------------------------------------------------

    def _redirect_allowed(self, redirect_uri: str) -> bool:
        """Slack accepts a redirect_uri under one of the app's Redirect URLs (same scheme and host, path below)."""
        wanted = urlsplit(redirect_uri)
        for url in self.redirect_urls:
            allowed = urlsplit(url)
            if (wanted.scheme, wanted.netloc) == (allowed.scheme, allowed.netloc) and wanted.path.startswith(
                allowed.path
            ):
                return True
        return False

    async def _authorize_page(self, request: web.Request) -> web.Response:
        """slack.com/oauth/v2/authorize: the signed-in user approves at once (or cancels: deny_next_install).

        Problems with the app's own parameters show Slack's error page (no redirect: the target is untrusted).
        """
        query = request.query
        with self._cond:
            redirect_uri = query.get("redirect_uri") or None
            if query.get("client_id") != self.client_id:
                return _oauth_error_page("invalid_client_id", 400)
            if redirect_uri is not None and not self._redirect_allowed(redirect_uri):
                return _oauth_error_page("bad_redirect_uri", 400)
            target = redirect_uri or (self.redirect_urls[0] if self.redirect_urls else None)
            if target is None:
                return _oauth_error_page("bad_redirect_uri", 400)
            state = query.get("state")
            if self._deny_next:
                self._deny_next = False
                answer: dict[str, str] = {"error": "access_denied"}
            else:
                team_id, team_name, user = self._next_installer or (
                    query.get("team") or self._default_team, DEFAULT_TEAM_NAME, DEFAULT_USER_ID
                )
                self._next_installer = None
                code = f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**13)}.{secrets.token_hex(32)}"
                self._codes[code] = {
                    "team_id": team_id,
                    "team_name": team_name,
                    "user": user,
                    "redirect_uri": redirect_uri,
                    "scopes": [s for s in (query.get("scope") or "").split(",") if s],
                    "issued": time.monotonic(),
                    "used": False,
                }
                answer = {"code": code}
            if state is not None:
                answer["state"] = state
        self._notify()
        separator = "&" if urlsplit(target).query else "?"
        raise web.HTTPFound(target + separator + urlencode(answer))

    def _oauth_access(self, params: JsonDict, client: tuple[str, str] | None) -> web.Response:
        """oauth.v2.access: a code (once, within 10 minutes) for the workspace's new bot token."""
        client_id, client_secret = client or (params.get("client_id"), params.get("client_secret"))
        with self._cond:
            if client_id != self.client_id:
                error = "invalid_client_id"
            elif not hmac.compare_digest(str(client_secret or ""), self.client_secret):
                error = "bad_client_secret"
            else:
                error = None
            grant = self._codes.get(str(params.get("code") or "")) if error is None else None
            if error is None and (grant is None or grant["used"] or time.monotonic() - grant["issued"] > CODE_TTL):
                error = "invalid_code"  # Slack answers the same for an unknown, used or expired code
            if error is None and grant is not None and grant["redirect_uri"] != (params.get("redirect_uri") or None):
                error = "bad_redirect_uri"  # the redirect_uri must be the one the authorize step was given
            if error is not None or grant is None:
                return web.json_response({"ok": False, "error": error})
            grant["used"] = True
            ws = self.add_workspace(grant["team_id"], team_name=grant["team_name"])
            stored = self._teams[ws.team_id]
            stored.installer = grant["user"]
            stored.scopes = tuple(grant["scopes"])
            self.installs.append({"team_id": ws.team_id, "user": grant["user"], "scopes": list(grant["scopes"])})
        self._notify()
        return web.json_response(
            {
                "ok": True,
                "access_token": ws.bot_token,
                "token_type": "bot",
                "scope": ",".join(grant["scopes"]),
                "bot_user_id": ws.bot_user_id,
                "app_id": self.app_id,
                "team": {"id": ws.team_id, "name": ws.team_name},
                "enterprise": None,
                "authed_user": {"id": grant["user"]},
                "is_enterprise_install": False,
            }
        )


def _oauth_error_page(error: str, status: int) -> web.Response:
    """What slack.com's authorize page shows when the app's own parameters are wrong."""
    page = f"<!DOCTYPE html><html><head><title>Slack</title></head><body><h1>Oops, something went wrong.</h1>" \
        f"<p>Please let the app developer know: <code>{error}</code></p></body></html>"
    return web.Response(status=status, text=page, content_type="text/html", charset="utf-8")
