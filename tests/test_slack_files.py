"""Safe download of Slack files from the Slack stand-in over loopback HTTP; the media sniffing tables."""

from __future__ import annotations

import asyncio
import io
import socket
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_sdk.web.async_client import AsyncWebClient
from support.media import make_image, make_signal, make_video

from bot.errors import DownloadError, FileAccessError, NotAudioError, TooLargeError, UnsafeURLError
from bot.settings import DEFAULT_SLACK_API_URL
from bot.slack.files import (
    download_file,
    looks_like_media,
    resolve_file,
    sniff_document,
    sniff_media,
    token_may_go_to,
)
from bot.testing.standin_slack import SlackStandIn

MB = 1024 * 1024
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
AMR = b"#!AMR\n" + bytes([0x3C]) + bytes(31)
TONE = "sine=frequency=440"

# name -> (ffmpeg output options, what sniff_media must say); every file is real ffmpeg output.
MEDIA = {
    "clip.m4a": (("-c:a", "aac"), "m4a"),
    "voice_clip_labelled_video.mp4": (("-c:a", "aac"), "mp4"),
    "audio_message.webm": (("-c:a", "libopus"), "webm"),
    "clip.ogg": (("-c:a", "libopus"), "ogg"),
    "clip.mp3": (("-c:a", "libmp3lame"), "mp3"),
    "bare.mp3": (("-c:a", "libmp3lame", "-id3v2_version", "0", "-write_xing", "0"), "mp3"),
    "clip.aac": (("-c:a", "aac"), "aac"),
    "clip.wav": ((), "wav"),
    "clip.flac": ((), "flac"),
    "clip.aiff": ((), "aiff"),
    "clip.caf": (("-c:a", "pcm_s16le"), "caf"),
    "clip.wma": (("-c:a", "wmav2"), "asf"),
    "clip.mkv": (("-c:a", "flac"), "matroska"),
    "clip.mov": (("-c:a", "aac"), "mov"),
    "clip.3gp": (("-c:a", "aac", "-ar", "16000"), "3gp"),
}


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def m4a(media: Any) -> bytes:
    return media.get("slack-files-clip.m4a", lambda p: make_signal(p, TONE, 0.5, "-c:a", "aac")).read_bytes()


def fetch(
    http: httpx.AsyncClient, slack: SlackStandIn, file: dict[str, Any], dest: Path, **kwargs: Any
) -> Any:
    options = {"token": slack.bot_token, "api_url": slack.api_url, "dest_dir": dest, "max_bytes": 10 * MB}
    return download_file(http, file, **(options | kwargs))


def assert_clean(exc: BaseException, dest: Path, token: str) -> None:
    """No partial file left behind, and the token appears nowhere in the exception."""
    assert list(dest.iterdir()) == []
    assert token not in str(exc) and token not in repr(exc.args) and token not in repr(vars(exc))
    assert exc.__cause__ is None and exc.__context__ is None


async def test_downloads_a_voice_clip_with_the_bot_token(
    slack: SlackStandIn, http: httpx.AsyncClient, dest: Path, m4a: bytes
) -> None:
    file = slack.add_file(m4a, "audio_message.m4a", "audio/mp4", "m4a", subtype="slack_audio")
    path = await fetch(http, slack, file, dest)
    assert path.parent == dest and path.suffix == ".m4a" and path.read_bytes() == m4a
    assert [(r.authorized, r.status) for r in slack.file_requests] == [(True, 200)]


async def test_a_wrong_token_stops_at_slacks_redirect(slack: SlackStandIn, dest: Path, m4a: bytes) -> None:
    file = slack.add_file(m4a, "clip.m4a", "audio/mp4", "m4a")
    # Even a client configured to follow redirects must not follow this one.
    async with httpx.AsyncClient(follow_redirects=True) as following:
        with pytest.raises(FileAccessError) as info:
            await fetch(following, slack, file, dest, token="xoxb-not-the-bot-token")
    assert info.value.status == 302
    assert [(r.path.startswith("/files-pri/"), r.status) for r in slack.file_requests] == [(True, 302)]
    assert_clean(info.value, dest, "xoxb-not-the-bot-token")


