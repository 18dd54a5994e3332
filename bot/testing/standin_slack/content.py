"""What people put in a workspace: channels, DMs, files and messages (test-side, in the acting workspace)."""

from __future__ import annotations

import copy
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from bot.testing.standin_slack.common import DEFAULT_USER_ID, JsonDict, _channel_object, _kind_from_id
from bot.testing.standin_slack.core import StandInCore
from bot.testing.standin_slack.payloads import message_event
from bot.voice.transcript import parse_vtt

# How much of a transcript a clip's `transcription.preview` shows (Slack's own cut is not documented).
PREVIEW_CHARS = 150


class Content(StandInCore):
    """Channels, files and people's messages, stored where the Web API and the file host find them."""

    def add_channel(
        self,
        channel_id: str,
        *,
        name: str | None = None,
        kind: str | None = None,
        is_ext_shared: bool = False,
        user: str = DEFAULT_USER_ID,
    ) -> JsonDict:
        """Register a channel for conversations.info; kind: channel, private, im, mpim (default: by id)."""
        kind = kind or _kind_from_id(channel_id)
        if kind is None:
            raise ValueError(f"cannot tell the kind of channel {channel_id!r}")
        channel = _channel_object(channel_id, kind, name, is_ext_shared, user, self.team_id)
        with self._cond:
            self._channels[channel_id] = channel
            self._channel_teams[channel_id] = self.team_id
        return copy.deepcopy(channel)

    def dm_channel(self, user: str) -> str:
        """The app's DM ("im") channel with a user: created on first use, the same id every time (D...)."""
        with self._cond:
            channel = self._dms.get((self.team_id, user))
            if channel is None:
                digest = hashlib.sha256(f"{self.team_id}:{user}".encode()).hexdigest()
                channel = "D" + digest[:10].upper()
                self._dms[(self.team_id, user)] = channel
                self._channel_teams[channel] = self.team_id
                self._channels.setdefault(channel, _channel_object(channel, "im", None, False, user, self.team_id))
            return channel

    def add_file(
        self,
        content: bytes,
        name: str,
        mimetype: str,
        filetype: str,
        *,
        user: str = DEFAULT_USER_ID,
        subtype: str | None = None,
        slack_connect_stub: bool = False,
        size: int | None = None,
        duration_ms: int | None = None,
        visible_to_bot: bool = True,
        chunked: bool = False,
        extra: Mapping[str, Any] | None = None,
        transcript: str | None = None,
        transcript_locale: str = "en-US",
        transcript_status: str = "complete",
    ) -> JsonDict:
        """Store a private file; returns the file object as an event would carry it.

        size: the announced size (default: the real length). slack_connect_stub: the event carries only
        Slack Connect's stub and files.info reveals the rest. visible_to_bot=False: files.info says
        file_not_found and the file host redirects even with the right token. chunked: served without a
        Content-Length (chunked transfer encoding), so only the bytes reveal the real size. transcript: Slack's
        transcript of a clip as WebVTT, served from the file host (see transcribe()); transcript_status
        "processing": Slack is still at it, until transcribe() is called again.
        """
        file_id = "F" + secrets.token_hex(5).upper()
        obj = self._file_object(file_id, content, name, mimetype, filetype, user, size, extra)
        if subtype is not None:
            obj["subtype"] = subtype
        if subtype in ("slack_audio", "slack_video"):
            obj["media_display_type"] = subtype.removeprefix("slack_")
        if duration_ms is not None:
            obj["duration_ms"] = duration_ms
        with self._cond:
            self._files[file_id] = {
                "object": obj,
                "content": bytes(content),
                "visible": visible_to_bot,
                "chunked": chunked,
                "team": self.team_id,
            }
        if transcript is not None:
            obj = self.transcribe(file_id, transcript, locale=transcript_locale, status=transcript_status)
        if slack_connect_stub:
            # The exact stub Slack sends to Events API apps for files shared in Slack Connect channels.
            return {
                "id": file_id,
                "mode": "file_access",
                "file_access": "check_file_info",
                "created": 0,
                "timestamp": 0,
                "user": "",
            }
        return copy.deepcopy(obj)

    def transcribe(self, file_id: str, vtt: str, *, locale: str = "en-US", status: str = "complete") -> JsonDict:
        """Give a stored file Slack's transcript of a clip (WebVTT text), as files.info then tells it: `transcription`
        with status, locale and a preview, and once complete `vtt`, a private URL on the file host beside the file's
        own (served only with the file's workspace's bot token, like url_private). Returns the file object.
        Status "processing": what a clip says while Slack is still transcribing (no preview, no vtt yet)."""
        with self._cond:
            stored = self._files[file_id]
            obj = stored["object"]
            name = PurePosixPath(str(obj.get("name") or "clip")).stem or "clip"
            stored["vtt"] = (f"{name}.vtt", vtt)
            if status == "complete":
                words = " ".join(cue.text for cue in parse_vtt(vtt))
                obj["transcription"] = {
                    "status": "complete",
                    "locale": locale,
                    "preview": {"content": words[:PREVIEW_CHARS], "has_more": len(words) > PREVIEW_CHARS},
                }
                obj["vtt"] = f"{self.url}/files-pri/{stored['team']}-{file_id}/{quote(name)}.vtt"
            else:
                obj["transcription"] = {"status": status}
                obj.pop("vtt", None)
            return copy.deepcopy(obj)

    def user_message(
        self,
        channel: str,
        user: str = DEFAULT_USER_ID,
        files: Iterable[Mapping[str, Any]] = (),
        text: str = "",
        thread_ts: str | None = None,
        channel_type: str | None = None,
        subtype: str | None = "file_share",
        event_id: str | None = None,
    ) -> JsonDict:
        """A person posts (files and/or text): stored as a message here and returned as an event_callback."""
        kind = _kind_from_id(channel) or "channel"
        channel_type = channel_type or {"private": "group"}.get(kind, kind)
        body = message_event(
            channel,
            user,
            files,
            text,
            thread_ts=thread_ts,
            channel_type=channel_type,
            subtype=subtype if files or subtype != "file_share" else None,
            event_id=event_id,
            team_id=self.team_id,
            api_app_id=self.app_id,
            bot_user_id=self.bot_user_id,
        )
        stored = {k: v for k, v in body["event"].items() if k not in ("channel_type", "event_ts")}
        with self._cond:
            self._channel_teams.setdefault(channel, self.team_id)
            self._messages.setdefault(channel, {})[stored["ts"]] = copy.deepcopy(stored)
            for file in files:
                self._record_share(str(file.get("id")), channel, kind, stored["ts"], thread_ts)
        self._notify()
        return body

    def _record_share(self, file_id: str, channel: str, kind: str, ts: str, thread_ts: str | None) -> None:
        """Where a file was shared, as files.info reports it: channels/groups/ims lists and `shares`."""
        stored = self._files.get(file_id)
        if stored is None:
            return
        obj = stored["object"]
        listing = {"channel": "channels", "private": "groups", "mpim": "groups", "im": "ims"}.get(kind, "channels")
        if channel not in obj.setdefault(listing, []):
            obj[listing].append(channel)
        visibility = "public" if kind == "channel" else "private"
        share: JsonDict = {"ts": ts, "channel_name": channel.lower(), "team_id": self.team_id, "reply_count": 0}
        if thread_ts:
            share["thread_ts"] = thread_ts
        obj.setdefault("shares", {}).setdefault(visibility, {}).setdefault(channel, []).append(share)
