"""VoiceClone's request body is streamed, never held whole: its pieces join into exactly the JSON the signature
covers, whatever the WAV's length, and no piece is bigger than one slice of base64."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from bot.tencent.voiceclone import VoiceCloneClient, _Body


@pytest.mark.parametrize("size", [0, 1, 2, 3, _Body.SLICE - 1, _Body.SLICE, _Body.SLICE + 1, 3 * _Body.SLICE + 2])
async def test_the_pieces_join_into_the_signed_json(size: int) -> None:
    wav = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    body = VoiceCloneClient._parts(wav, SdkAppId=1400000001, VoiceName="v", PromptText=None)
    pieces = list(body.pieces())
    joined = b"".join(pieces)
    audio = base64.b64encode(wav).decode()
    assert json.loads(joined) == {"SdkAppId": 1400000001, "VoiceName": "v", "PromptAudio": audio}
    assert body.size == len(joined) and body.digest == hashlib.sha256(joined).hexdigest()
    assert max(len(piece) for piece in pieces) <= max(4 * _Body.SLICE // 3, len(pieces[0]))
    assert b"".join([piece async for piece in body.chunks()]) == joined  # what the HTTP client sends
    assert VoiceCloneClient._body(wav, SdkAppId=1400000001, VoiceName="v") == (joined, body.digest)


def test_a_body_holds_no_copy_of_the_audio() -> None:
    wav = bytearray(5_760_044)
    body = VoiceCloneClient._parts(wav, VoiceName="v")
    assert body.wav is wav  # the caller's WAV, encoded piece by piece when hashed and when sent
