"""Fetching a file shared in Slack: decide whether it may be media, resolve stubs, download it safely; the
transcript Slack made of a clip (`transcription`, and its `vtt` fetched with the same rules as the file).

Safety rules (see FIELD-NOTES "Slack"):
- the bot token goes only to Slack's file host over https (or to the API origin the bot already trusts);
- redirects are never followed: Slack answers a missing `files:read` or a hidden file with a 302 to its
  sign-in page, and a client that followed it would receive that page as "the file";
- the size cap holds before the request (announced size) and while streaming (the real size);
- every failure removes the partial file, and no exception carries the token.

What download_file accepts: anything that is not clearly a document. Media recognised by its magic bytes
and unrecognised binaries both go on to ffmpeg, which is the authority on what it can decode; HTML (Slack's
sign-in page) is a FileAccessError and other documents (PDF, images, archives, text) are a NotAudioError.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import (
    DownloadError,
    FileAccessError,
    NotAudioError,
    TooLargeError,
    UnsafeURLError,
)

SLACK_FILE_HOST = "files.slack.com"
# A clip's WebVTT transcript is a few kilobytes a minute: far more than this is not one.
MAX_TRANSCRIPT_BYTES = 1024 * 1024

AUDIO_FILETYPES = frozenset(
    {"m4a", "mp3", "mpga", "ogg", "oga", "opus", "wav", "flac", "aac", "amr", "aiff", "aif", "caf", "wma"}
)
VIDEO_FILETYPES = frozenset(
    {"mp4", "mov", "m4v", "webm", "3gp", "3g2", "mkv", "avi", "wmv", "mpg", "mpeg", "flv"}
)
MEDIA_FILETYPES = AUDIO_FILETYPES | VIDEO_FILETYPES
AUDIO_EXTENSIONS = frozenset(f".{t}" for t in AUDIO_FILETYPES) | {".weba", ".spx", ".aifc"}
VIDEO_EXTENSIONS = frozenset(f".{t}" for t in VIDEO_FILETYPES) | {".ogv", ".mts"}
MEDIA_EXTENSIONS = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS
SLACK_MEDIA_SUBTYPES = frozenset({"slack_audio", "slack_video"})

# Labels that say nothing about the content: such a file is judged by its bytes.
_GENERIC_MIMETYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/binary"})
_GENERIC_FILETYPES = frozenset({"", "binary", "unknown", "auto"})

# ISO BMFF brands of still images (HEIC/AVIF photos share the `ftyp` box with mp4 audio).
_IMAGE_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
)
_ASF_GUID = bytes.fromhex("3026B2758E66CF11A6D900AA0062CE6C")

SNIFF_BYTES = 1024  # how much of the head sniff_media / sniff_document look at
_CHUNK = 64 * 1024


def is_stub(file: dict[str, Any]) -> bool:
    """True for a Slack Connect stub (`file_access: "check_file_info"`) that only files.info can fill in."""
    return file.get("file_access") == "check_file_info"


def is_clip(file: dict[str, Any]) -> bool:
    """True for an audio or video clip recorded in Slack (the kind Slack transcribes)."""
    subtype = str(file.get("subtype") or "").lower()
    return subtype in SLACK_MEDIA_SUBTYPES or file.get("media_display_type") in ("audio", "video")


@dataclass(frozen=True)
class Transcription:
    """Slack's transcript of a clip, as its file object describes it (`transcription` and `vtt`)."""

    status: str  # "complete" once done; "processing" (or another word) while Slack is still at it
    locale: str | None  # "en-US"
    vtt: str | None  # private URL of the whole transcript as WebVTT (timed cues), fetched like url_private
    preview: str | None  # the transcript's start as plain text
    has_more: bool  # the preview is not all of it

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def transcription(file: dict[str, Any]) -> Transcription | None:
    """The file's Slack transcript, or None when the file object carries none."""
    found = file.get("transcription")
    if not isinstance(found, dict):
        return None
    preview = found.get("preview") if isinstance(found.get("preview"), dict) else {}
    content = preview.get("content")
    vtt = file.get("vtt")
    locale = found.get("locale")
    return Transcription(
        status=str(found.get("status") or ""),
        locale=locale if isinstance(locale, str) and locale else None,
        vtt=vtt if isinstance(vtt, str) and vtt else None,
        preview=content if isinstance(content, str) and content.strip() else None,
        has_more=bool(preview.get("has_more", True)),
    )


