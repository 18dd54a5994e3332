"""The outbox sender: makes Slack show what the outbox holds, at Slack's pace, through outages of any length.

It never blocks a job: jobs write their outcomes to the outbox and move on. Order is kept per lane (a channel and
the user a record serves there, Record.lane): one user's answers in a channel go out in order, while the lanes of a
channel take turns at its posting pace, the least recently served first (`Lanes`), so one user's long backlog never
holds another user's answer back by more than a post or two. Failures are sorted by what they mean: 429 waits for
Retry-After; network errors, 5xx and HTML pages back off (capped, jittered) until the record's time to live runs out;
a message deleted in Slack is posted anew; a channel the bot cannot post in gets the answer in the user's DM; a
revoked token stops sending to that workspace.

Workflow Builder steps: an upload made for a step, once delivered, stores the step's end (the file's permalink) in the
same transaction, and that record completes the step (functions.completeSuccess); an upload for a step that is given
up ends it with the reason instead (functions.completeError). The completions go with the workspace's bot token, not
the step's own `bot_access_token`: that one dies 15 minutes after the event or when the step completes, and the outbox
may still be retrying hours later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.retry import jittered_delay
from bot.slack.lanes import Lane, Lanes
from bot.slack.pacing import Pacer
from bot.store.outbox import COMPLETION, EPHEMERAL, MESSAGE, UPLOAD, Outbox, Record, StepEnd, discard_file
from bot.ui.job_blocks import build_elsewhere_note
from bot.ui.speak_blocks import STEP_CRASHED, STEP_EXPIRED, STEP_PERMALINK, step_not_posted, step_result_refused
from bot.wake import Wakeup

log = logging.getLogger(__name__)

# Slack errors that say "try again later" rather than "never".
TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
# The channel is not one the bot can post in: tell the user another way.
UNREACHABLE_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
# The workspace's token no longer works: every further call would fail the same way.
AUTH_ERRORS = frozenset({"invalid_auth", "token_revoked", "account_inactive", "not_authed"})
# A workflow step that can no longer be completed: it has ended (a completion went through already) or Slack forgot it.
STEP_OVER_ERRORS = frozenset({"execution_not_in_running_state", "function_execution_not_found"})
# Harmless on a retried reaction call: it is already (or no longer) there.
REACTION_NOOPS = frozenset({"already_reacted", "no_reaction"})


class Sender:
    """Delivers outbox records with `await client_for(team_id)` (None: the app is not installed there any more);
    one loop, up to `concurrency` calls in flight."""

    def __init__(
        self,
        outbox: Outbox,
        client_for: Callable[[str | None], Awaitable[AsyncWebClient | None]],
        *,
        pacer: Pacer | None = None,
        # 32 calls in flight: with 8, the hourglasses of a 200-share burst queued behind each other (feedback p99
        # 446 ms in scripts/bench; 308-330 ms with 32). aiohttp's pool allows 100 connections.
        concurrency: int = 32,
        max_backoff: float = 60.0,
        on_token_refused: Callable[[str | None], None] | None = None,
        wakeup: Wakeup | None = None,
    ):
        self.outbox = outbox
        self.client_for = client_for
        self.pacer = pacer or Pacer()
        self.concurrency = concurrency
        self.max_backoff = max_backoff
        # Many workspaces (OAuth): a refused token means that workspace left (or is leaving); forget its cached
        # token and drop what was for it, instead of stopping that workspace until a restart (it may reinstall).
        self.on_token_refused = on_token_refused
        self.stopped_teams: set[str] = set()
        self.heartbeat = time.monotonic()
        # Shared with the outbox (its on_change rings it), which then needs no sender to wake.
        self.wakeup = wakeup or Wakeup()
        self._progress = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        # Records whose send ended while due() was being read: that read may predate their result (PostgreSQL
        # answers on several connections), so they wait for the next pass instead of going out twice.
        self._ended_during_read: set[int] = set()
        self.lanes = Lanes()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failing = False

    # -- life cycle -----------------------------------------------------------------------------------

    def wake(self) -> None:
        """Something new is due: look now rather than at the next poll."""
        self.wakeup.ring()

    def start(self) -> None:
        """Start the loop; it restarts itself if anything ever ends it."""
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="outbox-sender")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        # Cannot happen by design (the loop catches everything); if it does, say so and keep sending.
        log.error("outbox sender stopped unexpectedly (%r); restarting it", task.exception())
        self.start()

    @property
    def running(self) -> bool:
        """The loop is alive and went round recently."""
        return self._task is not None and not self._task.done() and time.monotonic() - self.heartbeat < 60

    async def stop(self, grace: float = 5.0) -> None:
        """Send what is due within `grace` seconds (Slack permitting), then stop; what is unsent stays stored."""
        with contextlib.suppress(TimeoutError):
            await self.drain(grace)
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=grace)
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until nothing is pending and nothing is in flight (tests, the demo, benchmarks)."""
        deadline = time.monotonic() + timeout
        while True:
            self._progress.clear()
            if not self._in_flight and await self.outbox.depth() == 0:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the outbox did not drain")
            self.wake()
            await _wait(self._progress, min(remaining, 1.0))

    # -- the loop -------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            woken = self.wakeup.waiter()
            try:
                idle = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox pass failed; trying again shortly")
                idle = 1.0
            await self.wakeup.sleep(woken, idle)

    async def _pass(self) -> float:
        """Start every due record that pacing allows; return how long to sleep when nothing wakes us."""
        now = time.time()
        self._ended_during_read = set()
        look = await self.outbox.look(now, limit=200, skip_teams=self.stopped_teams)
        for record in look.expired:
            log.warning(
                "gave up on a Slack answer after %.0f h: %s in %s (job %s), last error %s",
                (now - record.created_at) / 3600, record.key, record.channel, record.job_id, record.last_error,
            )
            end = _step_failed(record, STEP_EXPIRED)
            if end is not None:
                await self.outbox.put_step_end(end)
        idle = 5.0
        busy_lanes: set[Lane] = set()
        stale, self._ended_during_read = self._ended_during_read, set()
        for record in self.lanes.order(look.due):
            if record.id in stale:
                busy_lanes.add(record.lane)  # what follows it in its lane keeps its place
                idle = 0.0  # look again at once: it may still be due, at its newest state
                continue
            if record.id in self._in_flight or record.lane in busy_lanes:
                continue
            if len(self._in_flight) >= self.concurrency:
                break  # a finishing call wakes the loop
            kind, scope = _pace_key(record)
            wait = self.pacer.delay(kind, scope)
            if wait > 0:
                idle = min(idle, wait)
                # Later records of the lane wait behind it: one user's answers keep their order in a channel. Another
                # lane of the channel may take the next slot: it is tried first if it has waited longer.
                busy_lanes.add(record.lane)
                continue
            self.pacer.take(kind, scope)
            if kind == "post":
                self.lanes.served(record.lane)
            self._in_flight[record.id] = asyncio.create_task(self._send(record))
        # The next record to fall due later (a retry's backoff, a settling progress edit) sets the sleep; one that ends
        # in flight wakes the loop. (The depth gauge is DepthGauges', on its timer.)
        if look.next_at is not None:
            idle = min(idle, look.next_at - now)
        return max(idle, 0.005)

    # -- one record -----------------------------------------------------------------------------------

    async def _client(self, record: Record) -> AsyncWebClient:
        client = await self.client_for(record.team_id)
        if client is None:
            raise NotInstalled(record.team_id)
        return client

    async def _send(self, record: Record) -> None:
        try:
            if record.kind == MESSAGE:
                await self._send_message(record)
            elif record.kind == EPHEMERAL:
                await self._send_ephemeral(record)
            elif record.kind == UPLOAD:
                await self._send_upload(record)
            elif record.kind == COMPLETION:
                await self._send_completion(record)
            else:
                await self._send_reactions(record)
            if self._failing:
                self._failing = False
                log.info("Slack is answering again")
        except SlackApiError as exc:
            await self._guard(self._refused(record, exc))
        except NotInstalled:
            log.info("workspace %s no longer has the app installed: dropped %s", record.team_id, record.key)
            await self._guard(self.outbox.give_up(record, "not_installed"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            await self._guard(self._back_off(record, type(exc).__name__, "connection"))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sending %s failed", record.key)
            await self._guard(self._back_off(record, "unexpected", "unexpected"))
        finally:
            self._in_flight.pop(record.id, None)
            self._ended_during_read.add(record.id)
            self._progress.set()
            self.wake()

    async def _guard(self, handling: Any) -> None:
        # The failure handling talks to the database; if that fails too the record stays due and is tried again.
        try:
            await handling
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not record a Slack failure")

    async def _send_message(self, record: Record) -> None:
        client = await self._client(record)
        text = record.payload.get("text") or ""
        blocks = record.payload.get("blocks")
        note = (record.fallback or {}).get("note")
        if note:
            # Redirected (see _elsewhere): every version says why it arrives here, not only the first.
            text = f"{note}\n{text}"
            blocks = [record.fallback["note_block"], *(blocks or [])]  # type: ignore[index]
        if record.ts is None:
            thread_ts = record.thread_ts
            if record.thread_key is not None and record.parent_state != "dead":
                thread_ts = record.parent_ts
            response = await client.chat_postMessage(
                channel=record.channel, text=text, blocks=blocks, thread_ts=thread_ts
            )
            await self.outbox.delivered(record, ts=response["ts"], channel=response.get("channel"))
        else:
            # blocks=[] rather than None: None would leave the old blocks in place.
            await client.chat_update(channel=record.channel, ts=record.ts, text=text, blocks=blocks or [])
            await self.outbox.delivered(record)

    async def _send_ephemeral(self, record: Record) -> None:
        client = await self._client(record)
        await client.chat_postEphemeral(
            channel=record.channel, user=record.payload["user"], text=record.payload.get("text") or "",
            thread_ts=record.thread_ts,
        )
        await self.outbox.delivered(record)

    async def _send_upload(self, record: Record) -> None:
        client = await self._client(record)
        payload = record.payload
        step = payload.get("step")
        if step and await self.outbox.step_ended(step):
            # The step was answered meanwhile (a retried event refused): the workflow has moved on without this clip.
            log.info("the workflow step of %s has ended already; not uploading it", record.key)
            await self.outbox.give_up(record, "step ended")
            return
        try:
            with open(payload["path"], "rb") as audio:
                content = audio.read()
        except FileNotFoundError:
            log.warning("the file for %s is gone; not uploading it", record.key)
            await self.outbox.give_up(record, "file gone", then=_step_failed(record, STEP_CRASHED))
            return
        channel, thread_ts = record.channel, record.thread_ts
        if record.thread_key is not None and record.parent_state != "dead":
            # The parent's channel too: one posted to a user id lives in the DM channel Slack answered with.
            parent = await self.outbox.get(record.thread_key)
            if parent is not None and parent.ts:
                channel, thread_ts = parent.channel, parent.ts
        # files_upload_v2: getUploadURLExternal, the bytes, completeUploadExternal (channel + the parent's ts).
        response = await client.files_upload_v2(
            channel=channel, thread_ts=thread_ts, filename=payload["filename"], content=content,
            title=payload.get("title") or payload["filename"], initial_comment=payload.get("comment") or None,
        )
        end = None
        if step:
            # completeUploadExternal answers with the file object, its permalink on it (else the completion looks
            # it up with files.info): stored with the delivery, so a retry neither uploads again nor loses the end.
            file = (response.get("files") or [{}])[0]
            permalink = file.get("permalink")
            end = StepEnd(step, record.channel, outputs={STEP_PERMALINK: permalink} if permalink else None,
                          file_id=None if permalink else file.get("id"), team_id=record.team_id, user=record.user_id,
                          job_id=record.job_id)
        await self.outbox.delivered(record, then=end)
        discard_file(record)

    async def _send_completion(self, record: Record) -> None:
        """A workflow step's end: functions.completeSuccess with its outputs, or functions.completeError."""
        client = await self._client(record)
        payload = record.payload
        execution = payload["execution_id"]
        if "error" in payload:
            await client.functions_completeError(function_execution_id=execution, error=payload["error"])
        else:
            outputs = payload.get("outputs")
            if outputs is None:
                info = await client.files_info(file=payload["file_id"])
                outputs = {STEP_PERMALINK: info["file"]["permalink"]}
            await client.functions_completeSuccess(function_execution_id=execution, outputs=outputs)
        await self.outbox.delivered(record)

    async def _send_reactions(self, record: Record) -> None:
        client = await self._client(record)
        assert record.ts is not None
        desired = set(record.payload.get("names") or [])
        applied = set(record.applied)
        # Remove first, then add: once the final reaction shows, the hourglass is already gone.
        for name in sorted(applied - desired):
            await _reaction(client.reactions_remove, record, name)
            applied.discard(name)
            await self.outbox.set_applied(record, applied)
        for name in sorted(desired - applied):
            await _reaction(client.reactions_add, record, name)
            applied.add(name)
            await self.outbox.set_applied(record, applied)
        await self.outbox.delivered(record)

    # -- failures -------------------------------------------------------------------------------------

    async def _refused(self, record: Record, exc: SlackApiError) -> None:
        response = exc.response
        error = response.get("error") if isinstance(response.data, dict) else None
        status = response.status_code
        method = _method(record)
        if status == 429 or error == "ratelimited":
            retry_after = _retry_after(response.headers)
            kind, scope = _pace_key(record)
            self.pacer.block(kind, scope, retry_after)
            metrics.SLACK_RETRIES.labels(method=method, reason="ratelimited").inc()
            await self.outbox.retry_at(record, time.time() + retry_after, "ratelimited")
        elif status >= 500 or error is None or error in TRANSIENT_ERRORS:
            await self._back_off(record, error or f"HTTP {status}", "server_error")
        elif error == "message_not_found" and record.kind == MESSAGE:
            log.info("message for %s was deleted in Slack; posting it again", record.key)
            await self.outbox.repost(record)
        elif error in UNREACHABLE_ERRORS:
            await self._elsewhere(record, error)
        elif error in AUTH_ERRORS and self.on_token_refused is not None:
            self.on_token_refused(record.team_id)
            log.info("workspace %s refused its token (%s): dropped %s", record.team_id, error, record.key)
            await self.outbox.give_up(record, str(error))
        elif error in AUTH_ERRORS:
            team = record.team_id or ""
            if team not in self.stopped_teams:
                self.stopped_teams.add(team)
                log.error(
                    "SLACK TOKEN REFUSED (%s) for workspace %s: stopped sending to it; its answers are kept until "
                    "they expire. Reinstall the app or fix SLACK_BOT_TOKEN, then restart.",
                    error, team or "(this workspace)",
                )
            await self.outbox.retry_at(record, time.time(), error)
        elif error == "invalid_blocks" and record.kind == MESSAGE and record.payload.get("blocks"):
            log.warning("Slack refused the blocks of %s; sending its text alone", record.key)
            await self.outbox.put_message(record.key, channel=record.channel, text=record.payload.get("text") or "")
        elif record.kind == COMPLETION and "error" not in record.payload and error not in STEP_OVER_ERRORS:
            # The step's result was refused (its outputs, or the clip gone before its permalink was read): the step
            # still ends, with why, rather than waiting in the workflow until Slack times it out.
            log.warning("Slack refused the result of %s with %s; ending the step with the reason", record.key, error)
            await self.outbox.fail_step_end(record, step_result_refused(str(error)))
        else:
            log.warning("Slack refused %s for %s with %s; not retrying", method, record.key, error)
            end = _step_failed(record, step_not_posted(record.channel, str(error)))
            await self.outbox.give_up(record, str(error), then=end)

    async def _back_off(self, record: Record, error: str, reason: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning("Slack is not answering (%s); answers are kept and retried", error)
        metrics.SLACK_RETRIES.labels(method=_method(record), reason=reason).inc()
        # Jittered: many records retried after an outage do not all arrive at once.
        delay = jittered_delay(record.attempts + 1, base=1.0, cap=self.max_backoff)
        await self.outbox.retry_at(record, time.time() + delay, error)

    async def _elsewhere(self, record: Record, error: str) -> None:
        user = (record.fallback or {}).get("user")
        movable = record.kind in (MESSAGE, EPHEMERAL)
        if movable and user and record.channel != user and not record.channel.startswith("D"):
            note, note_block = build_elsewhere_note(record.channel, error)
            log.info("cannot post in %s (%s): answering %s in a DM instead", record.channel, error, record.key)
            await self.outbox.redirect(record, channel=user, note=note, note_block=note_block)
        else:
            end = _step_failed(record, step_not_posted(record.channel, error))
            if end is None:
                log.warning("cannot post in %s (%s) and nobody to tell: dropped %s", record.channel, error, record.key)
            else:
                log.info("cannot post in %s (%s): the workflow step of %s ends with why", record.channel, error,
                         record.key)
            await self.outbox.give_up(record, error, then=end)


class NotInstalled(Exception):
    """The record's workspace has no installation (it uninstalled the app): nothing can be sent there."""


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for `event` at most `seconds`. Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that
    arrives as the wait ends, and a sender that misses its cancellation never stops (seen in tests)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def _reaction(call: Any, record: Record, name: str) -> None:
    try:
        await call(channel=record.channel, timestamp=record.ts, name=name)
    except SlackApiError as exc:
        if exc.response.get("error") not in REACTION_NOOPS:
            raise


def _step_failed(record: Record, reason: str) -> StepEnd | None:
    """The failure of the workflow step an upload was made for (None: the record serves no step)."""
    step = record.payload.get("step") if record.kind == UPLOAD else None
    if not step:
        return None
    return StepEnd(step, record.channel, error=reason, team_id=record.team_id, user=record.user_id,
                   job_id=record.job_id)


def _pace_key(record: Record) -> tuple[str, str]:
    if record.kind in (EPHEMERAL, COMPLETION):
        # functions.complete* are Tier 3 per workspace, like chat.postEphemeral: unpaced, a 429 blocks them.
        return "update", record.team_id or ""
    if record.kind == MESSAGE:
        return ("post", record.channel) if record.ts is None else ("update", record.team_id or "")
    if record.kind == UPLOAD:
        return "post", record.channel  # shared files appear as messages: the channel's posting pace
    return "react", record.team_id or ""


def _method(record: Record) -> str:
    if record.kind == EPHEMERAL:
        return "chat.postEphemeral"
    if record.kind == MESSAGE:
        return "chat.postMessage" if record.ts is None else "chat.update"
    if record.kind == UPLOAD:
        return "files.completeUploadExternal"
    if record.kind == COMPLETION:
        return "functions.completeError" if "error" in record.payload else "functions.completeSuccess"
    return "reactions"


def _retry_after(headers: Any) -> float:
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
        return min(max(float(value), 0.0), 3600.0)
    except (TypeError, ValueError):
        return 1.0
