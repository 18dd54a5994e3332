"""The voice lifecycle behind the Slack handlers: remember each clone, preview it in its thread, make it speak,
list, rename and forget it. Everything the user sees goes through the outbox (uploads included).

Speech for a Workflow Builder step (`step=` the function execution id) takes the same path: a `say` job, the clip
uploaded by the outbox; the upload carries the execution id and its delivery stores the step's end (the permalink),
while a refusal or failure stores the step's end with its reason instead of a note to the user. The end is keyed by
the execution (bot.store.outbox.step_key): whichever comes first is the one Slack hears."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from bot.errors import ApiError, InputError
from bot.settings import Settings
from bot.slack.replies import Replies, file_name
from bot.slack.workspaces import Workspaces
from bot.store.jobs import SAY, Admission, Job, NewJob
from bot.store.library import VoiceLibrary, VoiceRecord, may_reach
from bot.store.outbox import Outbox, StepEnd
from bot.tencent.tts import SpeechParamError, TextToSpeechClient, Voice
from bot.ui.speak_blocks import STEP_CRASHED, STEP_FORGOTTEN, step_say_failed
from bot.ui.voice_blocks import (
    build_home,
    build_preview_failed,
    build_say_failed,
    describe_tts_error,
    preview_text,
    speech_comment,
)
from bot.voice.joining import speak_long
from bot.voice.pipeline import CloneResult
from bot.work.pool import JobQueue

log = logging.getLogger(__name__)


class VoiceService:
    """Library, previews and speech; background work runs on tracked tasks (`drain()` waits for them)."""

    def __init__(
        self, settings: Settings, library: VoiceLibrary, tts: TextToSpeechClient, outbox: Outbox,
        workspaces: Workspaces, *, queue: JobQueue | None = None,
    ):
        self.settings = settings
        self.library = library
        self.tts = tts
        self.outbox = outbox
        # Where a "say" waits for the workers (they call say_job); None: say() runs in this process.
        self.queue = queue
        self.workspaces = workspaces
        self.root = Path(settings.data_path) / "speech"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._tasks: set[asyncio.Task[None]] = set()
        self.sweep()

    def sweep(self) -> int:
        """Delete clips no pending upload holds (a crash between writing one and storing its record)."""
        keep = self.outbox.pending_upload_paths()
        removed = 0
        for path in self.root.glob("*.mp3"):
            if str(path) not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- background tasks --------------------------------------------------------------------------------

    def spawn(self, coro: Any, name: str) -> None:
        """Run `coro` in the background, logged if it fails, awaited by drain()."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", name)

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every preview, speech and Home publish in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        """Cancel what is in flight (a preview lost to a shutdown is not retried)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- after a clone -----------------------------------------------------------------------------------

    async def on_cloned(self, job: Job, result: CloneResult) -> None:
        """The runner answered a clone: record the voice as its speaker's, then preview it in its thread (in the
        background). Nothing is recorded when a forget-me removed the job meanwhile (VoiceLibrary.add)."""
        try:
            voice = VoiceRecord(
                team_id=job.team_id or "", voice_id=result.voice_id, voice_name=result.name,
                owner=job.speaker or job.user_id,
                created_at=time.time(), file_name=file_name(job), seconds=result.seconds,
                model=result.model or self.settings.voiceclone_model, language=result.language,
                channel=job.channel or job.user_id, thread_ts=job.thread_ts, request_id=result.request_id,
                job_id=job.id,
            )
            added = await self.library.add(voice)
        except Exception:
            log.exception("job %s: could not record voice %s in the library", job.id, result.voice_id)
            return
        if self.settings.preview and added:
            await self.library.set_preview(voice.team_id, voice.voice_id, "pending")
            self.spawn(self.preview(voice), f"preview-{job.id}")

    async def resume(self) -> int:
        """Make the previews a stop interrupted (cloned within ANSWER_TTL_HOURS); return how many."""
        if not self.settings.preview:
            return 0
        pending = await self.library.pending_previews(time.time() - self.settings.answer_ttl_hours * 3600)
        for voice in pending:
            self.spawn(self.preview(voice), f"preview-{voice.job_id}")
        if pending:
            log.info("resuming %d preview(s) a stop interrupted", len(pending))
        return len(pending)

    @staticmethod
    def _where(voice: VoiceRecord) -> dict[str, Any]:
        """The voice's thread: the share's, or the parent message the bot posts for a form or /clone request."""
        channel = voice.channel or voice.owner or ""
        if voice.thread_ts is not None:
            return {"channel": channel, "thread_ts": voice.thread_ts}
        return {"channel": channel, "thread_key": f"job:{voice.job_id}:parent"}

    async def preview(self, voice: VoiceRecord) -> None:
        """Speak the preview sentence and upload it into the thread, after the answer; or say why not."""
        try:
            await self._preview(voice)
        finally:
            # Stored in the outbox (or refused for good): from here the outbox carries it through any stop.
            await self.library.set_preview(voice.team_id, voice.voice_id, "done")

    async def _preview(self, voice: VoiceRecord) -> None:
        job_id = voice.job_id
        team_id = voice.team_id or None
        where = self._where(voice)
        after = Replies.status_key(job_id or 0)
        text = preview_text(voice.language, self.settings.preview_text)
        try:
            speech = await self.tts.speak(text, Voice(voice.voice_id), language=voice.language)
        except (ApiError, InputError) as exc:
            code = exc.code if isinstance(exc, ApiError) else None
            request_id = exc.request_id if isinstance(exc, ApiError) else None
            sentence = describe_tts_error(exc, voice.model) if isinstance(exc, ApiError) else str(exc)
            log.info("job %s: no preview for %s (%s, RequestId %s)", job_id, voice.voice_id, code, request_id)
            message, blocks = build_preview_failed(sentence, code, request_id)
            await self.outbox.put_message(
                f"preview:{job_id}:failed", text=message, blocks=blocks, after_key=after, team_id=team_id,
                job_id=job_id, once=True, user=voice.owner, **where,
            )
            return
        path = self._save(speech.audio)
        await self.outbox.put_upload(
            f"preview:{job_id}", path=path, filename=f"{voice.voice_name}-preview.mp3",
            title=f"{voice.voice_name} preview", comment=speech_comment(None, voice, text, preview=True),
            after_key=after, team_id=team_id, job_id=job_id, user=voice.owner, **where,
        )

    def _save(self, audio: bytes) -> Path:
        """The clip's bytes in the data folder, mode 0600 from the first byte; the sender deletes it once sent."""
        path = self.root / f"{secrets.token_hex(8)}.mp3"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(audio)
        return path

    # -- speaking ----------------------------------------------------------------------------------------

    async def reachable(self, team_id: str | None, user: str | None, ref: str) -> VoiceRecord | None:
        """The voice `ref` names, if `user` may reach it (never tells whether someone else's exists). Admins are
        those of `team_id` (ADMIN_USERS' T...:U...): an admin of one workspace is no admin of another."""
        admins = self.settings.admins_in(team_id)
        voice = await self.library.find(team_id, user, ref, admins)
        return voice if voice is not None and may_reach(voice, user, admins) else None

    async def request_say(
        self, voice: VoiceRecord, user: str | None, text: str, *, speed: float = 1.0, volume: float = 1.0,
        pitch: int = 0, channel: str | None = None, thread_ts: str | None = None, step: str | None = None,
        admit: Admission | None = None,
    ) -> None:
        """Ask a worker to `say()` this: stored as a job before the acknowledgement (a stop loses nothing, and a web
        replica makes no TRTC call); without a queue it is spoken here in the background. `step`: the Workflow
        Builder execution it answers (one job per execution, however often Slack sends the event). `admit`: the
        fair-use check it is stored with (bot.work.quotas); a refusal raises bot.store.jobs.Refused."""
        if self.queue is None:
            self.spawn(self.say(voice, user, text, speed=speed, volume=volume, pitch=pitch, channel=channel,
                                thread_ts=thread_ts, step=step), "say")
            return
        options: dict[str, Any] = {"voice_id": voice.voice_id, "text": text, "speed": speed, "volume": volume,
                                   "pitch": pitch}
        if step:
            options["step"] = step
        await self.queue.add([NewJob(
            dedupe_key=f"step:{step}" if step else f"say:{secrets.token_hex(8)}", kind=SAY, file={}, options=options,
            channel=channel, thread_ts=thread_ts, user_id=user, team_id=voice.team_id or None,
        )], admit=admit)

    async def say_job(self, job: Job) -> None:
        """A worker's side of request_say()."""
        options = job.options
        step = str(options.get("step") or "") or None
        if step and (await self.outbox.step_ended(step) or await self.outbox.get(_clip_key(step)) is not None):
            log.info("job %s: its workflow step has ended, or its clip is made, already; not speaking", job.id)
            return
        voice = await self.library.get(job.team_id or "", str(options.get("voice_id")))
        if voice is None:
            log.info("job %s: the voice to speak with was forgotten meanwhile", job.id)
            if step:
                await self.fail_step(step, STEP_FORGOTTEN, team_id=job.team_id, channel=job.channel, user=job.user_id,
                                     job_id=job.id)
            return
        try:
            await self.say(
                voice, job.user_id, str(options.get("text") or ""), speed=float(options.get("speed", 1.0)),
                volume=float(options.get("volume", 1.0)), pitch=int(options.get("pitch", 0)), channel=job.channel,
                thread_ts=job.thread_ts, step=step,
            )
        except Exception:
            if step:
                # The step ends here, with a reason: a workflow must not wait for a clip that will not come (the
                # runner's retry then finds the step ended and stops).
                await self.fail_step(step, STEP_CRASHED, team_id=job.team_id, channel=job.channel, user=job.user_id,
                                     job_id=job.id)
            raise

    async def fail_step(
        self, step: str, reason: str, *, team_id: str | None, channel: str | None, user: str | None,
        job_id: int | None = None,
    ) -> bool:
        """End the Workflow Builder step `step` with `reason` (functions.completeError, sent by the outbox), unless
        it has ended already; True when this is its end."""
        end = StepEnd(step, channel or user or "-", error=reason, team_id=team_id or None, user=user, job_id=job_id)
        return await self.outbox.put_step_end(end)

    async def say(
        self, voice: VoiceRecord, user: str | None, text: str, *, speed: float = 1.0, volume: float = 1.0,
        pitch: int = 0, channel: str | None = None, thread_ts: str | None = None, step: str | None = None,
    ) -> None:
        """Speak `text` and post it (in `channel`/`thread_ts`, else the voice's own thread); errors go to `user`,
        or end the workflow step `step`."""
        if channel is None:
            channel, thread_ts = voice.channel, voice.thread_ts
            if thread_ts is None and voice.job_id is not None:
                parent = await self.outbox.get(f"job:{voice.job_id}:parent")
                if parent is not None and parent.ts:
                    channel, thread_ts = parent.channel, parent.ts
        channel = channel or user or ""
        try:
            spoken = Voice(voice.voice_id, speed, volume, pitch)
            speech = await speak_long(self.tts, text, spoken, language=voice.language)
        except (ApiError, SpeechParamError) as exc:
            if isinstance(exc, ApiError):
                sentence, code, rid = describe_tts_error(exc, voice.model), exc.code, exc.request_id
            else:
                sentence, code, rid = f"the {exc.field} must be {exc.allowed}.", None, None
            if step:
                log.info("workflow step %s: no speech (%s, RequestId %s)", step, code, rid)
                await self.fail_step(step, step_say_failed(voice.title, sentence, code, rid),
                                     team_id=voice.team_id, channel=channel, user=user)
                return
            note = build_say_failed(voice.title, sentence, code, rid)
            if user:
                await self.outbox.put_ephemeral(
                    f"say:{secrets.token_hex(6)}:failed", channel=channel, user=user, text=note, thread_ts=thread_ts,
                    team_id=voice.team_id or None,
                )
            return
        path = self._save(speech.audio)
        await self.outbox.put_upload(
            _clip_key(step) if step else f"say:{secrets.token_hex(8)}", channel=channel, thread_ts=thread_ts,
            path=path, filename=f"{voice.voice_name}-says.mp3", title=f"{voice.title} says",
            comment=speech_comment(user, voice, text, preview=False), team_id=voice.team_id or None, user=user,
            step=step,
        )

    # -- App Home ----------------------------------------------------------------------------------------

    async def publish_home(self, team_id: str | None, user: str) -> None:
        """Publish `user`'s "Your voices" Home tab (only their own voices, admins included)."""
        voices = await self.library.listed(team_id or "", user)
        client = await self.workspaces.client(team_id)
        if client is not None:
            await client.views_publish(user_id=user, view=build_home(voices))


def _clip_key(step: str) -> str:
    """The outbox key of a workflow step's clip: one upload per execution."""
    return f"step:{step}:clip"
