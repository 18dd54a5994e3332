"""ffmpeg reads only the uploaded bytes: no playlist, list, sequence or external track reaches another file.

Every attack runs through FFmpeg's libraries in-process (bot.voice.libav, the bot's fast path) and through each
ffmpeg binary on real speech. Each also has a control: with the guard loosened (the attack's demuxer allowed again,
or mov external tracks on), the very same upload decodes to the other file's audio, through the libraries alone
as through the command line, so these tests fail if the guard goes on either path, and the attacks stay real as
ffmpeg changes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support.media import MediaCache, bundled_ffmpeg, encode, make_image

from bot.errors import DamagedAudioError, NoAudioStreamError, NotAudioError
from bot.voice import audio
from bot.voice.audio import AudioLimits, find_ffmpeg, prepare_audio

# Long enough to pass the length check, and unlike the 15 s the other test media have.
SECRET_SECONDS = 17.0
REFUSED = (NotAudioError, DamagedAudioError)
# What an unguarded bot let through: the demuxers these attacks need (mpegts for the HLS segment).
ATTACK_DEMUXERS = "hls,dash,concat,mpegts,image2"


# FFmpeg's libraries in-process (the command line judging what they leave to it), then the command line alone:
# the bundled ffmpeg always, a system one too where the machine has it (a bare machine has none).
FFMPEG_VARIANTS = ["libav", "bundled", *(["system"] if shutil.which("ffmpeg") else [])]


@pytest.fixture(params=FFMPEG_VARIANTS)
def which_ffmpeg(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Run the test through the libraries, then with no ffmpeg on PATH (imageio-ffmpeg's binary) and the system
    ffmpeg if any, the command line alone."""
    monkeypatch.setattr(audio, "FAST_DECODE", request.param == "libav")
    if request.param in ("libav", "bundled"):
        monkeypatch.setenv("PATH", str(tmp_path_factory.mktemp("empty-path")))
        monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    find_ffmpeg.cache_clear()
    yield find_ffmpeg()
    find_ffmpeg.cache_clear()


async def libraries_decode(upload: Path) -> float | None:
    """Seconds of audio FFmpeg's libraries alone (bot.voice.libav, with the guards of bot.voice.audio as they are
    now) make of `upload`: None when they give nothing."""
    decoded = await audio._decode_fast(str(upload), upload.read_bytes()[:16], AudioLimits())
    if decoded is None:
        return None
    decoded.pcm.close()
    return decoded.seconds


def secret(media: MediaCache, suffix: str = ".wav", *args: str) -> Path:
    """Someone else's recording on the bot's disk (absolute path): real speech, SECRET_SECONDS long."""
    return media.speech(SECRET_SECONDS, suffix, *args)


async def assert_refused(upload: Path) -> None:
    """prepare_audio refuses `upload`: no audio comes out of it, least of all another file's."""
    try:
        result = await prepare_audio(upload)
    except REFUSED:
        return
    pytest.fail(f"decoded {result.duration:.2f} s from {upload.name} (the referenced file is {SECRET_SECONDS} s)")


def libraries_have(demuxer: str) -> bool:
    """Whether the libraries in PyAV's wheel have this demuxer at all (its libavformat is built without dash)."""
    import av

    try:
        av.format.ContainerFormat(demuxer, "r")
    except ValueError:
        return False
    return True


async def assert_leaks_when_unguarded(
    monkeypatch: pytest.MonkeyPatch, upload: Path, demuxer: str | None = None, **loosen: object
) -> None:
    """Control: with the guard loosened, `upload` decodes to the referenced recording, and through the libraries
    alone too (when they have the attack's `demuxer`); with the guard on, the libraries give nothing of it."""
    with monkeypatch.context() as patch:
        for name, value in loosen.items():
            patch.setattr(audio, name, value)
        result = await prepare_audio(upload)
        alone = await libraries_decode(upload)
    assert result.duration == pytest.approx(SECRET_SECONDS, abs=0.15)
    if demuxer is None or libraries_have(demuxer):
        assert alone == pytest.approx(SECRET_SECONDS, abs=0.15)
    else:
        assert alone is None
    assert await libraries_decode(upload) is None


