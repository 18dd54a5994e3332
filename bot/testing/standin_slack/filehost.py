"""The private file host (files.slack.com): downloads with the bot token, sign-in redirects, uploads."""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from bot.testing.standin_slack.common import FileRequest, JsonDict, _bearer
from bot.testing.standin_slack.core import StandInCore

_SIGN_IN_PAGE = """<!DOCTYPE html>
<html lang="en-US">
<head>
<meta charset="utf-8">
<title>Slack</title>
<meta name="robots" content="noindex, nofollow">
</head>
<body class="index">
<div id="page"><div id="page_contents">
<h1>Sign in to {team}</h1>
<p>Enter your email address and password.</p>
<form id="signin_form" action="/" method="post" accept-charset="UTF-8">
<input type="hidden" name="redir" value="{redir}">
<input type="email" name="email" placeholder="you@example.com">
<input type="password" name="password" placeholder="password">
<button type="submit" id="signin_btn">Sign in</button>
</form>
</div></div>
</body>
</html>
"""


class FileHost(StandInCore):
    """url_private downloads (with stalls and failures from Faults), a clip's `vtt` transcript, the sign-in page
    and upload URLs."""

    def _file_object(
        self,
        file_id: str,
        content: bytes,
        name: str,
        mimetype: str,
        filetype: str,
        user: str,
        size: int | None,
        extra: Mapping[str, Any] | None,
    ) -> JsonDict:
        now = int(time.time())
        key = f"{self.team_id}-{file_id}"
        quoted = quote(name)
        obj: JsonDict = {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": filetype.upper(),
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": len(content) if size is None else size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": True,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{self.url}/files-pri/{key}/{quoted}",
            "url_private_download": f"{self.url}/files-pri/{key}/download/{quoted}",
            "permalink": f"{self.url}/files/{user}/{file_id}/{quoted}",
            "permalink_public": f"{self.url}/{key}-{secrets.token_hex(5)}",
            "has_rich_preview": False,
            "file_access": "visible",
        }
        obj.update(copy.deepcopy(dict(extra or {})))
        return obj

    def _record_file_request(
        self, path: str, present: bool, authorized: bool, status: int, team: str | None = None
    ) -> None:
        with self._cond:
            self.file_requests.append(FileRequest(time.time(), path, present, authorized, status, team))
        self._notify()

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        team, _, file_id = request.match_info["key"].partition("-")
        token = _bearer(request) or ""
        with self._cond:
            # Only a live bot token of the workspace the file belongs to opens it.
            authorized = (
                self._team_of(token) == team
                and token not in self._dead_tokens
                and token not in self._uninstalled_tokens
            )
            stored = self._files.get(file_id)
            if stored is not None and stored["team"] != team:
                stored = None
            sender = self._team_of(token)
            stall = self._stalls.get(file_id)
            failures = self._file_failures.get(file_id)
            failure = failures.pop(0) if failures else None
        if failure is not None:
            self._record_file_request(request.path, header is not None, authorized, failure, sender)
            return web.Response(status=failure, text="Slack is having trouble", content_type="text/plain")
        if stored is None:
            self._record_file_request(request.path, header is not None, authorized, 404, sender)
            return web.Response(status=404, text="Not Found")
        if not authorized or not stored["visible"]:
            # What files.slack.com does without a valid token (or for a file the bot cannot see).
            self._record_file_request(request.path, header is not None, authorized, 302, sender)
            location = URL(f"{self.url}/?redir={quote(request.path_qs, safe='')}", encoded=True)
            raise web.HTTPFound(location)
        self._record_file_request(request.path, True, True, 200, sender)
        transcript = stored.get("vtt")
        if transcript is not None and "vtt" in stored["object"] and request.match_info["name"] == transcript[0]:
            # The clip's transcript (Content.transcribe), beside the file as Slack serves it.
            return web.Response(text=transcript[1], content_type="text/vtt", charset="utf-8")
        content: bytes = stored["content"]
        obj = stored["object"]
        headers = {"Content-Disposition": f'attachment; filename="{quote(obj["name"])}"'}
        if stall is None and not stored["chunked"]:
            return web.Response(body=content, content_type=obj["mimetype"], headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_type = obj["mimetype"]
        if stored["chunked"]:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(content)
        await response.prepare(request)
        sent = 0
        if stall is not None:
            await response.write(content[:stall])
            sent = len(content[:stall])
            with self._cond:
                self.stalled.append(file_id)
            self._notify()
            assert self._release_stalls is not None
            await self._release_stalls.wait()
        try:
            for start in range(sent, len(content), 64 * 1024):
                await response.write(content[start : start + 64 * 1024])
            await response.write_eof()
        except ConnectionResetError:
            # The client hung up mid-body, as the bot does when a file outgrows its size cap: as on Slack, fine.
            pass
        return response

    async def _sign_in_page(self, request: web.Request) -> web.Response:
        self._record_file_request(request.path, "Authorization" in request.headers, False, 200)
        page = _SIGN_IN_PAGE.format(team=self.team_domain, redir=request.query.get("redir", ""))
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _upload(self, request: web.Request) -> web.Response:
        ticket = request.match_info["ticket"]
        if request.content_type == "multipart/form-data":
            form = await request.post()
            field = next((v for v in form.values() if not isinstance(v, str)), None)
            data = field.file.read() if field is not None else b""
        else:
            data = await request.read()
        with self._cond:
            upload = self._uploads.get(ticket)
            if upload is not None:
                upload["content"] = data
        self._notify()
        if upload is None:
            return web.Response(status=404, text="Not Found", content_type="text/plain")
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")
