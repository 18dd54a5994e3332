"""manifest.yml: valid against Slack's published schema; its scopes and events are derived from the code's own
Slack calls (a scope the code needs is there, and no scope the code does not use is asked for)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from bot.ui.speak_blocks import (
    SPEAK_SHORTCUT,
    SPEAK_STEP,
    STEP_CHANNEL,
    STEP_PERMALINK,
    STEP_TEXT,
    STEP_USER,
    STEP_VOICE,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT.parent / "shared" / "slack-manifest.schema.json"
# The product's code (the stand-ins in bot/testing answer Slack calls, they do not make them).
SOURCES = [
    *sorted(p for p in (ROOT / "bot").rglob("*.py") if "testing" not in p.relative_to(ROOT / "bot").parts),
    *sorted((ROOT / "handlers").glob("*.py")),
]

# Web API method -> the bot scope it needs (None: no scope). A method missing here fails the test: add it.
METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "apps.connectionsOpen": None,  # apps.connections.open: the app-level token's connections:write, not a bot scope
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.delete": "chat:write",
    "chat.postEphemeral": "chat:write",
    "reactions.add": "reactions:write",
    "reactions.remove": "reactions:write",
    "files.info": "files:read",
    "files.uploadV2": "files:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "views.open": None,
    "views.update": None,
    "views.push": None,
    "views.publish": None,  # the App Home tab
    "conversations.info": "channels:read groups:read im:read mpim:read",
    "conversations.open": "im:write",
    "conversations.replies": "channels:history groups:history im:history mpim:history",
    "users.info": "users:read",
    # A Workflow Builder step's end (no scope: the method takes the bot token as it is).
    "functions.completeSuccess": None,
    "functions.completeError": None,
}
# Slack's event types the app listens to -> the manifest's bot events -> the scopes they need.
EVENT_SUBSCRIPTIONS = {
    "message": {
        "message.channels": "channels:history",
        "message.groups": "groups:history",
        "message.im": "im:history",
        "message.mpim": "mpim:history",
    },
    "app_mention": {"app_mention": "app_mentions:read"},
    "file_shared": {"file_shared": "files:read"},
    "app_home_opened": {"app_home_opened": ""},  # no scope
    # OAuth installs: a workspace leaving (no scope needed).
    "app_uninstalled": {"app_uninstalled": ""},
    "tokens_revoked": {"tokens_revoked": ""},
}
# Everything that is not a Web API call but needs a scope.
OTHER_USES = {
    r"url_private": "files:read",  # downloading a file's private URL with the bot token
    r"\.command\(": "commands",  # a slash command listener
    r"\.shortcut\(": "commands",  # a shortcut listener (global or message)
}
# A Web API method on a Slack client (called, or passed on to be called): `client.chat_update(`, `self.slack.x_y`.
_FAMILIES = "chat|reactions|files|views|conversations|users|auth|apps|pins|bookmarks|functions"
_CALL = re.compile(rf"(?:client|slack)\.({_FAMILIES})_(\w+)\b")
_QUOTED = re.compile(r"[\"'](chat|reactions|files|views|conversations|users|pins|bookmarks|functions)\.(\w+)[\"']")
_EVENT = re.compile(r"\.event\(\s*(?:\{[^}]*[\"']type[\"']\s*:\s*)?[\"'](\w+)[\"']")


def _manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def _camel(name: str) -> str:
    """slack_sdk's method names: chat_postMessage -> postMessage, files_upload_v2 -> uploadV2."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def methods_used() -> set[str]:
    found: set[str] = set()
    for path in SOURCES:
        text = path.read_text()
        if path.name == "demo.py":  # reads the stand-in's record of calls, makes none
            continue
        found |= {f"{family}.{_camel(name)}" for family, name in _CALL.findall(text)}
        found |= {f"{family}.{name}" for family, name in _QUOTED.findall(text)}
    return found


def events_used() -> set[str]:
    return {event for path in SOURCES for event in _EVENT.findall(path.read_text())}