# --- playlists and lists naming another file -------------------------------------------------------------


def hls(target: Path) -> str:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:20\n#EXTINF:{SECRET_SECONDS},\n{target}\n#EXT-X-ENDLIST\n"


def dash(target: Path) -> str:
    return (
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"'
        f' mediaPresentationDuration="PT{SECRET_SECONDS}S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">'
        '<Period><AdaptationSet mimeType="audio/mp4"><Representation id="a" bandwidth="64000">'
        f"<BaseURL>{target}</BaseURL></Representation></AdaptationSet></Period></MPD>\n"
    )


# name: (upload file name, referenced recording (suffix, ffmpeg args), text of the upload). An upload keeps its
# Slack file name's extension (bot.slack.files), so a ".m3u8" arrives as one.
LEAKS = {
    # Absolute paths to recordings in formats HLS accepts as segments.
    "hls-ts": ("playlist.m3u8", (".ts", "-c:a", "aac", "-b:a", "48k"), hls),
    "hls-mp3": ("playlist.m3u8", (".mp3", "-c:a", "libmp3lame", "-b:a", "32k"), hls),
    "dash-m4a": ("manifest.mpd", (".m4a", "-c:a", "aac", "-b:a", "48k"), dash),
    # ffconcat refuses absolute paths in its default safe mode, not a plain name: another upload next to it.
    "ffconcat-sibling-wav": ("list.m4a", (".wav",), lambda target: f"ffconcat version 1.0\nfile '{target.name}'\n"),
}


@pytest.mark.parametrize("case", LEAKS)
async def test_playlist_naming_another_recording_is_refused(
    media: MediaCache, which_ffmpeg: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: str
) -> None:
    name, (suffix, *args), text = LEAKS[case]
    target = tmp_path / f"other-user{suffix}"
    shutil.copy(secret(media, suffix, *args), target)
    upload = tmp_path / name
    upload.write_text(text(target))
    demuxer = {"playlist.m3u8": "hls", "manifest.mpd": "dash", "list.m4a": "concat"}[name]
    await assert_leaks_when_unguarded(
        monkeypatch, upload, demuxer, _DEMUXERS=audio._DEMUXERS + "," + ATTACK_DEMUXERS
    )
    await assert_refused(upload)


# Uploads naming a file that ffmpeg itself already declines to open (wrong segment type, absolute path in
# safe mode, no ffconcat header, rtp) or that reads private text as data: refused all the same, at open.
REFUSED_UPLOADS = {
    "hls-wav.m3u8": lambda target: hls(target),
    "hls-file-url.m3u8": lambda target: hls(Path(f"file:{target}")),
    "hls-etc-passwd.m3u8": lambda target: hls(Path("/etc/passwd")),
    "ffconcat-absolute.m4a": lambda target: f"ffconcat version 1.0\nfile '{target}'\n",
    "ffconcat-unsafe.txt": lambda target: f"ffconcat version 1.0\nfile '../{target.parent.name}/{target.name}'\n",
    "concat-without-header.m4a": lambda target: f"file '{target}'\n",
    "dash-wav.mpd": lambda target: dash(target),
    "stream.sdp": lambda target: (
        "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"
    ),
}


@pytest.mark.parametrize("name", REFUSED_UPLOADS)
async def test_other_file_references_are_refused(
    media: MediaCache, which_ffmpeg: str, tmp_path: Path, name: str
) -> None:
    target = tmp_path / "other-user.wav"
    shutil.copy(secret(media), target)
    upload = tmp_path / name
    upload.write_text(REFUSED_UPLOADS[name](target))
    with pytest.raises(NotAudioError):
        await prepare_audio(upload)


