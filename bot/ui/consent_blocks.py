"""Consent: who may clone what, and the Block Kit of the confirmation step. Pure functions, no Slack calls.

A cloned voice is biometric and permanent at Tencent (there is no API to delete one), so with CONSENT=ask nothing
is cloned until the person who shared the recording presses "Clone this voice" under the consent statement.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.ui.texts import escape

CONFIRM_ACTION = "consent_confirm"
CANCEL_ACTION = "consent_cancel"
STATEMENT = "This is my voice, or I have the speaker's permission to clone it."
ATTESTED_NOTE = "Cloned under this workspace's consent policy (consent collected outside Slack)."

Blocks = list[dict[str, Any]]


def may_use_file(file: dict[str, Any], user_id: str | None, channel_id: str | None) -> bool:
    """True when `user_id` shared the file, or it was shared in `channel_id` (files.info's view of the file).

    `/clone <file>` fetches with the bot's token, which sees more than the caller may: a file from a private
    channel or DM the caller is not in must not be cloneable by naming its id.
    """
    if user_id and file.get("user") == user_id:
        return True
    if not channel_id:
        return False
    for key in ("channels", "groups", "ims"):
        if channel_id in (file.get(key) or []):
            return True
    shares = file.get("shares") or {}
    return any(channel_id in (shares.get(kind) or {}) for kind in ("public", "private"))


def consent_note(consent: dict[str, Any] | None) -> str | None:
    """The line under a cloned voice saying whose consent it was cloned with."""
    if not consent:
        return None
    how, user, at = consent.get("how"), consent.get("user"), consent.get("at")
    if how == "attested":
        return ATTESTED_NOTE
    who = f"<@{user}>" if user else "the uploader"
    when = f" at {_when(at)}" if at else ""
    if how == "form":
        return f"Consent: confirmed by {who} in the /clone form{when}."
    if how == "button":
        return f"Consent: confirmed by {who}{when}."
    return None


def _when(at: float) -> str:
    # Slack renders <!date^...> in the reader's own time zone; the fallback is UTC.
    fallback = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at)}^{{date_short_pretty}} at {{time}}|{fallback}>"


def build_consent_request(
    job_id: int, user_id: str | None, file_name: str, report: dict[str, Any] | None, ttl_hours: float,
    requester: str | None = None,
) -> tuple[str, Blocks]:
    """The question under a prepared recording: the report card, the statement, Clone and Cancel. `user_id` is the
    speaker (the recording's uploader), the only one who can confirm; `requester`, when someone else asked."""
    who = f"<@{user_id}>" if user_id else "The person who shared it"
    asked = ""
    if requester and requester != user_id:
        asked = f"<@{requester}> asked to clone the voice in this recording. It is yours to give or refuse.\n"
    blocks: Blocks = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f":raised_hand: *Ready to clone* `{escape(file_name)}`\n{asked}{who}, please confirm:\n"
                f">{STATEMENT}",
            },
        }
    ]
    if report:
        blocks.append(report)
    blocks.append(
        {
            "type": "actions",
            "block_id": "consent",
            "elements": [
                {
                    "type": "button",
                    "action_id": CONFIRM_ACTION,
                    "style": "primary",
                    "text": {"type": "plain_text", "text": "Clone this voice"},
                    "value": str(job_id),
                },
                {
                    "type": "button",
                    "action_id": CANCEL_ACTION,
                    "text": {"type": "plain_text", "text": "Cancel"},
                    "value": str(job_id),
                },
            ],
        }
    )
    hours = f"{ttl_hours:g} hour" + ("" if ttl_hours == 1 else "s")
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Only {who} can confirm. Nothing is sent to Tencent Cloud until then; the prepared "
                    f"audio is deleted if nobody confirms within {hours}.",
                }
            ],
        }
    )
    return f"Ready to clone {escape(file_name)}: {STATEMENT} Press Clone this voice to confirm.", blocks


def build_consent_confirmed(user_id: str, at: float, file_name: str) -> tuple[str, Blocks]:
    """The question, answered yes."""
    text = f":white_check_mark: Confirmed by <@{user_id}> at {_when(at)}: cloning `{escape(file_name)}`…"
    return f"Confirmed by <@{user_id}>: cloning {escape(file_name)}", [_section(text)]


def build_consent_cancelled(user_id: str, file_name: str) -> tuple[str, Blocks]:
    """The question, answered no."""
    text = f":wastebasket: Cancelled by <@{user_id}>. The prepared audio from `{escape(file_name)}` was deleted."
    return f"Cancelled: the prepared audio from {escape(file_name)} was deleted.", [_section(text)]


def build_consent_expired(file_name: str, ttl_hours: float) -> tuple[str, Blocks]:
    """Nobody answered in time."""
    text = (
        f":hourglass: Nobody confirmed within {ttl_hours:g} h, so the prepared audio from `{escape(file_name)}` "
        "was deleted. Share the recording again to clone it."
    )
    return f"Expired: the prepared audio from {escape(file_name)} was deleted.", [_section(text)]


def build_only_uploader(user_id: str | None) -> str:
    """What someone else pressing the button is told (ephemeral)."""
    who = f"<@{user_id}>" if user_id else "the person who shared the recording"
    return f"Only {who} can confirm cloning this voice: it is theirs to give."


def build_forgotten_clone(voice_id: str, request_id: str | None, file_name: str) -> tuple[str, Blocks]:
    """A clone that finished after its speaker (or its requester) asked the bot to forget them."""
    rid = f", RequestId `{escape(request_id)}`" if request_id else ""
    text = (
        f":wastebasket: Tencent Cloud finished cloning `{escape(file_name)}` after this request was forgotten "
        "(`/clone forget-me`), so the bot kept no voice: nobody can list, use or rename it here. Tencent cannot "
        f"delete cloned voices; its VoiceId `{escape(voice_id)}`{rid} stays in the operator's audit, for Tencent "
        "support."
    )
    return f"Cloned after a forget-me: the bot kept no voice from {escape(file_name)}.", [_section(text)]


def build_file_refused(file_ref: str) -> str:
    """`/clone <file>` for a file the caller did not share and that was not shared in this channel."""
    return (
        f"I can't clone `{escape(file_ref)}` for you: you can only clone a file you shared yourself, or one shared "
        "in this channel. Share the recording here, or drop it in a DM with me."
    )


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}