def needed_scopes() -> set[str]:
    scopes: set[str] = set()
    for method in methods_used():
        assert method in METHOD_SCOPES, f"the code calls {method}: add its scope to METHOD_SCOPES"
        scopes |= set((METHOD_SCOPES[method] or "").split())
    for event in events_used():
        assert event in EVENT_SUBSCRIPTIONS, f"the code listens to {event}: add it to EVENT_SUBSCRIPTIONS"
        scopes |= {scope for scope in EVENT_SUBSCRIPTIONS[event].values() if scope}
    for pattern, scope in OTHER_USES.items():
        if any(re.search(pattern, path.read_text()) for path in SOURCES if path.name != "demo.py"):
            scopes.add(scope)
    return scopes


@pytest.mark.skipif(not SCHEMA.is_file(), reason="Slack's manifest schema lives in ../shared")
def test_manifest_is_valid_against_slacks_schema():
    schema = json.loads(SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(_manifest())]
    assert errors == []


def test_the_scan_finds_the_calls_it_should():
    # Guards the scanner itself: these calls are in the code today (a rename here means a scanner to fix).
    assert {"chat.postMessage", "chat.update", "reactions.add", "files.info", "views.open"} <= methods_used()
    assert "message" in events_used()


def test_manifest_asks_for_exactly_the_scopes_the_code_uses():
    assert set(_manifest()["oauth_config"]["scopes"]["bot"]) == needed_scopes()


def test_manifest_subscribes_to_exactly_the_events_the_code_handles():
    wanted = {name for event in events_used() for name in EVENT_SUBSCRIPTIONS[event]}
    assert set(_manifest()["settings"]["event_subscriptions"]["bot_events"]) == wanted


def test_dms_work():
    # The bot answers DMs and the outbox DMs users (chat.postMessage to a user id): the Messages tab must be on.
    home = _manifest()["features"]["app_home"]
    assert home["messages_tab_enabled"] is True and home["messages_tab_read_only_enabled"] is False


def test_home_tab_is_on_when_the_code_publishes_it():
    # The voice library lives on the Home tab: views.publish on app_home_opened needs the tab switched on.
    assert "views.publish" in methods_used() and "app_home_opened" in events_used()
    assert _manifest()["features"]["app_home"]["home_tab_enabled"] is True


def test_command_interactivity_and_socket_mode():
    manifest = _manifest()
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] and settings["socket_mode_enabled"]
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/clone"]


def test_message_shortcuts_are_exactly_the_ones_the_code_listens_for():
    shortcuts = _manifest()["features"]["shortcuts"]
    assert [(s["type"], s["callback_id"], s["name"]) for s in shortcuts] == [
        ("message", "speak_in_my_voice", "Speak in my voice")
    ]
    assert SPEAK_SHORTCUT == "speak_in_my_voice"
    listened = {m for path in SOURCES for m in re.findall(r"\.shortcut\((\w+)\)", path.read_text())}
    assert listened == {"SPEAK_SHORTCUT"}


def test_the_workflow_step_is_declared_as_the_code_runs_it():
    manifest = _manifest()
    # Custom steps need an org-ready app whose functions run here (Slack's docs for custom steps in Bolt apps).
    assert manifest["settings"]["org_deploy_enabled"] is True
    assert manifest["settings"]["function_runtime"] == "remote"
    listened = {m for path in SOURCES for m in re.findall(r"\.function\((\w+)\)", path.read_text())}
    assert listened == {"SPEAK_STEP"} and list(manifest["functions"]) == [SPEAK_STEP] == ["speak_with_cloned_voice"]
    step = manifest["functions"][SPEAK_STEP]
    assert step["title"] == "Speak text with a cloned voice"
    assert {name: (p["type"], p["is_required"]) for name, p in step["input_parameters"].items()} == {
        STEP_USER: ("slack#/types/user_context", True),
        STEP_VOICE: ("string", True),
        STEP_TEXT: ("string", True),
        STEP_CHANNEL: ("slack#/types/channel_id", True),
    }
    assert {name: (p["type"], p["is_required"]) for name, p in step["output_parameters"].items()} == {
        STEP_PERMALINK: ("string", True),
    }
    assert {"functions.completeSuccess", "functions.completeError"} <= methods_used()