async def test_image_sequence_pattern_is_refused(media: MediaCache, which_ffmpeg: str, tmp_path: Path) -> None:
    # A name with a frame-number pattern makes the image2 demuxer open upload-0.png, upload-1.png, ...: other
    # files. Unguarded it opens them (a picture with no audio); now the demuxer itself is refused.
    picture = media.get("picture.png", make_image)
    for number in range(3):
        shutil.copy(picture, tmp_path / f"upload-{number}.png")
    upload = tmp_path / "upload-%d.png"
    shutil.copy(picture, upload)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audio, "_DEMUXERS", audio._DEMUXERS + "," + ATTACK_DEMUXERS)
        with pytest.raises(NoAudioStreamError):
            await prepare_audio(upload)
    with pytest.raises(NotAudioError):
        await prepare_audio(upload)


# --- mov/mp4 external tracks ("dref" aliases) ------------------------------------------------------------

_MOV_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"dinf"})


def _boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each top-level ISO BMFF box in `data` (32-bit sizes, as ffmpeg writes small files)."""
    position = 0
    while position + 8 <= len(data):
        size = int.from_bytes(data[position : position + 4], "big")
        assert size >= 8, "64-bit or open-ended box sizes are not handled"
        yield data[position + 4 : position + 8], data[position + 8 : position + size]
        position += size


def _box(kind: bytes, body: bytes) -> bytes:
    return (8 + len(body)).to_bytes(4, "big") + kind + body


def _rewrite(data: bytes, edit: dict[bytes, bytes | None]) -> bytes:
    """`data` with the bodies of boxes named in `edit` replaced (None: same size, zeroed), sizes fixed up."""
    out = b""
    for kind, body in _boxes(data):
        if kind in edit:
            replacement = edit[kind]
            body = bytes(len(body)) if replacement is None else replacement
        elif kind in _MOV_CONTAINERS:
            body = _rewrite(body, edit)
        out += _box(kind, body)
    return out


def _alias_dref(sibling: str) -> bytes:
    """A dref box body whose one entry is a Mac alias to `sibling` in the mp4's own directory."""
    path = f"/Volumes/x/{sibling}".encode()
    alias = b"".join(
        (
            bytes(10),
            b"\x00" + bytes(27),  # volume name (empty)
            bytes(12),
            bytes([len(sibling)]) + sibling.encode().ljust(63, b"\x00"),
            bytes(16),
            (1).to_bytes(2, "big") + (1).to_bytes(2, "big"),  # levels up from the alias, down to the target
            bytes(16),
            (2).to_bytes(2, "big") + len(path).to_bytes(2, "big") + path + b"\x00" * (len(path) % 2),
            b"\xff\xff\x00\x00",  # end of the alias records
        )
    )
    entry = _box(b"alis", bytes(4) + alias)  # version and flags 0: the media is not in this file
    return bytes(4) + (1).to_bytes(4, "big") + entry


