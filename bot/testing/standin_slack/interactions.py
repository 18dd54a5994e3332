"""Interactivity: trigger_ids and response_urls, and the payloads that carry them.

Slash commands, modal submissions, button presses (in messages and on the Home tab) and message shortcuts, built
with a live trigger_id and a response_url served here, so the app's answers can be checked against Slack's rules.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bot.testing.standin_slack.common import (
    DEFAULT_APP_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_TEAM_DOMAIN,
    DEFAULT_TEAM_ID,
    DEFAULT_USER_ID,
    RESPONSE_URL_TTL,
    RESPONSE_URL_USES,
    TRIGGER_TTL,
    VERIFICATION_TOKEN,
    JsonDict,
    ResponseURLPost,
    _SlackError,
    _trigger_id,
)
from bot.testing.standin_slack.core import StandInCore
from bot.testing.standin_slack.payloads import app_home_opened_event, block_actions, slash_command, view_submission


def message_action(
    message: Mapping[str, Any],
    channel_id: str,
    callback_id: str,
    user: str = DEFAULT_USER_ID,
    *,
    trigger_id: str | None = None,
    response_url: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
    user_name: str = "user",
    channel_name: str | None = None,
) -> JsonDict:
    """The interactivity payload of a message shortcut (a message's "More actions" menu), as Slack's documentation
    shows it: type `message_action`, the shortcut's callback_id, the whole message, its channel, the user, a
    trigger_id (3 s to open a modal) and a response_url."""
    return {
        "type": "message_action",
        "token": VERIFICATION_TOKEN,
        "action_ts": f"{time.time():.6f}",
        "team": {"id": team_id, "domain": team_domain},
        "user": {"id": user, "username": user_name, "name": user_name, "team_id": team_id},
        "channel": {"id": channel_id, "name": channel_name or channel_id.lower()},
        "is_enterprise_install": False,
        "enterprise": None,
        "api_app_id": api_app_id,
        "callback_id": callback_id,
        "trigger_id": trigger_id or _trigger_id(),
        "response_url": response_url or f"https://hooks.slack.com/app/{team_id}/{secrets.token_hex(6)}",
        "message_ts": message.get("ts"),
        "message": copy.deepcopy(dict(message)),
    }


class Interactions(StandInCore):
    """Payloads of people interacting with the app, with live trigger_ids and response_urls served here."""

    # trigger_ids and response_urls --------------------------------------------------------------------

    def issue_trigger_id(self, age: float = 0.0) -> str:
        """A trigger_id views.open accepts once within 3 s; `age` backdates it (age=4: already expired)."""
        trigger_id = _trigger_id()
        with self._cond:
            self._triggers[trigger_id] = {"issued": time.monotonic() - age, "used": False}
        return trigger_id

    def _exchange_trigger(self, trigger_id: str | None) -> None:
        if not trigger_id:
            raise _SlackError("invalid_arguments")
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            raise _SlackError("invalid_trigger_id")
        if trigger["used"]:
            raise _SlackError("exchanged_trigger_id")
        if time.monotonic() - trigger["issued"] > TRIGGER_TTL:
            raise _SlackError("expired_trigger_id")
        trigger["used"] = True

    def issue_response_url(self) -> str:
        """A response_url served by the stand-in; POSTs to it are recorded in `.responses`."""
        path = f"/commands/{self.team_id}/{next(self._ids)}/{secrets.token_hex(12)}"
        with self._cond:
            self._response_urls[path] = {"issued": time.monotonic(), "uses": 0}
        return self.url + path

    async def _response_url(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            payload: Any = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        with self._cond:
            issued = self._response_urls.get(request.path)
            if issued is None:
                status, text = 404, "no_service"
            elif time.monotonic() - issued["issued"] > RESPONSE_URL_TTL:
                status, text = 404, "expired_url"
            elif issued["uses"] >= RESPONSE_URL_USES:
                status, text = 404, "used_url"
            else:
                issued["uses"] += 1
                status, text = 200, "ok"
            self.responses.append(ResponseURLPost(time.time(), self.url + request.path, payload, status))
        self._notify()
        return web.Response(status=status, text=text, content_type="text/plain")

    # what people do -----------------------------------------------------------------------------------

    def slash_command(
        self,
        command: str = "/clone",
        text: str = "",
        user_id: str = DEFAULT_USER_ID,
        channel_id: str = DEFAULT_CHANNEL_ID,
        **fields: Any,
    ) -> dict[str, str]:
        """slash_command() with a live trigger_id and a response_url served here."""
        fields.setdefault("trigger_id", self.issue_trigger_id())
        fields.setdefault("response_url", self.issue_response_url())
        return slash_command(
            command,
            text,
            user_id,
            channel_id,
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.app_id,
            **fields,
        )

    def view_submission(
        self,
        view: Mapping[str, Any] | str,
        user: str = DEFAULT_USER_ID,
        values: Mapping[str, Any] | None = None,
    ) -> JsonDict:
        """view_submission() for a view opened here (by id or object), with a live trigger_id."""
        if isinstance(view, str):
            with self._cond:
                view = copy.deepcopy(self.views[view])
        return view_submission(
            view,
            user,
            values,
            trigger_id=self.issue_trigger_id(),
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.app_id,
        )

    def press(self, channel_id: str, message_ts: str, action_id: str, user: str = DEFAULT_USER_ID) -> JsonDict:
        """block_actions() for a button in a message the bot posted here, as `user` presses it now."""
        with self._cond:
            message = copy.deepcopy(self._messages[channel_id][message_ts])
        return block_actions(
            message,
            channel_id,
            action_id,
            user,
            trigger_id=self.issue_trigger_id(),
            response_url=self.issue_response_url(),
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.app_id,
        )

    def message_shortcut(
        self, channel_id: str, message_ts: str, callback_id: str, user: str = DEFAULT_USER_ID, user_name: str = "user"
    ) -> JsonDict:
        """message_action() for a message stored here (posted by a person or the bot), as `user` picks the shortcut
        `callback_id` from its menu now; deliver it with kind="interactive"."""
        with self._cond:
            message = copy.deepcopy(self._messages[channel_id][message_ts])
        return message_action(
            message,
            channel_id,
            callback_id,
            user,
            trigger_id=self.issue_trigger_id(),
            response_url=self.issue_response_url(),
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.app_id,
            user_name=user_name,
        )

    def app_home_opened(self, user: str = DEFAULT_USER_ID) -> JsonDict:
        """app_home_opened for `user`, addressed to this workspace."""
        return app_home_opened_event(user, team_id=self.team_id, api_app_id=self.app_id, bot_user_id=self.bot_user_id)

    def press_home(self, user: str, action_id: str, value: str) -> JsonDict:
        """block_actions for a button on `user`'s Home tab (the button is found by action_id and value)."""
        with self._cond:
            view = copy.deepcopy(self.home_views[user])
        for block in view.get("blocks") or []:
            for element in block.get("elements") or []:
                if element.get("action_id") == action_id and element.get("value") == value:
                    body = block_actions({"blocks": [block]}, "", action_id, user, trigger_id=self.issue_trigger_id(),
                                         team_id=self.team_id, team_domain=self.team_domain, api_app_id=self.app_id)
                    body["container"] = {"type": "view", "view_id": view["id"]}
                    body.pop("channel", None)
                    body.pop("message", None)
                    body["view"] = view
                    return body
        raise ValueError(f"no {action_id} button for {value!r} on {user}'s Home tab")
