"""The fetch stage: a Slack file object resolved and downloaded, with "Slack is down" told apart from "no".

A failure that says Slack is unreachable or failing (connection errors, 5xx, 429, an HTML error page) becomes
`Waiting`, which makes the job wait and retry instead of failing; anything else (a hidden file, a sign-in page,
a foreign host) is the user's answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import DownloadError, FileAccessError, UnsafeURLError
from bot.settings import Settings
from bot.slack.files import MAX_TRANSCRIPT_BYTES, download_file, download_text, file_info, resolve_file
from bot.slack.workspaces import Workspaces

T = TypeVar("T")

# files.info errors that mean "try later"; slack_sdk reports an HTML error page as no error ("unknown_error").
_TRANSIENT_FILES_INFO = frozenset(
    {"unknown_error", "internal_error", "fatal_error", "ratelimited", "service_unavailable", "request_timeout"}
)


class Waiting(Exception):
    """A stage could not run because Slack or Tencent is unreachable; the job is retried later."""

    def __init__(self, stage: str, cause: BaseException):
        self.stage = stage
        self.cause = cause
        super().__init__(stage)


def slack_down(exc: DownloadError) -> bool:
    """True when a failed fetch says Slack is unreachable or failing, not that the file cannot be had."""
    if isinstance(exc, FileAccessError | UnsafeURLError):
        return False
    if exc.status is not None:
        return exc.status >= 500 or exc.status == 429
    if exc.reason.startswith("files.info failed: "):
        return exc.reason.split(": ", 1)[1] in _TRANSIENT_FILES_INFO
    return exc.reason.startswith(("the download timed out", "the download failed"))


class Fetcher:
    """Resolves and downloads Slack files with the job's workspace token; raises Waiting while Slack is down."""

    def __init__(
        self, settings: Settings, workspaces: Workspaces, http: httpx.AsyncClient, temp_dir: Path, team_id: str | None
    ):
        self.settings = settings
        self.workspaces = workspaces
        self.http = http
        self.temp_dir = temp_dir
        self.team_id = team_id

    async def resolve(self, file: dict[str, Any]) -> dict[str, Any]:
        """The full file object (files.info for a stub or a bare id)."""
        return await self._files_info(resolve_file, file)

    async def refresh(self, file: dict[str, Any]) -> dict[str, Any]:
        """The file object as files.info tells it now (a clip's transcript may have finished since the share)."""
        return await self._files_info(file_info, file)

    async def download(self, file: dict[str, Any]) -> Path:
        """Download a resolved file into the temporary folder; the caller deletes it."""
        token = await self._token()
        return await self._fetching(
            download_file(
                self.http,
                file,
                token=token,
                api_url=self.settings.slack_api_url,
                dest_dir=self.temp_dir,
                max_bytes=self.settings.max_download_bytes,
            )
        )

    async def text(self, url: str) -> str:
        """A private text file of Slack's (a clip's `vtt` transcript), with the same safety as download()."""
        token = await self._token()
        return await self._fetching(
            download_text(
                self.http, url, token=token, api_url=self.settings.slack_api_url, max_bytes=MAX_TRANSCRIPT_BYTES
            )
        )

    async def _files_info(
        self, call: Callable[[AsyncWebClient, dict[str, Any]], Awaitable[dict[str, Any]]], file: dict[str, Any]
    ) -> dict[str, Any]:
        client = await self.workspaces.client(self.team_id)
        if client is None:
            raise FileAccessError("the app is no longer installed in this workspace")
        return await self._fetching(call(client, file))

    async def _token(self) -> str:
        token = await self.workspaces.token(self.team_id)
        if token is None:
            raise FileAccessError("the app is no longer installed in this workspace")
        return token

    @staticmethod
    async def _fetching(work: Awaitable[T]) -> T:
        """Await a files.info call or a download; Slack being unreachable or failing becomes Waiting."""
        try:
            return await work
        except DownloadError as exc:
            if slack_down(exc):
                raise Waiting("waiting_slack", exc) from None
            raise
        except (aiohttp.ClientError, httpx.TransportError, TimeoutError) as exc:
            raise Waiting("waiting_slack", exc) from None