async def test_mp4_external_track_is_refused(
    media: MediaCache, which_ffmpeg: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An M4A (index last, as ffmpeg writes it) whose own audio is zeroed and whose only track says its samples
    # live in "other-user.m4a" next to it: at the same offsets, so that file's audio is what would play.
    target = tmp_path / "other-user.m4a"
    shutil.copy(secret(media, ".m4a", "-c:a", "aac", "-b:a", "48k"), target)
    original = target.read_bytes()
    assert [kind for kind, _ in _boxes(original)][-2:] == [b"mdat", b"moov"]
    upload = tmp_path / "upload.m4a"
    upload.write_bytes(_rewrite(original, {b"mdat": None, b"dref": _alias_dref(target.name)}))
    await assert_leaks_when_unguarded(monkeypatch, upload, _MOV_SAFETY=("-enable_drefs", "1"))
    with pytest.raises(NotAudioError, match="another file"):
        await prepare_audio(upload)


# --- what stays allowed ----------------------------------------------------------------------------------


def test_both_binaries_have_the_options(which_ffmpeg: str) -> None:
    help_text = subprocess.run(
        [which_ffmpeg, "-hide_banner", "-h", "full"], capture_output=True, text=True, check=True
    ).stdout
    for option in ("-format_whitelist", "-protocol_whitelist", "-enable_drefs", "-use_absolute_path"):
        assert f"  {option} " in help_text


FORMATS = {
    "m4a": (".m4a", "-c:a", "aac", "-b:a", "48k"),
    "m4a-faststart": (".m4a", "-c:a", "aac", "-b:a", "48k", "-movflags", "+faststart"),
    "3gp": (".3gp", "-c:a", "aac", "-b:a", "32k", "-ar", "16000"),
    "mov": (".mov", "-c:a", "pcm_s16le"),
    "aac-adts": (".aac", "-c:a", "aac", "-b:a", "48k"),
    "mp3": (".mp3", "-c:a", "libmp3lame", "-b:a", "32k"),
    "opus": (".opus", "-c:a", "libopus", "-b:a", "24k"),
    "webm": (".webm", "-c:a", "libopus", "-b:a", "24k"),
    "mka": (".mka", "-c:a", "libvorbis"),
    "flac": (".flac", "-c:a", "flac"),
    "wav": (".wav",),
    "aiff": (".aiff",),
    "caf": (".caf", "-c:a", "pcm_s16le"),
    "wma": (".wma", "-c:a", "wmav2", "-b:a", "64k"),
    "amr": (".amr", "-c:a", "libopencore_amrnb", "-ar", "8000", "-ac", "1", "-b:a", "12.2k"),
}


@pytest.mark.parametrize("kind", FORMATS)
async def test_supported_formats_still_decode(media: MediaCache, which_ffmpeg: str, kind: str) -> None:
    suffix, *args = FORMATS[kind]
    # Encoded by the bundled ffmpeg, which has every one of these encoders (AMR included).
    source = media.get(f"formats-{kind}{suffix}", lambda p: encode(media.speech(15), p, *args, exe=bundled_ffmpeg()))
    result = await prepare_audio(source)
    assert result.duration == pytest.approx(15.0, abs=0.1)


async def test_mp4_video_still_decodes(media: MediaCache, which_ffmpeg: str, tmp_path: Path) -> None:
    video = encode(
        secret(media), tmp_path / "clip.mp4", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-map", "1:v",
        "-map", "0:a", "-c:v", "mpeg4", "-c:a", "aac", "-shortest",
    )  # fmt: skip
    result = await prepare_audio(video)
    assert result.duration == pytest.approx(SECRET_SECONDS, abs=0.15)


# --- a hung decoder --------------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_timeout_kills_a_hung_ffmpeg(media: MediaCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # An "ffmpeg" that prints nothing and never exits (it records its pid first; exec keeps that pid).
    started = tmp_path / "ffmpeg.pid"
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho $$ > {started}\nexec sleep 100000\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    find_ffmpeg.cache_clear()  # cached: would keep returning the real one
    monkeypatch.setattr(audio, "_bundled_ffmpeg", lambda: pytest.fail("fell back to the bundled ffmpeg"))
    processes: list[asyncio.subprocess.Process] = []
    spawn = asyncio.create_subprocess_exec

    async def recording_spawn(*args: object, **kwargs: object) -> asyncio.subprocess.Process:
        process = await spawn(*args, **kwargs)  # type: ignore[arg-type]
        processes.append(process)
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording_spawn)
    monkeypatch.setattr(audio, "FAST_DECODE", False)  # the command line alone (the decoder processes: test_preparers)
    limits = AudioLimits(timeout=1.0)
    try:
        assert find_ffmpeg() == str(fake)
        begun = time.monotonic()
        with pytest.raises(DamagedAudioError, match="did not finish within 1 s"):
            await prepare_audio(secret(media), limits)
        elapsed = time.monotonic() - begun
    finally:
        find_ffmpeg.cache_clear()
    assert limits.timeout <= elapsed < limits.timeout + 1.5
    [process] = processes
    assert int(started.read_text()) == process.pid  # the fake really ran and hung
    assert process.returncode == -9  # killed, and reaped (no zombie left)
    assert process.pid not in {child.pid for child in psutil.Process().children(recursive=True)}
    assert not psutil.pid_exists(process.pid)
