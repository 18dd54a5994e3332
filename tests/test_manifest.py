"""manifest.yml: valid against Slack's published schema, with the scopes, events and command the bot needs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT.parent / "shared" / "slack-manifest.schema.json"


def _manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


@pytest.mark.skipif(not SCHEMA.is_file(), reason="Slack's manifest schema lives in ../shared")
def test_manifest_is_valid_against_slacks_schema():
    schema = json.loads(SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(_manifest())]
    assert errors == []


def test_manifest_declares_what_the_bot_uses():
    manifest = _manifest()
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert scopes == set(
        [
            "channels:history",
            "groups:history",
            "im:history",
            "mpim:history",
            "files:read",
            "files:write",
            "chat:write",
            "commands",
            "reactions:write",
        ]
    )
    settings = manifest["settings"]
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "message.channels",
        "message.groups",
        "message.im",
        "message.mpim",
    }
    assert settings["interactivity"]["is_enabled"] and settings["socket_mode_enabled"]
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/clone"]
