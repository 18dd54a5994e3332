"""The Web API (/api/{method}): auth, chat, reactions, files, views, conversations and functions (a Workflow Builder
step's completion: bot.testing.standin_slack.functions).

Each call is answered for the workspace of the token it carries, after injected failures and holds (faults).
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.testing.standin_slack.common import (
    DEFAULT_USER_ID,
    JsonDict,
    _bearer,
    _channel_object,
    _kind_from_id,
    _SlackError,
    _Throttled,
    new_ts,
)
from bot.testing.standin_slack.functions import Functions


class WebApi(Functions):
    """Slack's Web API methods, with Slack's error strings and their order of checks."""

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        token = _bearer(request) or params.pop("token", None)
        client = _basic(request)  # oauth.v2.access: slack_sdk sends the client id and secret as HTTP Basic auth
        try:
            await self._hold(method, params)
            return await self._answer_api(method, params, token, client)
        finally:
            params.pop("client_secret", None)  # never recorded
            with self._cond:
                team = self._team_of(token) if token else None
            self._record_call(method, params, team)

    async def _answer_api(
        self, method: str, params: JsonDict, token: str | None, client: tuple[str, str] | None = None
    ) -> web.Response:
        with self._cond:
            queue = self._failures.get(method)
            failure = queue.pop(0) if queue else None
        if failure is not None:
            return web.json_response(
                {"ok": False, "error": failure.error}, status=failure.status, headers=failure.headers
            )
        if method == "oauth.v2.access":  # authenticated by the app's client id and secret, not a token
            return self._oauth_access(params, client)
        handler = self._methods().get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method", "req_method": method})
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        with self._cond:
            team = self._team_of(token) if token != self.app_token else self._default_team
            dead = (self._dead_tokens.get(token) or ("token_revoked" if token in self._uninstalled_tokens else None)
                    or self._function_token_error(token))
        if team is None:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if dead is not None:
            return web.json_response({"ok": False, "error": dead})
        wants_app_token = method == "apps.connections.open"
        if method != "auth.test" and (token == self.app_token) != wants_app_token:
            return web.json_response({"ok": False, "error": "not_allowed_token_type"})
        try:
            with self._cond:
                # Every answer is the token's workspace's: its team id, bot user, files and channels.
                self._acting.team = team
                self._acting.token = token
                try:
                    result = handler(params)
                finally:
                    self._acting.team = None
                    self._acting.token = None
        except _SlackError as exc:
            return web.json_response({"ok": False, "error": exc.error, **exc.extra})
        except _Throttled as exc:
            self._notify()
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(exc.retry_after)}
            )
        self._notify()
        return web.json_response({"ok": True, **result})

    def _methods(self) -> dict[str, Callable[[JsonDict], JsonDict]]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "files.info": self._files_info,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "conversations.info": self._conversations_info,
            "apps.connections.open": self._apps_connections_open,
            "functions.completeSuccess": self._functions_complete_success,
            "functions.completeError": self._functions_complete_error,
        }

    def _auth_test(self, params: JsonDict) -> JsonDict:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": "voiceclone",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _channel(self, params: JsonDict, key: str = "channel") -> str:
        channel = params.get(key)
        if not channel or (channel not in self._channels and _kind_from_id(channel) is None):
            raise _SlackError("channel_not_found")
        if self._channel_teams.get(channel, self.team_id) != self.team_id:
            raise _SlackError("channel_not_found")  # another workspace's channel: this token cannot see it
        return channel

    def _writable(self, channel: str, member: bool = True) -> None:
        """Slack's order: an archived channel says is_archived before the bot's membership is looked at."""
        if channel in self._archived:
            raise _SlackError("is_archived")
        if member and channel in self._removed_from:
            raise _SlackError("not_in_channel")

    # chat ---------------------------------------------------------------------------------------------

    def _bot_message(self, channel: str, params: JsonDict, ts: str) -> JsonDict:
        message: JsonDict = {
            "user": self.bot_user_id,
            "type": "message",
            "ts": ts,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": params.get("text") or "",
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": "voiceclone",
                "team_id": self.team_id,
            },
        }
        blocks = _json_value(params.get("blocks"))
        if blocks:
            message["blocks"] = blocks
        thread_ts = params.get("thread_ts")
        if thread_ts:
            message["thread_ts"] = thread_ts
            parent = self._messages.get(channel, {}).get(thread_ts)
            message["parent_user_id"] = parent["user"] if parent else DEFAULT_USER_ID
            if parent is not None:
                parent.setdefault("thread_ts", thread_ts)
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["latest_reply"] = ts
        metadata = _json_value(params.get("metadata"))
        if metadata:
            message["metadata"] = metadata
        return message

    def _chat_post_message(self, params: JsonDict) -> JsonDict:
        # Posting to a user id posts into the app's DM with that user and answers with the D... id.
        target = params.get("channel")
        user = target if isinstance(target, str) and _is_user_id(target) else None
        channel = self.dm_channel(user) if user else self._channel(params)
        self._take_post_token(channel)
        self._writable(channel)
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _SlackError("no_text")
        ts = new_ts()
        message = self._bot_message(channel, params, ts)
        self._messages.setdefault(channel, {})[ts] = message
        return {"channel": channel, "ts": ts, "message": copy.deepcopy(message)}

    def _chat_update(self, params: JsonDict) -> JsonDict:
        channel = self._channel(params)
        self._writable(channel)
        ts = params.get("ts") or ""
        message = self._messages.get(channel, {}).get(ts)
        if message is None:
            raise _SlackError("message_not_found")
        if message.get("user") != self.bot_user_id:
            raise _SlackError("cant_update_message")
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _SlackError("no_text")
        if "text" in params:
            message["text"] = params["text"] or ""
        if "blocks" in params:
            message["blocks"] = _json_value(params["blocks"]) or []
        message["edited"] = {"user": self.bot_user_id, "ts": new_ts()}
        return {"channel": channel, "ts": ts, "text": message["text"], "message": copy.deepcopy(message)}

    def _chat_post_ephemeral(self, params: JsonDict) -> JsonDict:
        channel = self._channel(params)
        self._writable(channel, member=False)  # Slack documents is_archived, not not_in_channel, here
        if not params.get("user"):
            raise _SlackError("user_not_in_channel")
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _SlackError("no_text")
        ts = new_ts()
        self._ephemerals.append(
            {
                "channel": channel,
                "user": params["user"],
                "text": params.get("text") or "",
                "blocks": _json_value(params.get("blocks")) or [],
                "thread_ts": params.get("thread_ts"),
                "message_ts": ts,
            }
        )
        return {"message_ts": ts}

    # reactions ----------------------------------------------------------------------------------------

    def _reaction_target(self, params: JsonDict) -> tuple[str, str, str]:
        channel = self._channel(params)
        self._writable(channel)
        ts, name = params.get("timestamp"), params.get("name")
        if not ts:
            raise _SlackError("no_item_specified")
        if not name:
            raise _SlackError("invalid_name")
        if (channel, ts) in self._deleted:
            raise _SlackError("message_not_found")
        # Messages posted by people before the stand-in saw them are assumed to exist.
        return channel, ts, name.strip(":")

    def _reactions_add(self, params: JsonDict) -> JsonDict:
        channel, ts, name = self._reaction_target(params)
        names = self._reactions.setdefault((channel, ts), [])
        if name in names:
            raise _SlackError("already_reacted")
        names.append(name)
        return {}

    def _reactions_remove(self, params: JsonDict) -> JsonDict:
        channel, ts, name = self._reaction_target(params)
        names = self._reactions.get((channel, ts), [])
        if name not in names:
            raise _SlackError("no_reaction")
        names.remove(name)
        return {}

    # files --------------------------------------------------------------------------------------------

    def _files_info(self, params: JsonDict) -> JsonDict:
        stored = self._files.get(params.get("file") or "")
        if stored is None or not stored["visible"] or stored["team"] != self.team_id:
            raise _SlackError("file_not_found")
        return {
            "file": copy.deepcopy(stored["object"]),
            "comments": [],
            "response_metadata": {"next_cursor": ""},
        }

    def _files_get_upload_url(self, params: JsonDict) -> JsonDict:
        filename, length = params.get("filename"), params.get("length")
        if not filename or length in (None, ""):
            raise _SlackError("invalid_arguments")
        ticket = secrets.token_urlsafe(16)
        file_id = "F" + secrets.token_hex(5).upper()
        self._uploads[ticket] = {
            "file_id": file_id,
            "filename": filename,
            "length": int(length),
            "content": None,
        }
        return {"upload_url": f"{self.url}/upload/v1/{ticket}", "file_id": file_id}

    def _files_complete_upload(self, params: JsonDict) -> JsonDict:
        items = _json_value(params.get("files"))
        if not isinstance(items, list) or not items:
            raise _SlackError("invalid_arguments")
        by_id = {u["file_id"]: u for u in self._uploads.values()}
        channel = params.get("channel_id") or (params.get("channels") or "").split(",")[0] or None
        if channel is not None:
            channel = self._channel({"channel": channel})
            self._writable(channel)
        done = []
        for item in items:
            upload = by_id.get(item.get("id", ""))
            if upload is None or upload["content"] is None:
                raise _SlackError("file_not_found")
            done.append((item, upload))
        objects = []
        for item, upload in done:
            name = upload["filename"]
            obj = self._file_object(
                upload["file_id"], upload["content"], name, _guess_mimetype(name), _filetype(name),
                self.bot_user_id, None, None,
            )  # fmt: skip
            obj["title"] = item.get("title") or name
            self._files[obj["id"]] = {
                "object": obj,
                "content": upload["content"],
                "visible": True,
                "chunked": False,
                "team": self.team_id,
            }
            objects.append(obj)
        if channel is not None:
            ts = new_ts()
            message = self._bot_message(channel, {**params, "text": params.get("initial_comment") or ""}, ts)
            message.update({"subtype": "file_share", "upload": True, "files": copy.deepcopy(objects)})
            self._messages.setdefault(channel, {})[ts] = message
            for obj in objects:
                where = "private" if _kind_from_id(channel) in ("private", "im", "mpim") else "public"
                share = {"ts": ts, "channel_name": channel, "reply_count": 0}
                if params.get("thread_ts"):
                    share["thread_ts"] = params["thread_ts"]
                obj["shares"] = {where: {channel: [share]}}
        if self.brief_upload_answers:
            return {"files": [{"id": obj["id"], "title": obj["title"]} for obj in objects]}
        return {"files": copy.deepcopy(objects)}

    # views --------------------------------------------------------------------------------------------

    def _views_open(self, params: JsonDict) -> JsonDict:
        view = _json_value(params.get("view"))
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise _SlackError("invalid_arguments")
        self._exchange_trigger(params.get("trigger_id"))
        view_id = "V" + secrets.token_hex(5).upper()
        stored = {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "blocks": [],
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "clear_on_close": False,
            "notify_on_close": False,
            **copy.deepcopy(view),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": self.app_id,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self.views[view_id] = stored
        return {"view": copy.deepcopy(stored)}

    def _views_update(self, params: JsonDict) -> JsonDict:
        view = _json_value(params.get("view"))
        if not isinstance(view, dict):
            raise _SlackError("invalid_arguments")
        view_id, external_id = params.get("view_id"), params.get("external_id")
        if not view_id and not external_id:
            raise _SlackError("invalid_arguments")
        stored = self.views.get(view_id or "") or next(
            (v for v in self.views.values() if external_id and v.get("external_id") == external_id), None
        )
        if stored is None:
            raise _SlackError("not_found")
        if params.get("hash") and params["hash"] != stored["hash"]:
            raise _SlackError("hash_conflict")
        keep = {
            k: stored[k]
            for k in ("id", "team_id", "root_view_id", "app_id", "app_installed_team_id", "bot_id")
        }
        stored.clear()
        stored.update({"blocks": [], "private_metadata": "", "callback_id": "", "external_id": ""})
        stored.update(copy.deepcopy(view))
        stored.update(keep)
        stored.update({"state": {"values": {}}, "hash": f"{int(time.time())}.{secrets.token_hex(4)}"})
        stored.setdefault("previous_view_id", None)
        return {"view": copy.deepcopy(stored)}

    def _views_publish(self, params: JsonDict) -> JsonDict:
        view = _json_value(params.get("view"))
        user = params.get("user_id")
        if not isinstance(view, dict) or view.get("type") != "home" or not user:
            raise _SlackError("invalid_arguments")
        if len(view.get("blocks") or []) > 100:
            raise _SlackError("invalid_blocks")
        view_id = (self.home_views.get(user) or {}).get("id") or "V" + secrets.token_hex(5).upper()
        stored = {"id": view_id, "team_id": self.team_id, "app_id": self.app_id, "bot_id": self.bot_id,
                  "state": {"values": {}}, "hash": f"{int(time.time())}.{secrets.token_hex(4)}", **copy.deepcopy(view)}
        self.home_views[user] = stored
        return {"view": copy.deepcopy(stored)}

    # conversations ------------------------------------------------------------------------------------

    def _conversations_info(self, params: JsonDict) -> JsonDict:
        channel_id = self._channel(params)
        channel = copy.deepcopy(
            self._channels.get(channel_id)
            or _channel_object(
                channel_id, _kind_from_id(channel_id) or "channel", None, False, DEFAULT_USER_ID, self.team_id
            )
        )
        channel["is_archived"] = channel_id in self._archived
        if "is_member" in channel:
            channel["is_member"] = channel_id not in self._removed_from
        return {"channel": channel}


def _basic(request: web.Request) -> tuple[str, str] | None:
    """(client_id, client_secret) from an HTTP Basic Authorization header, else None."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, colon, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    return (login, password) if colon else None


async def _read_params(request: web.Request) -> JsonDict:
    """Merge query and body like Slack: form, multipart or JSON (JSON needs the token in the header)."""
    params: JsonDict = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            body.pop("token", None)  # Slack ignores a token inside a JSON body
            params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            params[key] = value if isinstance(value, str) else value.file.read()
    return params


_JSON_FIELDS = ("blocks", "attachments", "view", "files", "metadata")


def _is_user_id(value: str) -> bool:
    return len(value) > 1 and value[0] in "UW" and value.isalnum() and value == value.upper()


def _json_value(value: Any) -> Any:
    if isinstance(value, str | bytes) and value[:1] in ("[", "{", b"[", b"{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


_MIMETYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "webm": "audio/webm",
    "flac": "audio/flac",
    "mp4": "video/mp4",
    "txt": "text/plain",
    "json": "application/json",
    "png": "image/png",
    "pdf": "application/pdf",
}


def _filetype(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return {"txt": "text", "": "binary"}.get(ext, ext)


def _guess_mimetype(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _MIMETYPES.get(ext, "application/octet-stream")
