"""Listeners are module-level functions: a test imports one by name and calls it as Bolt would, with the services
bot.slack.app's middleware would have put in the context."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.async_context import AsyncBoltContext

from bot.store.jobs import NewJob
from bot.voice.options import CloneOptions
from handlers import Services
from handlers.actions import handle_consent_confirm
from handlers.messages import handle_file_share
from handlers.views import handle_clone_submission


class Ack:
    """Records what the listener acknowledged with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


class FakeIntake:
    def __init__(self) -> None:
        self.accepted: list[tuple[list[NewJob], bool]] = []
        self.hints: list[tuple[Any, ...]] = []

    async def accept(self, jobs: list[NewJob], *, react: bool = False, admit: Any = None) -> list[int]:
        self.accepted.append((jobs, react))
        return list(range(1, len(jobs) + 1))

    async def hint(self, *args: Any) -> None:
        self.hints.append(args)


class FakeConsent:
    def __init__(self) -> None:
        self.confirmed: list[tuple[int, str | None, tuple[str | None, str | None]]] = []

    async def confirm(self, job_id: int, user_id: str | None, where: tuple[str | None, str | None]) -> bool:
        self.confirmed.append((job_id, user_id, where))
        return True


class OpenQuotas:
    """Admits everything: the limits themselves are tested end to end (tests/test_fair_use.py)."""

    def admission(self, *args: Any) -> None:
        return None


def context_with(**services: Any) -> AsyncBoltContext:
    """A Bolt context holding Services of fakes (what a listener does not use is None)."""
    context = AsyncBoltContext()
    fields = {"intake": None, "consent": None, "voices": None, "library": None, "outbox": None, "quotas": OpenQuotas()}
    context["services"] = Services(**{**fields, **services})
    return context


async def test_a_file_share_stores_a_job_per_recording_carrying_its_option_problem() -> None:
    intake = FakeIntake()
    body = {
        "team_id": "T0TEAM", "event_id": "Ev0SHARE",
        "event": {
            "type": "message", "subtype": "file_share", "channel": "C0GENERAL", "channel_type": "channel",
            "user": "U0USER", "ts": "1700000000.000100", "text": "here model=gpt-5",
            "files": [
                {"id": "F0MEMO", "name": "memo.wav", "mimetype": "audio/wav", "filetype": "wav"},
                {"id": "F0PDF", "name": "notes.pdf", "mimetype": "application/pdf", "filetype": "pdf"},
            ],
        },
    }
    await handle_file_share(body, context_with(intake=intake))
    [(jobs, react)] = intake.accepted
    [job] = jobs
    assert react and (job.kind, job.file["id"], job.share_ts, job.team_id) == (
        "share", "F0MEMO", "1700000000.000100", "T0TEAM"
    )
    # Stored, to be answered by a worker in the thread; what is stored reads back as the typed error.
    problem = CloneOptions.from_dict(job.options).problem
    assert problem is not None and (problem.option, problem.value) == ("model", "gpt-5")
    assert intake.hints == []  # not a DM


async def test_a_consent_press_is_acknowledged_and_reaches_the_consent_buttons() -> None:
    consent, ack = FakeConsent(), Ack()
    body = {
        "actions": [{"action_id": "consent_confirm", "value": "42"}], "user": {"id": "U0OWNER"},
        "container": {"channel_id": "C0GENERAL", "message_ts": "1700000000.000200"},
    }
    await handle_consent_confirm(ack, body, context_with(consent=consent))
    assert ack.calls == [{}]
    assert consent.confirmed == [(42, "U0OWNER", ("C0GENERAL", "1700000000.000200"))]


async def test_a_form_without_the_consent_box_is_answered_with_errors_and_stores_nothing() -> None:
    intake, ack = FakeIntake(), Ack()
    view = {
        "id": "V0FORM", "private_metadata": '{"channel_id": "C0GENERAL"}',
        "state": {"values": {
            "audio": {"audio": {"files": [{"id": "F0MEMO", "name": "memo.wav", "mimetype": "audio/wav"}]}},
            "consent": {"consent": {"selected_options": []}},
        }},
    }
    body = {"user": {"id": "U0USER"}, "team": {"id": "T0TEAM"}, "view": view}
    await handle_clone_submission(ack, body, view, context_with(intake=intake))
    [answer] = ack.calls
    assert answer["response_action"] == "errors" and set(answer["errors"]) == {"consent"}
    assert intake.accepted == []