async def test_slacks_sign_in_page_is_never_taken_for_the_file(
    slack: SlackStandIn, http: httpx.AsyncClient, dest: Path, m4a: bytes
) -> None:
    file = slack.add_file(m4a, "clip.m4a", "audio/mp4", "m4a")
    # A client that follows the redirect receives 200 text/html: the sign-in page.
    followed = await http.get(file["url_private_download"], follow_redirects=True)
    assert followed.status_code == 200 and followed.headers["content-type"].startswith("text/html")

    # download_file rejects that answer by its content type...
    landing = dict(file, url_private_download=str(followed.url))
    with pytest.raises(FileAccessError) as by_type:
        await fetch(http, slack, landing, dest)
    assert by_type.value.status == 200
    assert_clean(by_type.value, dest, slack.bot_token)
    # ...and by its first bytes when the content type claims audio.
    disguised = slack.add_file(followed.content, "clip.m4a", "audio/mp4", "m4a")
    with pytest.raises(FileAccessError) as by_body:
        await fetch(http, slack, disguised, dest)
    assert_clean(by_body.value, dest, slack.bot_token)


async def test_the_token_never_goes_to_another_host(
    slack: SlackStandIn, http: httpx.AsyncClient, dest: Path, m4a: bytes
) -> None:
    file = slack.add_file(m4a, "clip.m4a", "audio/mp4", "m4a")
    with SlackStandIn(bot_token=slack.bot_token) as evil:  # another loopback port posing as a file host
        lure = evil.add_file(m4a, "clip.m4a", "audio/mp4", "m4a")
        for url in (
            lure["url_private_download"],
            "https://evil.example/files-pri/T0TEST-F1/download/clip.m4a",
        ):
            with pytest.raises(UnsafeURLError) as info:
                await fetch(http, slack, dict(file, url_private_download=url), dest)
            assert_clean(info.value, dest, slack.bot_token)
        assert evil.file_requests == []
    assert slack.file_requests == []


@pytest.mark.parametrize(
    ("url", "api_url", "allowed"),
    [
        ("https://files.slack.com/files-pri/T1-F1/download/a.m4a", DEFAULT_SLACK_API_URL, True),
        ("https://FILES.slack.com:443/files-pri/T1-F1/a.m4a", DEFAULT_SLACK_API_URL, True),
        ("https://slack.com/files-pri/T1-F1/a.m4a", DEFAULT_SLACK_API_URL, True),  # the API host itself
        ("http://files.slack.com/files-pri/T1-F1/a.m4a", DEFAULT_SLACK_API_URL, False),
        ("https://files.slack.com:8443/files-pri/T1-F1/a.m4a", DEFAULT_SLACK_API_URL, False),
        ("https://files.slack.com.evil.example/a.m4a", DEFAULT_SLACK_API_URL, False),
        ("https://files.slack.com@evil.example/a.m4a", DEFAULT_SLACK_API_URL, False),
        ("https://evil.example/https://files.slack.com/a.m4a", DEFAULT_SLACK_API_URL, False),
        ("https://files.slack.com:99999/a.m4a", DEFAULT_SLACK_API_URL, False),
        ("ftp://files.slack.com/a.m4a", DEFAULT_SLACK_API_URL, False),
        ("", DEFAULT_SLACK_API_URL, False),
        ("http://127.0.0.1:5000/files-pri/T1-F1/a.m4a", "http://127.0.0.1:5000/api/", True),
        ("http://127.0.0.1:5001/files-pri/T1-F1/a.m4a", "http://127.0.0.1:5000/api/", False),
        ("http://localhost:5000/files-pri/T1-F1/a.m4a", "http://127.0.0.1:5000/api/", False),
        ("https://127.0.0.1:5000/files-pri/T1-F1/a.m4a", "http://127.0.0.1:5000/api/", False),
    ],
)
def test_token_may_go_to(url: str, api_url: str, allowed: bool) -> None:
    assert token_may_go_to(url, api_url) is allowed


async def test_an_announced_2_gb_file_is_refused_before_any_request(
    slack: SlackStandIn, http: httpx.AsyncClient, dest: Path, m4a: bytes
) -> None:
    file = slack.add_file(m4a, "long.m4a", "audio/mp4", "m4a", size=2 * 1024**3)
    with pytest.raises(TooLargeError) as info:
        await fetch(http, slack, file, dest, max_bytes=100 * MB)
    assert (info.value.size, info.value.limit) == (2 * 1024**3, 100 * MB)
    assert slack.file_requests == []
    assert_clean(info.value, dest, slack.bot_token)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_size_lie_is_caught_by_the_real_bytes(
    slack: SlackStandIn, http: httpx.AsyncClient, dest: Path, chunked: bool
) -> None:
    body = b"ID3\x04" + bytes(300 * 1024)
    file = slack.add_file(body, "clip.mp3", "audio/mpeg", "mp3", size=1000, chunked=chunked)
    with pytest.raises(TooLargeError) as info:
        await fetch(http, slack, file, dest, max_bytes=100 * 1024)
    assert info.value.size is not None and info.value.size > 100 * 1024 and info.value.limit == 100 * 1024
    assert [r.status for r in slack.file_requests] == [200]
    assert_clean(info.value, dest, slack.bot_token)


