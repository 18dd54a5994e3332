"""Turn what Slack sends (a file share, a modal submission, `/clone <file>`) into jobs, and store them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.errors import InvalidVoiceNameError, OptionError, PromptTextError
from bot.slack.files import looks_like_media
from bot.slack.replies import Replies
from bot.store.connection import Connection
from bot.store.jobs import Admission, NewJob
from bot.tencent.voiceclone import MAX_PROMPT_TEXT, validate_voice_name
from bot.voice.options import CloneOptions, parse_options

_FILE_ID = re.compile(r"\b(F[A-Z0-9]{6,})\b")
_FILE_LINK = re.compile(r"<?(https?://[^\s>|]+)(?:\|[^>]*)?>?")


class Queue(Protocol):
    """Where jobs wait for the workers (bot.work.pool.JobQueue)."""

    async def add(
        self, jobs: list[NewJob], *, wake: bool = True, admit: Admission | None = None,
        also: Callable[[Connection], None] | None = None,
    ) -> list[int]: ...

    def wake(self) -> None: ...


class Intake:
    """What the listeners hand over, on the acknowledgement path (database writes only): jobs for the workers, and
    the few messages that need no job. Slack hears "200" only once these are stored."""

    def __init__(self, queue: Queue, replies: Replies):
        self.queue = queue
        self.replies = replies

    async def accept(
        self, jobs: list[NewJob], *, react: bool = False, admit: Admission | None = None
    ) -> list[int]:
        """Store jobs (deduplicated), show the user an hourglass through the outbox, and wake the workers. With
        `admit` (a fair-use check), only if it admits them: else bot.store.jobs.Refused, and nothing is stored."""
        first = jobs[0] if jobs else None
        hourglass = None
        if react and first is not None and first.channel and first.share_ts:
            # In the job's own transaction, so before any worker may see the job: one that fails at once must not have
            # its final reaction overwritten by this hourglass. (One commit, not two, for each share of a burst.)
            hourglass = self.replies.working_write(first.channel, first.share_ts, first.team_id, user=first.user_id)
        ids = await self.queue.add(jobs, wake=False, admit=admit, also=hourglass)
        if not ids:
            return ids
        if hourglass is not None:
            self.replies.committed()
        self.queue.wake(len(ids))
        return ids

    async def hint(self, key: str, channel: str, text: str, thread_ts: str | None, team_id: str | None) -> None:
        """A one-off message, sent once per key however often Slack retries the event."""
        await self.replies.hint(key, channel, text, thread_ts, team_id)

    async def ephemeral(
        self, key: str, channel: str, user: str, text: str, thread_ts: str | None, team_id: str | None
    ) -> None:
        """A message only `user` sees, sent once per key."""
        await self.replies.ephemeral(key, channel, user, text, thread_ts, team_id)


@dataclass
class ShareIntake:
    """The jobs in one file share, and the files that were not media."""

    jobs: list[NewJob] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)
    is_dm: bool = False
    channel: str | None = None
    thread_ts: str | None = None
    problem: OptionError | None = None


def share_jobs(body: dict[str, Any]) -> ShareIntake:
    """One job per audio or video file in a `message`/`file_share` event."""
    event = body.get("event", {})
    channel = event.get("channel")
    ts = event.get("ts")
    thread_ts = event.get("thread_ts") or ts
    intake = ShareIntake(is_dm=event.get("channel_type") == "im", channel=channel, thread_ts=thread_ts)
    try:
        options = parse_options(event.get("text"))
    except OptionError as exc:
        # Still store the job, carrying the problem: the worker answers it in the thread, exactly once.
        options = CloneOptions(problem=exc)
        intake.problem = exc
    for file in event.get("files") or []:
        if not looks_like_media(file):
            intake.ignored.append(file)
            continue
        intake.jobs.append(
            NewJob(
                dedupe_key=f"share:{channel}:{ts}:{file.get('id')}",
                kind="share",
                file=file,
                options=options.as_dict(),
                channel=channel,
                thread_ts=thread_ts,
                share_ts=ts,
                user_id=event.get("user"),
                team_id=body.get("team_id"),
                event_id=body.get("event_id"),
                # The uploader's voice: a file shared again by someone else is still the uploader's to consent to.
                speaker=file.get("user") or event.get("user"),
            )
        )
    return intake


def file_reference(text: str) -> tuple[str | None, str]:
    """Split `/clone` text into a file id (from a link or a bare id) and the rest (options)."""
    link = _FILE_LINK.search(text)
    source = link.group(1) if link else text
    match = _FILE_ID.search(source)
    if not match:
        return None, text
    rest = text[: link.start()] + text[link.end() :] if link else text.replace(match.group(1), " ", 1)
    return match.group(1), rest.strip()


def command_job(command: dict[str, Any], file_id: str, options: CloneOptions) -> NewJob:
    """The job for `/clone <file> [options]`; answered in a new thread in the command's channel."""
    return NewJob(
        dedupe_key=f"command:{command.get('trigger_id') or command.get('response_url')}:{file_id}",
        kind="command",
        file={"id": file_id},
        options=options.as_dict(),
        channel=command.get("channel_id"),
        user_id=command.get("user_id"),
        team_id=command.get("team_id"),
        response_url=command.get("response_url"),
    )


@dataclass
class ModalInput:
    """A validated `/clone` form."""

    file: dict[str, Any] | None
    options: CloneOptions
    channel_id: str | None
    errors: dict[str, str]


def _value(values: dict[str, Any], block: str) -> dict[str, Any]:
    return values.get(block, {}).get(block, {}) or {}


def read_modal(view: dict[str, Any]) -> ModalInput:
    """Read the form's state; `errors` maps block ids to what the user must fix."""
    values = view.get("state", {}).get("values", {})
    errors: dict[str, str] = {}
    files = _value(values, "audio").get("files") or []
    file = files[0] if files else None
    if file is None:
        errors["audio"] = "Attach one recording."
    elif not looks_like_media(file):
        errors["audio"] = "That file doesn't look like audio or video."
    name = (_value(values, "name").get("value") or "").strip() or None
    if name is not None:
        try:
            validate_voice_name(name)
        except InvalidVoiceNameError:
            errors["name"] = "Use letters, digits and _ only, up to 36 characters."
    text = (_value(values, "text").get("value") or "").strip() or None
    if text is not None and len(text) > MAX_PROMPT_TEXT:
        errors["text"] = str(PromptTextError(len(text), MAX_PROMPT_TEXT)).capitalize() + "."
    language = (_value(values, "language").get("selected_option") or {}).get("value")
    model = (_value(values, "model").get("selected_option") or {}).get("value")
    consent = _value(values, "consent").get("selected_options") or []
    if not any(o.get("value") == "yes" for o in consent):
        errors["consent"] = "Please confirm you have the right to clone this voice."
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        metadata = {}
    options = CloneOptions(
        name=name,
        language=None if language in (None, "auto") else language,
        model=None if model in (None, "auto") else model,
        text=text,
    )
    return ModalInput(file=file, options=options, channel_id=metadata.get("channel_id"), errors=errors)


def modal_job(view: dict[str, Any], user_id: str | None, team_id: str | None, form: ModalInput) -> NewJob:
    """The job for a submitted form; answered in a new thread in the channel `/clone` was run in."""
    assert form.file is not None
    return NewJob(
        dedupe_key=f"modal:{view.get('id')}:{form.file.get('id')}",
        kind="modal",
        file=form.file,
        options=form.options.as_dict(),
        channel=form.channel_id,
        user_id=user_id,
        team_id=team_id,
        speaker=form.file.get("user") or user_id,
    )
