"""The job runner: the bot's own bounded workers that download, convert, clone and answer in Slack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.audio import AudioLimits
from bot.blocks import build_failure, build_parent, build_status, build_success
from bot.errors import BotError, NotAudioError, OptionError
from bot.jobs import DONE, FAILED, QUEUED, RUNNING, Job, JobStore, NewJob
from bot.messages import describe
from bot.pipeline import CloneRequest, CloneResult, check_request, clone_recording
from bot.settings import Settings
from bot.slack_files import download_file, looks_like_media, resolve_file
from bot.trtc import VoiceCloneClient, default_voice_name

log = logging.getLogger(__name__)

WORKING = "hourglass_flowing_sand"
SUCCEEDED = "white_check_mark"
FAILED_REACTION = "x"
# Errors Slack gives for a reaction that is already (or no longer) there: harmless on a retried job.
_REACTION_NOOPS = {"already_reacted", "no_reaction", "message_not_found"}


class ChannelPacer:
    """Spaces new messages in one channel (Slack allows about one chat.postMessage a second per channel)."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._next: dict[str, float] = {}

    async def wait(self, channel: str) -> None:
        """Return when a message may be posted to `channel`."""
        now = time.monotonic()
        if len(self._next) > 1000:
            # Forget channels whose next slot is already past, so a long-running bot does not grow without end.
            self._next = {c: t for c, t in self._next.items() if t > now}
        start = max(now, self._next.get(channel, 0.0))
        self._next[channel] = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class JobRunner:
    """Takes stored jobs and sees each through to exactly one final answer."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        slack: AsyncWebClient,
        trtc: VoiceCloneClient,
        http: httpx.AsyncClient,
        *,
        workers: int | None = None,
        ffmpeg_slots: int | None = None,
        pace_interval: float = 1.0,
        audio_limits: AudioLimits | None = None,
        temp_dir: str | Path | None = None,
    ):
        self.settings = settings
        self.store = store
        self.slack = slack
        self.trtc = trtc
        self.http = http
        self.workers = workers or settings.workers
        self.ffmpeg_slots = asyncio.Semaphore(ffmpeg_slots or os.cpu_count() or 1)
        self.feedback_slots = asyncio.Semaphore(16)
        self.pacer = ChannelPacer(pace_interval)
        self.audio_limits = audio_limits or AudioLimits()
        self.temp_dir = Path(temp_dir or tempfile.gettempdir())
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._in_flight: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._said: dict[str, None] = {}
        # The hourglass reaction added off the ack path, per (channel, share ts), until it has landed.
        self._hourglass: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self.accepting = False
        self.on_finish: Callable[[Job, str], Awaitable[None]] | None = None

    # -- life cycle -------------------------------------------------------------------------------------

    async def start(self) -> int:
        """Start the workers and queue every job a previous run left unfinished; return how many."""
        self.accepting = True
        for _ in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work()))
        pending = await self.store.unfinished()
        for job_id in pending:
            self._submit(job_id)
        if pending:
            log.info("resuming %d unfinished job(s)", len(pending))
        return len(pending)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking work, let jobs in flight finish within `grace` seconds, leave the rest stored."""
        self.accepting = False
        grace = self.settings.shutdown_grace if grace is None else grace
        # Workers take nothing new: what is queued stays queued in the store for the next start.
        while not self._queue.empty():
            self._queue.get_nowait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        for task in [*self._tasks, *self._side_tasks]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._side_tasks, return_exceptions=True)
        self._tasks.clear()

    async def drain(self) -> None:
        """Wait until the queue is empty and no job is in flight (tests, demo, benchmarks)."""
        while True:
            await self._queue.join()
            await self._idle.wait()
            if self._queue.empty() and not self._in_flight:
                return

    # -- intake (runs on the acknowledgement path: keep it short) --------------------------------------

    async def accept(self, jobs: list[NewJob], *, react: bool = False) -> list[int]:
        """Store jobs (deduplicated), queue the new ones, and show the user a reaction at once."""
        if not jobs:
            return []
        ids = await self.store.add(jobs)
        if ids and react:
            first = jobs[0]
            if first.channel and first.share_ts:
                key = (first.channel, first.share_ts)
                task = self._background(self._react(first.channel, first.share_ts, WORKING))
                self._hourglass[key] = task
                task.add_done_callback(lambda _: self._hourglass.pop(key, None))
        for job_id in ids:
            self._submit(job_id)
        return ids

    def say(self, channel: str, text: str, thread_ts: str | None = None, once: str | None = None) -> None:
        """Post a short message off the acknowledgement path (hints; nothing durable); `once` dedupes."""
        if once is not None:
            if once in self._said:
                return
            self._said[once] = None
            while len(self._said) > 10_000:
                self._said.pop(next(iter(self._said)))
        self._background(self._post(channel, text=text, thread_ts=thread_ts))

    def _submit(self, job_id: int) -> None:
        if self.accepting:
            self._queue.put_nowait(job_id)

    def _background(self, coro: Awaitable[Any]) -> asyncio.Task[None]:
        async def guarded() -> None:
            async with self.feedback_slots:
                try:
                    await coro
                except SlackApiError as exc:
                    log.warning("Slack call failed: %s", exc.response.get("error"))

        task = asyncio.create_task(guarded())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        return task

    # -- workers ----------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            self._in_flight.add(job_id)
            self._idle.clear()
            try:
                await self._process(job_id)
            except SlackApiError as exc:
                # The final answer could not be posted even after retries: leave the job to the next start.
                log.warning("job %s: final answer not posted (%s); kept for retry", job_id, exc.response.get("error"))
            except Exception:
                # The worker boundary: a bug must not kill the worker or leave the user waiting forever.
                log.exception("job %s crashed", job_id)
                await self._fail_unexpectedly(job_id)
            finally:
                self._in_flight.discard(job_id)
                if not self._in_flight:
                    self._idle.set()
                self._queue.task_done()

    async def _process(self, job_id: int) -> None:
        job = await self.store.get(job_id)
        if job is None or job.status not in (QUEUED, RUNNING):
            return
        job.attempts += 1
        await self.store.update(job.id, status=RUNNING, attempts=job.attempts)
        file_name = str(job.file.get("name") or job.file.get("title") or job.file.get("id") or "recording")
        try:
            await self._open_thread(job, file_name)
            result = CloneResult.from_dict(job.result) if job.result else None
            if result is None:
                result = await self._clone(job)
                # Stored before answering: a restart answers from here instead of cloning again.
                await self.store.update(job.id, result=result.to_dict())
            file_name = str(job.file.get("name") or file_name)
            text, blocks = build_success(result, file_name)
            status = DONE
            error: dict[str, Any] | None = None
        except BotError as exc:
            text, blocks = build_failure(describe(exc), file_name)
            status = FAILED
            error = {"type": type(exc).__name__, "code": getattr(exc, "code", None)}
            log.info("job %s failed: %s", job.id, type(exc).__name__)
        except SlackApiError as exc:
            # Slack itself refused (bot removed from the channel, deleted thread...): nowhere left to answer.
            log.warning("job %s: Slack refused %s", job.id, exc.response.get("error"))
            await self.store.update(job.id, status=FAILED, error={"slack": exc.response.get("error")})
            return
        await self._finish(job, status, text, blocks)
        await self.store.update(job.id, status=status, error=error)
        if self.on_finish is not None:
            await self.on_finish(job, status)

    async def _fail_unexpectedly(self, job_id: int) -> None:
        job = await self.store.get(job_id)
        if job is None:
            return
        await self.store.update(job_id, status=FAILED, error={"type": "crash"})
        if job.channel is None:
            return
        text, blocks = build_failure(describe(RuntimeError()), str(job.file.get("name") or "recording"))
        with contextlib.suppress(SlackApiError):
            await self._finish(job, FAILED, text, blocks)

    async def _open_thread(self, job: Job, file_name: str) -> None:
        """Make sure there is a thread to answer in and a status message in it."""
        if job.channel is None:
            raise BotError("no channel to answer in")
        if job.thread_ts is None:
            response = await self._post(job.channel, text=build_parent(job.user_id, file_name))
            job.thread_ts = response["ts"]
            await self.store.update(job.id, thread_ts=job.thread_ts)
        if job.status_ts is None:
            text, blocks = build_status("downloading", file_name)
            response = await self._post(job.channel, text=text, blocks=blocks, thread_ts=job.thread_ts)
            job.status_ts = response["ts"]
            await self.store.update(job.id, status_ts=job.status_ts, stage="downloading")

    async def _clone(self, job: Job) -> CloneResult:
        problem = job.options.get("problem")
        if problem:
            raise OptionError(problem.get("option") or "", problem.get("value") or "", problem.get("allowed") or "")
        file = await resolve_file(self.slack, job.file)
        if file is not job.file:
            job.file = file
            await self.store.update(job.id, file=file)
        if not looks_like_media(file):
            raise NotAudioError("not an audio or video file")
        name = job.options.get("name") or default_voice_name(str(file.get("name") or file.get("title") or ""))
        request = CloneRequest(
            name=name,
            text=job.options.get("text"),
            model=job.options.get("model"),
            language=job.options.get("language"),
        )
        check_request(request)
        token = self.settings.slack_bot_token.get() if self.settings.slack_bot_token else ""
        path = await download_file(
            self.http,
            file,
            token=token,
            api_url=self.settings.slack_api_url,
            dest_dir=self.temp_dir,
            max_bytes=self.settings.max_download_bytes,
        )
        try:
            return await clone_recording(
                path,
                request,
                self.trtc,
                limits=self.audio_limits,
                ffmpeg_slots=self.ffmpeg_slots,
                on_stage=lambda stage: self._stage(job, stage),
            )
        finally:
            Path(path).unlink(missing_ok=True)

    async def _stage(self, job: Job, stage: str) -> None:
        if job.channel and job.status_ts:
            text, blocks = build_status(stage, str(job.file.get("name") or "recording"))
            await self.slack.chat_update(channel=job.channel, ts=job.status_ts, text=text, blocks=blocks)
        await self.store.update(job.id, stage=stage)

    async def _finish(self, job: Job, status: str, text: str, blocks: list[dict[str, Any]]) -> None:
        """The one final answer: the status message becomes the result (an update is idempotent)."""
        assert job.channel is not None
        if job.status_ts:
            await self.slack.chat_update(channel=job.channel, ts=job.status_ts, text=text, blocks=blocks)
        else:
            await self._post(job.channel, text=text, blocks=blocks, thread_ts=job.thread_ts)
        if job.kind == "share" and job.share_ts:
            # A rate-limited hourglass still waiting to be added would land after its removal and stay.
            hourglass = self._hourglass.get((job.channel, job.share_ts))
            if hourglass is not None:
                await asyncio.wait({hourglass})
            await self._unreact(job.channel, job.share_ts, WORKING)
            await self._react(job.channel, job.share_ts, SUCCEEDED if status == DONE else FAILED_REACTION)

    # -- Slack helpers ----------------------------------------------------------------------------------

    async def _post(self, channel: str, **kwargs: Any) -> Any:
        await self.pacer.wait(channel)
        return await self.slack.chat_postMessage(channel=channel, **kwargs)

    async def _react(self, channel: str, ts: str, name: str) -> None:
        try:
            await self.slack.reactions_add(channel=channel, timestamp=ts, name=name)
        except SlackApiError as exc:
            if exc.response.get("error") not in _REACTION_NOOPS:
                raise

    async def _unreact(self, channel: str, ts: str, name: str) -> None:
        try:
            await self.slack.reactions_remove(channel=channel, timestamp=ts, name=name)
        except SlackApiError as exc:
            if exc.response.get("error") not in _REACTION_NOOPS:
                raise
