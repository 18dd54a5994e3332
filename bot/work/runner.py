"""The job runner: moves each stored job through fetch -> prepare -> clone -> result, storing each outcome.

It never talks to Slack about a job: what the user sees is written to the outbox (bot.slack.replies) and delivered by
bot.slack.sender at Slack's pace, so cloning runs at the API's pace whatever Slack does. Failures are sorted three ways:
- the user's problem (bad audio, an API refusal): answered at once, the job ends;
- the world's problem (Slack or Tencent unreachable, 5xx, throttling): the job waits with backoff and retries,
  without holding a worker, until ANSWER_TTL_HOURS;
- the bot's problem (a crash, a timeout): the attempt is counted; the third ends the job with "could not process".
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

from bot import metrics
from bot.errors import ApiError, BotError, DownloadError, FileAccessError, NotAudioError, QuotaError
from bot.logs import log_context
from bot.retry import jittered_delay
from bot.settings import Settings
from bot.slack.files import looks_like_media
from bot.slack.replies import Replies, file_name, refresh_share
from bot.slack.workspaces import Workspaces
from bot.store.audit import ATTESTED, FORM, Audit, AuditEntry
from bot.store.jobs import AWAITING, DONE, FAILED, SAY, Job
from bot.store.prepared import PreparedAudio
from bot.tencent.voiceclone import VoiceCloneClient, default_voice_name
from bot.ui.consent_blocks import (
    build_file_refused,
    build_forgotten_clone,
    consent_note,
    may_use_file,
)
from bot.ui.job_blocks import GAVE_UP, build_failure, build_report_card, build_success
from bot.ui.texts import describe
from bot.voice.audio import AudioLimits
from bot.voice.options import CloneOptions
from bot.voice.pipeline import CloneRequest, CloneResult, Prompt, check_request, clone_prompt, prepare_prompt
from bot.work.fetch import Fetcher, Waiting
from bot.work.pool import JobQueue, LeaseLost, WorkerPool
from bot.work.quotas import Quotas
from bot.work.transcripts import with_transcript


def _limiter_errors() -> tuple[type[BaseException], ...]:
    """RedisError once the shared limiter (REDIS_URL) has loaded redis, else nothing: redis is imported only with
    REDIS_URL (it pulls in `cryptography`, ~5 MB a process), and without it no RedisError can happen."""
    exceptions = sys.modules.get("redis.exceptions")
    return (exceptions.RedisError,) if exceptions is not None else ()

log = logging.getLogger(__name__)

# A job that crashed the process or timed out this many times is answered "could not process" and ends.
MAX_ATTEMPTS = 3
# What a Workflow Builder step whose speech was given up ends with (functions.completeError: plain text).
STEP_GAVE_UP = (
    "The clip could not be made: three attempts failed (the bot stopped or ran out of time). Try again, or ask your "
    "Slack admin to check the bot's logs."
)


class Voices(Protocol):
    """What the runner hands on to the voice library (bot.work.voice_service.VoiceService)."""

    async def on_cloned(self, job: Job, result: CloneResult) -> None:
        """A clone has been answered: remember the voice, preview it."""

    async def say_job(self, job: Job) -> None:
        """Run a "say" job (stored by the library's own request_say)."""

    async def fail_step(
        self, step: str, reason: str, *, team_id: str | None, channel: str | None, user: str | None,
        job_id: int | None = None,
    ) -> bool:
        """End a Workflow Builder step with `reason`, unless it has ended already."""


class JobRunner(WorkerPool):
    """Sees each stored job through to exactly one final answer in the outbox; bot.work.pool runs the workers
    that claim the jobs (leases, wake-ups, shutdown)."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        replies: Replies,
        audit: Audit,
        prepared: PreparedAudio,
        workspaces: Workspaces,
        trtc: VoiceCloneClient,
        http: httpx.AsyncClient,
        *,
        voices: Voices | None = None,
        quotas: Quotas | None = None,
        workers: int | None = None,
        ffmpeg_slots: int | None = None,
        audio_limits: AudioLimits | None = None,
        temp_dir: str | Path | None = None,
        max_backoff: float = 300.0,
        tencent_wait: float = 1800.0,
    ):
        super().__init__(settings, queue, workers=workers)
        self.replies = replies
        # None: a clone is only answered, and a "say" job ends without speaking.
        self.voices = voices
        # None: no fair-use limits (the operator's command line); else a new voice is checked before VoiceClone.
        self.quotas = quotas
        self.audit = audit
        self.prepared = prepared
        self.workspaces = workspaces
        self.trtc = trtc
        self.http = http
        self.ffmpeg_slots = asyncio.Semaphore(ffmpeg_slots or os.cpu_count() or 1)
        self.audio_limits = audio_limits or AudioLimits(timeout=settings.ffmpeg_timeout)
        self.temp_dir = Path(temp_dir or tempfile.gettempdir())
        self.max_backoff = max_backoff
        # How long a job waits out a Tencent outage (5xx, throttling, unreachable) before answering with the
        # error; Slack outages are waited out for the whole answer TTL, as the answer cannot go out anyway.
        self.tencent_wait = tencent_wait
        self._stages: dict[int, tuple[str | None, float]] = {}  # job -> (current stage, when it began)

    async def _attempt(self, job: Job) -> None:
        with log_context(job_id=job.id, team=job.team_id, channel=job.channel):
            if job.attempts > MAX_ATTEMPTS:
                # Earlier attempts crashed the process or timed out: answer instead of crash-looping.
                log.error("job %s: %d attempts failed; giving up", job.id, job.attempts - 1)
                await self._answer_failure(job, GAVE_UP, outcome="given_up")
                return
            try:
                async with asyncio.timeout(self.settings.job_timeout):
                    await self._run(job)
            except Waiting as waiting:
                await self._wait(job, waiting)
            except LeaseLost:
                log.warning("job %s: another worker took it over (this one's lease ran out); leaving it", job.id)
            except TimeoutError:
                log.error("job %s: attempt %d timed out after %.0f s", job.id, job.attempts, self.settings.job_timeout)
                await self._attempt_failed(job)
            except Exception:
                log.exception("job %s: attempt %d crashed", job.id, job.attempts)
                await self._attempt_failed(job)

    async def _run(self, job: Job) -> None:
        if job.kind == SAY:
            if self.voices is not None:
                await self.voices.say_job(job)
            await self.store.update(job.id, status=DONE, finished_at=time.time())
            return
        if job.result:
            # Cloned before a restart: answer from the stored result, never clone twice.
            result = CloneResult.from_dict(job.result)
        else:
            try:
                cloned = await self._clone(job)
            except BotError as exc:
                await self._answer_failure(job, describe(exc), error=exc)
                return
            if cloned is None:
                return  # prepared, waiting for the uploader's consent
            result = cloned
            # Stored before answering: a restart answers from here instead of cloning again.
            if not await self.store.update(job.id, result=result.to_dict()):
                # The speaker (or the requester) ran forget-me while Tencent was cloning: the bot keeps nothing.
                await self._answer_forgotten(job, result)
                return
        text, blocks = build_success(result, str(job.file.get("name") or file_name(job)))
        note = consent_note(self._consent(job))
        if note:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
        await self.replies.final(job, text, blocks)
        await self._finish(job, DONE, None, "done")
        if self.voices is not None:
            await self.voices.on_cloned(job, result)

    def _consent(self, job: Job) -> dict[str, Any] | None:
        """The consent this job already has: given by button, by the form's box, or by workspace policy. Someone
        else's recording is cloned only on its speaker's own press, whatever the form or the policy says."""
        if job.consent:
            return job.consent
        if job.speaker and job.speaker != job.user_id:
            return None
        if job.kind == "modal":
            # The form's required consent box, checked server-side when the form was submitted.
            return {"how": FORM, "user": job.user_id, "at": job.created_at}
        if self.settings.consent == "attested":
            return {"how": ATTESTED, "user": job.user_id, "at": job.created_at}
        return None

    async def _clone(self, job: Job) -> CloneResult | None:
        """Fetch, prepare and clone; None when the prompt is prepared and now waits for consent."""
        problem = CloneOptions.from_dict(job.options).problem
        if problem is not None:
            raise problem
        if job.kind == "command" and job.speaker is None and not await self._may_clone(job):
            return None
        consent = self._consent(job)
        prompt = None
        if job.prompt and consent:
            wav = self.prepared.load(job.id)
            if wav is not None:
                prompt = Prompt.from_meta(job.prompt, wav)
        request = self._request(job)
        if prompt is None:
            prompt = await self._prepare(job, request)
            if consent is None:
                # Nothing goes to Tencent until the uploader says yes: keep the prompt privately and ask.
                self.prepared.save(job.id, prompt.wav)
                await self.store.update(job.id, status=AWAITING, prompt=prompt.meta(), stage="awaiting_consent")
                card = build_report_card(prompt.report) if prompt.report else None
                await self.replies.ask_consent(job, card, self.settings.consent_ttl_hours)
                await refresh_share(self.replies, self.store, job)
                return None
        request = self._request(job)
        if self.quotas is not None:
            refusal = await self.quotas.voices_refusal(job.team_id, job.speaker or job.user_id)
            if refusal is not None:
                self.prepared.delete(job.id)
                raise QuotaError(refusal.text)
        # Slack's own transcript (a clip's), mapped through the cuts, when the user typed no text= or lang=.
        request = await with_transcript(request, prompt, job.file, self._fetcher(job))
        if not await self.store.holds(job.id, self.owner):
            # The one call that must never be made twice: only while the lease is still ours.
            raise LeaseLost()
        try:
            result = await clone_prompt(prompt, request, self.trtc, on_stage=lambda stage: self._stage(job, stage))
        except ApiError as exc:
            await self._audit(job, consent, prompt, request, outcome=exc.code, request_id=exc.request_id)
            if exc.transient:
                raise Waiting("waiting_tencent", exc) from None
            self.prepared.delete(job.id)
            raise
        except _limiter_errors() as exc:
            # The shared limiter (REDIS_URL) is unreachable: no request left, so wait like a Tencent outage.
            raise Waiting("waiting_tencent", exc) from None
        await self._audit(job, consent, prompt, request, outcome="cloned", result=result)
        self.prepared.delete(job.id)
        return result

    def _fetcher(self, job: Job) -> Fetcher:
        # One per job: each job uses its own workspace's token.
        return Fetcher(self.settings, self.workspaces, self.http, self.temp_dir, job.team_id)

    def _request(self, job: Job) -> CloneRequest:
        file, options = job.file, CloneOptions.from_dict(job.options)
        return CloneRequest(
            name=options.name or default_voice_name(str(file.get("name") or file.get("title") or "")),
            text=options.text,
            model=options.model,
            language=options.language,
            denoise=options.denoise,
        )

    async def _resolve(self, job: Job) -> dict[str, Any]:
        file = await self._fetcher(job).resolve(job.file)
        if file is not job.file:
            job.file = file
            await self.store.update(job.id, file=file)
        return file

    async def _may_clone(self, job: Job) -> bool:
        """`/clone <file>`: only a file the caller shared, or one shared in the channel they ran it in."""
        try:
            file = await self._resolve(job)
        except FileAccessError:
            file = {}
        if may_use_file(file, job.user_id, job.channel):
            # The recording's uploader is its speaker: when that is someone else, they are asked and they own it.
            job.speaker = str(file.get("user") or job.user_id)
            await self.store.update(job.id, speaker=job.speaker)
            return True
        log.info("job %s: /clone refused, the caller may not use file %s", job.id, job.file.get("id"))
        if job.channel and job.user_id:
            await self.replies.ephemeral(
                f"refused:{job.id}", job.channel, job.user_id, build_file_refused(str(job.file.get("id"))), None,
                job.team_id,
            )
        await self.store.update(job.id, status=FAILED, error={"type": "not_allowed"}, finished_at=time.time())
        metrics.JOBS.labels(outcome="failed").inc()
        return False

    async def _prepare(self, job: Job, request: CloneRequest) -> Prompt:
        """Download the file and make the prompt (no API call)."""
        await self._stage(job, "downloading")
        started = time.monotonic()
        file = await self._resolve(job)
        if not looks_like_media(file):
            raise NotAudioError("not an audio or video file")
        request = self._request(job)
        check_request(request)
        path = await self._fetcher(job).download(file)
        metrics.JOB_STAGE_SECONDS.labels(stage="download").observe(time.monotonic() - started)
        started = time.monotonic()
        try:
            return await prepare_prompt(
                path, request, limits=self.audio_limits, ffmpeg_slots=self.ffmpeg_slots,
                on_stage=lambda stage: self._stage(job, stage),
            )
        finally:
            Path(path).unlink(missing_ok=True)
            metrics.JOB_STAGE_SECONDS.labels(stage="prepare").observe(time.monotonic() - started)

    async def _audit(
        self,
        job: Job,
        consent: dict[str, Any] | None,
        prompt: Prompt,
        request: CloneRequest,
        *,
        outcome: str,
        result: CloneResult | None = None,
        request_id: str | None = None,
    ) -> None:
        consent = consent or {}
        await self.audit.record(
            AuditEntry(
                consent=str(consent.get("how") or "unknown"),
                outcome=outcome,
                team_id=job.team_id,
                user_id=consent.get("user") or job.speaker or job.user_id,
                requester=job.user_id,
                job_id=job.id,
                file_id=job.file.get("id"),
                file_name=file_name(job),
                audio_sha256=hashlib.sha256(prompt.wav).hexdigest(),
                seconds=prompt.seconds,
                voice_name=request.name,
                voice_id=result.voice_id if result else None,
                request_id=result.request_id if result else request_id,
            )
        )

    async def _stage(self, job: Job, stage: str) -> None:
        # One line per stage, with how long the previous one took (LOG_FORMAT=json makes these queryable).
        now = time.monotonic()
        if len(self._stages) > 10_000:  # jobs that ended without _finish (cancelled, expired) leave entries
            self._stages.clear()
        previous, since = self._stages.get(job.id, (None, now))
        self._stages[job.id] = (stage, now)
        with log_context(stage=stage):
            log.info("job %s: %s", job.id, stage, extra={"previous": previous, "duration": round(now - since, 3)})
        # Progress is a nicety: a failure to record it must never stop the clone.
        try:
            await self.replies.stage(job, stage)
            await self.store.update(job.id, stage=stage)
        except Exception:
            log.exception("job %s: could not record stage %s", job.id, stage)

    async def _wait(self, job: Job, waiting: Waiting) -> None:
        """Slack or Tencent is unreachable: retry later without holding a worker, until the answer TTL."""
        cause = waiting.cause
        age = time.time() - job.created_at
        limit = self.tencent_wait if waiting.stage == "waiting_tencent" else self.settings.answer_ttl_hours * 3600
        if age >= limit:
            log.warning("job %s: still failing after %.1f h (%s); answering with the error", job.id, age / 3600, cause)
            message = describe(cause) if isinstance(cause, BotError) else describe(DownloadError("Slack unreachable"))
            await self._answer_failure(job, message, error=cause)
            return
        waits = job.waits + 1
        delay = jittered_delay(waits, base=2.0, cap=self.max_backoff)
        log.warning("job %s: %s (%s); retrying in %.0f s", job.id, waiting.stage, type(cause).__name__, delay)
        if not (job.kind == "command" and not job.file.get("url_private_download")):
            # (A /clone request whose file could not be looked up yet has no thread: it may still be refused.)
            await self._stage(job, waiting.stage)
        # A wait is not an attempt: only crashes and timeouts count towards giving up.
        await self._requeue(job.id, delay, attempts=job.attempts - 1, waits=waits)

    async def _answer_forgotten(self, job: Job, result: CloneResult) -> None:
        """The clone finished after a forget-me deleted its job: say so, keep no voice (the audit has its id)."""
        text, blocks = build_forgotten_clone(result.voice_id, result.request_id, file_name(job))
        await self.replies.final(job, text, blocks)
        log.info("job %s: cloned after a forget-me; the voice is not kept", job.id)
        self._stages.pop(job.id, None)
        metrics.JOBS.labels(outcome="failed").inc()

    async def _attempt_failed(self, job: Job) -> None:
        if job.attempts >= MAX_ATTEMPTS:
            await self._answer_failure(job, GAVE_UP, outcome="given_up")
            return
        await self._requeue(job.id, min(self.max_backoff, 5.0 * job.attempts))

    async def _answer_failure(
        self, job: Job, message: str, *, error: BaseException | None = None, outcome: str = "failed"
    ) -> None:
        text, blocks = build_failure(message, file_name(job))
        await self.replies.final(job, text, blocks)
        step = job.options.get("step") if job.kind == SAY else None
        if step and self.voices is not None:
            # A Workflow Builder step's speech given up (timed out or crashed 3 times): the workflow must not wait
            # for Slack's own time-out to learn it.
            reason = STEP_GAVE_UP if outcome == "given_up" else message
            await self.voices.fail_step(
                str(step), reason, team_id=job.team_id, channel=job.channel, user=job.user_id, job_id=job.id
            )
        detail: dict[str, Any] = {"type": type(error).__name__ if error else outcome}
        if isinstance(error, ApiError):
            detail["code"] = error.code
        log.info("job %s failed: %s", job.id, detail["type"])
        await self._finish(job, FAILED, detail, outcome)

    async def _finish(self, job: Job, status: str, error: dict[str, Any] | None, outcome: str) -> None:
        await self.store.update(job.id, status=status, error=error, finished_at=time.time())
        with log_context(stage=outcome):
            log.info("job %s: %s", job.id, outcome, extra={"duration": round(time.time() - job.created_at, 3)})
        self._stages.pop(job.id, None)
        await refresh_share(self.replies, self.store, job)
        metrics.JOBS.labels(outcome=outcome).inc()