async def test_a_slack_connect_stub_is_resolved_with_files_info(
    slack: SlackStandIn, http: httpx.AsyncClient, dest: Path, m4a: bytes
) -> None:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    stub = slack.add_file(m4a, "audio_message.m4a", "audio/mp4", "m4a", slack_connect_stub=True)
    assert looks_like_media(stub)  # unknown until resolved: not turned away
    resolved = await resolve_file(client, stub)
    assert resolved["mimetype"] == "audio/mp4" and looks_like_media(resolved)
    assert slack.calls_to("files.info") == [{"file": stub["id"]}]
    assert (await fetch(http, slack, resolved, dest)).read_bytes() == m4a

    full = slack.add_file(m4a, "clip.m4a", "audio/mp4", "m4a")
    assert await resolve_file(client, full) is full
    assert len(slack.calls_to("files.info")) == 1

    hidden = slack.add_file(
        m4a, "clip.m4a", "audio/mp4", "m4a", slack_connect_stub=True, visible_to_bot=False
    )
    with pytest.raises(FileAccessError, match="file_not_found"):
        await resolve_file(client, hidden)
    with pytest.raises(FileAccessError):
        await resolve_file(client, {"id": "F0GONE", "mode": "tombstone"})
    assert len(slack.calls_to("files.info")) == 2


