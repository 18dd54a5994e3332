"""The fetch stage: a Slack file object resolved and downloaded, with "Slack is down" told apart from "no".

A failure that says Slack is unreachable or failing (connection errors, 5xx, 429, an HTML error page) becomes
`Waiting`, which makes the job wait and retry instead of failing; anything else (a hidden file, a sign-in page,
a foreign host) is the user's answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bot.errors import DownloadError, FileAccessError, UnsafeURLError
from bot.settings import Settings
from bot.slack.files import download_file, resolve_file
from bot.slack.workspaces import Workspaces

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
        client = await self.workspaces.client(self.team_id)
        if client is None:
            raise FileAccessError("the app is no longer installed in this workspace")
        try:
            return await resolve_file(client, file)
        except DownloadError as exc:
            if slack_down(exc):
                raise Waiting("waiting_slack", exc) from None
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Waiting("waiting_slack", exc) from None

    async def download(self, file: dict[str, Any]) -> Path:
        """Download a resolved file into the temporary folder; the caller deletes it."""
        token = await self.workspaces.token(self.team_id)
        if token is None:
            raise FileAccessError("the app is no longer installed in this workspace")
        try:
            return await download_file(
                self.http,
                file,
                token=token,
                api_url=self.settings.slack_api_url,
                dest_dir=self.temp_dir,
                max_bytes=self.settings.max_download_bytes,
            )
        except DownloadError as exc:
            if slack_down(exc):
                raise Waiting("waiting_slack", exc) from None
            raise
        except (aiohttp.ClientError, httpx.TransportError, TimeoutError) as exc:
            raise Waiting("waiting_slack", exc) from None