def looks_like_media(file: dict[str, Any]) -> bool:
    """Whether a Slack file object may hold audio the bot can use, judged from its labels only.

    Rule: any media signal wins (Slack clip subtype, audio/* or video/* mimetype, a media filetype or
    extension: voice clips are sometimes labelled video/mp4); a specific non-media label loses (a PDF, a
    PNG, text); a file whose mimetype and filetype say nothing (a Slack Connect stub, octet-stream with
    filetype "binary") is "unknown" and counts as media: resolve it, download it and let the bytes decide.
    """
    subtype = str(file.get("subtype") or "").lower()
    mimetype = str(file.get("mimetype") or "").split(";")[0].strip().lower()
    filetype = str(file.get("filetype") or "").strip().lower()
    extension = PurePosixPath(str(file.get("name") or "")).suffix.lower()
    if subtype in SLACK_MEDIA_SUBTYPES:
        return True
    if mimetype.startswith(("audio/", "video/")):
        return True
    if filetype in MEDIA_FILETYPES or extension in MEDIA_EXTENSIONS:
        return True
    return mimetype in _GENERIC_MIMETYPES and filetype in _GENERIC_FILETYPES


def sniff_media(head: bytes) -> str | None:
    """The media container named by a file's first bytes, or None (documents, images, unknown data).

    One of: wav avi aiff mp3 aac m4a mov 3gp mp4 ogg webm matroska flac amr asf caf flv.
    """
    if len(head) >= 12 and head[:4] == b"RIFF":
        return {b"WAVE": "wav", b"AVI ": "avi"}.get(head[8:12])
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return None
        if brand.startswith((b"M4A", b"M4B", b"M4P")):
            return "m4a"
        if brand == b"qt  ":
            return "mov"
        if brand.startswith((b"3gp", b"3g2")):
            return "3gp"
        return "mp4"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "matroska"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:5] == b"#!AMR":
        return "amr"
    if head[:16] == _ASF_GUID:
        return "asf"
    if head[:4] == b"caff":
        return "caf"
    if head[:3] == b"FLV":
        return "flv"
    return _sniff_mpeg_frame(head)