async def test_a_cancelled_download_leaves_no_partial_file(
    slack: SlackStandIn, http: httpx.AsyncClient, dest: Path, m4a: bytes
) -> None:
    file = slack.add_file(m4a, "clip.m4a", "audio/mp4", "m4a")
    slack.stall_file(file["id"], after_bytes=len(m4a) // 2)
    task = asyncio.create_task(fetch(http, slack, file, dest))
    assert await slack.wait_for_async(lambda: slack.stalled, 5)
    assert len(list(dest.iterdir())) == 1  # the partial download exists...
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(dest.iterdir()) == []  # ...and is gone with the cancellation
    slack.release_stalls()


async def test_http_errors(slack: SlackStandIn, http: httpx.AsyncClient, dest: Path, m4a: bytes) -> None:
    file = slack.add_file(m4a, "clip.m4a", "audio/mp4", "m4a")
    slack.fail_file(file["id"], 500)
    with pytest.raises(DownloadError) as server:
        await fetch(http, slack, file, dest)
    assert type(server.value) is DownloadError and server.value.status == 500
    slack.fail_file(file["id"], 403)
    with pytest.raises(FileAccessError) as forbidden:
        await fetch(http, slack, file, dest)
    assert forbidden.value.status == 403
    gone = dict(file, url_private_download=file["url_private_download"].replace(file["id"], "F0MISSING"))
    with pytest.raises(FileAccessError) as missing:
        await fetch(http, slack, gone, dest)
    assert missing.value.status == 404
    for exc in (server.value, forbidden.value, missing.value):
        assert_clean(exc, dest, slack.bot_token)
    assert (await fetch(http, slack, file, dest)).read_bytes() == m4a  # the failures were one-offs


async def test_a_network_failure_keeps_the_token_off_the_exception(
    http: httpx.AsyncClient, dest: Path
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    file = {"id": "F1", "name": "a.m4a", "size": 10, "url_private_download": f"http://127.0.0.1:{port}/f"}
    token = "xoxb-1-2-networkfailuretoken"
    with pytest.raises(DownloadError) as info:
        await download_file(
            http, file, token=token, api_url=f"http://127.0.0.1:{port}/api/", dest_dir=dest, max_bytes=MB
        )
    assert type(info.value) is DownloadError and info.value.status is None
    assert_clean(info.value, dest, token)


async def test_documents_are_refused_and_unknown_bytes_left_to_ffmpeg(
    slack: SlackStandIn, http: httpx.AsyncClient, dest: Path, media: Any
) -> None:
    png = media.get("slack-files-shot.png", make_image).read_bytes()
    for content in (PDF, png, b""):
        file = slack.add_file(content, "audio_message.m4a", "audio/mp4", "m4a")
        with pytest.raises(NotAudioError) as info:
            await fetch(http, slack, file, dest)
        assert_clean(info.value, dest, slack.bot_token)
    unknown = bytes(range(256)) * 8
    path = await fetch(
        http, slack, slack.add_file(unknown, "clip.bin", "application/octet-stream", "binary"), dest
    )
    assert path.read_bytes() == unknown


@pytest.mark.parametrize("name", sorted(MEDIA))
def test_sniff_media_names_real_containers(media: Any, name: str) -> None:
    options, expected = MEDIA[name]
    path = media.get(f"sniff-{name}", lambda p: make_signal(p, TONE, 0.3, *options))
    head = path.read_bytes()[:1024]
    assert sniff_media(head) == expected
    assert sniff_document(head) is None


def test_sniff_media_on_video_and_rarer_formats(media: Any) -> None:
    tone = media.get("sniff-tone.wav", lambda p: make_signal(p, TONE, 0.5))
    video = media.get("sniff-video.mp4", lambda p: make_video(p, 0.4, tone))
    assert sniff_media(video.read_bytes()[:1024]) == "mp4"
    assert sniff_media(AMR) == "amr"


@pytest.mark.parametrize(
    ("head", "document"),
    [
        (PDF, "pdf"),
        (HEIC, "image"),
        (b"<!DOCTYPE html>\n<html lang='en-US'><head><title>Slack</title>", "html"),
        (b"\n  <html><body>Sign in</body></html>", "html"),
        (b'{"ok": false, "error": "invalid_auth"}', "text"),
        (b"Hello, this is just some notes\n", "text"),
        (b"", "empty"),
    ],
    ids=["pdf", "heic-photo", "html", "html-late", "json", "text", "empty"],
)
def test_documents_are_not_media(head: bytes, document: str) -> None:
    assert sniff_media(head) is None
    assert sniff_document(head) == document


def test_real_images_and_archives_are_documents(media: Any) -> None:
    png = media.get("sniff-shot.png", make_image).read_bytes()
    jpeg = media.get("sniff-shot.jpg", make_image).read_bytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("voice.txt", "not audio")
    for head, kind in ((png, "png"), (jpeg, "jpeg"), (archive.getvalue(), "zip")):
        assert sniff_media(head[:1024]) is None
        assert sniff_document(head[:1024]) == kind
    assert sniff_document(bytes(range(256))) is None  # unknown binary: neither media nor document


@pytest.mark.parametrize(
    ("file", "media_like"),
    [
        (
            {
                "subtype": "slack_audio",
                "mimetype": "audio/webm",
                "filetype": "webm",
                "name": "audio_message.webm",
            },
            True,
        ),
        (
            {
                "subtype": "slack_audio",
                "mimetype": "video/mp4",
                "filetype": "mp4",
                "name": "audio_message.mp4",
            },
            True,
        ),
        ({"subtype": "slack_audio", "mimetype": "", "filetype": "", "name": "audio_message.m4a"}, True),
        ({"mimetype": "audio/x-m4a", "filetype": "m4a", "name": "Voice Memo.m4a"}, True),
        ({"mimetype": "video/quicktime", "filetype": "mov", "name": "IMG_0001.MOV"}, True),
        ({"mimetype": "application/octet-stream", "filetype": "m4a", "name": "memo"}, True),
        ({"mimetype": "application/octet-stream", "filetype": "binary", "name": "take2.opus"}, True),
        ({"mimetype": "application/octet-stream", "filetype": "binary", "name": "blob"}, True),
        ({"id": "F1", "mode": "file_access", "file_access": "check_file_info", "user": ""}, True),
        ({"mimetype": "application/pdf", "filetype": "pdf", "name": "script.pdf"}, False),
        ({"mimetype": "image/png", "filetype": "png", "name": "shot.png"}, False),
        ({"mimetype": "text/plain", "filetype": "text", "name": "notes.txt"}, False),
        ({"mimetype": "text/html", "filetype": "html", "name": "page.html"}, False),
    ],
    ids=[
        "clip-webm",
        "clip-labelled-video-mp4",
        "clip-subtype-only",
        "voice-memo",
        "phone-video",
        "filetype-only",
        "extension-only",
        "unlabelled",
        "slack-connect-stub",
        "pdf",
        "png",
        "text",
        "html",
    ],
)
def test_looks_like_media(file: dict[str, Any], media_like: bool) -> None:
    assert looks_like_media(file) is media_like