def _sniff_mpeg_frame(head: bytes) -> str | None:
    """A raw MPEG audio frame (mp3 without ID3) or an ADTS frame (raw AAC), from the 32-bit header."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    version, layer = (head[1] >> 3) & 0b11, (head[1] >> 1) & 0b11
    if layer == 0:
        # ADTS: 12 sync bits, layer always 0, sampling-frequency index 0-12.
        return "aac" if head[1] & 0xF0 == 0xF0 and (head[2] >> 2) & 0x0F <= 12 else None
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0b11
    if version == 0b01 or bitrate == 0x0F or rate == 0b11:
        return None  # reserved values: not a frame header
    return "mp3"


def sniff_document(head: bytes) -> str | None:
    """A kind of non-media file named by its first bytes: html, pdf, png, jpeg, gif, webp, image, zip,
    gzip, text or empty; None when the bytes are not clearly a document (media or unknown binary)."""
    if not head:
        return "empty"
    if sniff_media(head) is not None:
        return None
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in start[:256]:
        return "html"
    for magic, kind in (
        (b"%PDF-", "pdf"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"\xff\xd8\xff", "jpeg"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"PK\x03\x04", "zip"),
        (b"\x1f\x8b", "gzip"),
    ):
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in _IMAGE_BRANDS:
        return "image"
    if _is_text(head):
        return "text"
    return None


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the head is still text.
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def token_may_go_to(url: str, api_url: str) -> bool:
    """True only for https://files.slack.com/... or the exact origin of api_url (scheme, host and port).

    The API origin is allowed because the bot already sends the token there on every Web API call: with
    the default api_url that is https://slack.com, with a local stand-in its loopback origin.
    """
    origin = _origin(url)
    if origin is None:
        return False
    return origin == ("https", SLACK_FILE_HOST, 443) or origin == _origin(api_url)


async def resolve_file(client: AsyncWebClient, file: dict[str, Any]) -> dict[str, Any]:
    """The full file object: files.info for a Slack Connect stub or when no download URL is given."""
    if not is_stub(file) and file.get("url_private_download"):
        return file
    if file.get("mode") == "tombstone":
        raise FileAccessError("the file was deleted")
    if file.get("mode") == "hidden_by_limit" or file.get("file_access") == "access_denied":
        raise FileAccessError("Slack does not let the bot see this file")
    return await file_info(client, file)


async def file_info(client: AsyncWebClient, file: dict[str, Any]) -> dict[str, Any]:
    """The file object as files.info tells it now (a clip's transcript may have finished since the share)."""
    file_id = file.get("id")
    if not file_id:
        raise DownloadError("the file object has no id")
    failure: DownloadError | None = None
    try:
        response = await client.files_info(file=file_id)
    except SlackApiError as exc:
        # Raised outside this handler so the Slack response (and its request) stays off the chain.
        error = str(exc.response.get("error") or "unknown_error")
        if error in ("file_not_found", "file_deleted", "access_denied", "missing_scope", "not_in_channel"):
            failure = FileAccessError(f"files.info failed: {error}")
        else:
            failure = DownloadError(f"files.info failed: {error}")
    if failure is not None:
        raise failure
    resolved = response.get("file")
    if not isinstance(resolved, dict):
        raise DownloadError("files.info returned no file")
    return resolved


def _suffix(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


async def download_file(
    http: httpx.AsyncClient,
    file: dict[str, Any],
    *,
    token: str,
    api_url: str,
    dest_dir: str | Path,
    max_bytes: int,
) -> Path:
    """Download a (resolved) Slack file into dest_dir and return its path; the caller deletes it.

    Raises TooLargeError, UnsafeURLError, FileAccessError (sign-in page, redirect, 401/403/404),
    DownloadError (other HTTP errors, network trouble) or NotAudioError (clearly a document).
    """
    size = file.get("size")
    if isinstance(size, int) and size > max_bytes:
        raise TooLargeError(size, max_bytes)
    url = file.get("url_private_download") or file.get("url_private")
    if not isinstance(url, str) or not url:
        raise DownloadError("the file has no download URL")
    if not token_may_go_to(url, api_url):
        host = urlsplit(url).hostname or "?"
        raise UnsafeURLError(f"refusing to send the bot token to {host}")

    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept on success, removed on every failure
        dir=dest_dir, prefix="slack-", suffix=_suffix(str(file.get("name") or "")), delete=False
    )
    path = Path(handle.name)
    try:
        with handle:
            head = await _stream_into(http, url, token, handle, max_bytes)
    except BaseException:
        # Partial files never outlive a failure, a cancellation included.
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    kind = sniff_document(head)
    if kind is not None:
        os.unlink(path)
        if kind == "html":
            raise FileAccessError("Slack answered with a web page instead of the file")
        raise NotAudioError(f"the file is {'empty' if kind == 'empty' else 'a ' + kind + ' document'}")
    return path


async def download_text(http: httpx.AsyncClient, url: str, *, token: str, api_url: str, max_bytes: int) -> str:
    """A small private text file of Slack's (a clip's `vtt` transcript), fetched as url_private is: from Slack's
    file host only, with the bot token, never following a redirect. Raises UnsafeURLError for another host,
    FileAccessError (sign-in page, redirect, 401/403/404), TooLargeError, DownloadError (other HTTP errors,
    network trouble, bytes that are not UTF-8 text)."""
    if not token_may_go_to(url, api_url):
        host = urlsplit(url).hostname or "?"
        raise UnsafeURLError(f"refusing to send the bot token to {host}")
    out = io.BytesIO()
    head = await _stream_into(http, url, token, out, max_bytes)
    if sniff_document(head) == "html":
        raise FileAccessError("Slack answered with a web page instead of the file")
    try:
        return out.getvalue().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DownloadError("the file is not UTF-8 text") from None


async def _stream_into(http: httpx.AsyncClient, url: str, token: str, out: Any, max_bytes: int) -> bytes:
    """GET url with the token, no redirects, writing to out; returns the first SNIFF_BYTES bytes."""
    failure: DownloadError | None = None
    head = b""
    try:
        async with http.stream(
            "GET", url, headers={"Authorization": f"Bearer {token}"}, follow_redirects=False
        ) as response:
            _check_response(response, max_bytes)
            received = 0
            async for chunk in response.aiter_bytes(_CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise TooLargeError(received, max_bytes)
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES and sniff_document(head) == "html":
                        raise FileAccessError("Slack answered with a web page instead of the file")
                out.write(chunk)
    except httpx.TimeoutException:
        failure = DownloadError("the download timed out")
    except httpx.HTTPError as exc:
        # The httpx exception holds the request and its Authorization header: keep it off the chain.
        failure = DownloadError(f"the download failed: {type(exc).__name__}")
    if failure is not None:
        raise failure
    return head


def _check_response(response: httpx.Response, max_bytes: int) -> None:
    status = response.status_code
    if 300 <= status < 400:
        raise FileAccessError(
            "Slack redirected the download (files:read missing or file not visible)", status
        )
    if status in (401, 403, 404):
        raise FileAccessError("Slack refused the download", status)
    if not 200 <= status < 300:
        raise DownloadError("Slack answered the download with an error", status)
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "text/html":
        raise FileAccessError("Slack answered with a web page instead of the file", status)
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise TooLargeError(int(length), max_bytes)
