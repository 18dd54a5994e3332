"""The measurements: a burst of shares (acks, feedback, throughput), conversion cost, and memory."""

from __future__ import annotations

import re
import resource
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.burst import send_burst_from_child
from bench.recordings import Recording
from bench.rig import MemoryPeaks, MemorySampler, Rig, Share, status_bytes, to_monotonic
from bot.ui.consent_blocks import CONFIRM_ACTION
from bot.voice.audio import find_ffmpeg


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return float("nan")
    position = (len(data) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


# The Slack stand-in refuses chat.postMessage over this, per channel, as Slack does (about one a second, short
# bursts allowed): (per second, burst). On in every scenario; the bot paces its posts at the same rate.
SLACK_POST_LIMIT = (1.0, 3)
# The Slack stand-in's final answers begin with one of these (bot.ui.job_blocks build_success / build_failure).
ANSWER_PREFIXES = ("Voice cloned", "Could not clone")

# A share's whole life (download, convert, clone, answer) takes about a second; these only stop a hung run.
ANSWER_TIMEOUT = 120.0
MEMORY_TIMEOUT = 60.0


@dataclass
class BurstResult:
    """Shares sent all at once, one per channel, and everything that followed."""

    shares: int
    channels: int
    max_rps: int | None
    clip: str
    ack_seconds: list[float]  # per share: send to the whole HTTP response, as the sender saw it
    statuses: dict[int, int]  # HTTP status -> count (0: no response)
    ack_makespan: float  # first send to last response
    ack_cpu: float  # CPU seconds the bot process (with workers: the web process) used from the first send to
    # just after the last response
    feedback_seconds: list[float]  # per share: send to the first reaction or status message recorded
    feedback_missing: int
    clone_offsets: list[float]  # accepted VoiceClone requests: seconds after the first one arrived
    accepted: int  # accepted VoiceClone requests
    refusals: int  # requests the TRTC stand-in refused for its max_rps (per action), every action together
    outcomes: dict[str, int]  # final reaction -> count ("none": no final answer in time)
    answered_in: float  # first send to the last final answer
    # Shares whose thread holds exactly one answer and, with previews on, after it the one preview of the new voice
    # (its mp3, or the message saying why there is none), nothing else.
    answered_once: int
    stray_messages: int  # bot messages in the shares' channels outside their threads
    slack_429s: int  # chat.postMessage calls the Slack stand-in refused for its per-channel limit
    bot_cpu: float  # CPU seconds the bot process used from the burst to the last answer
    ffmpeg_cpu: float  # CPU seconds its ffmpeg children used meanwhile
    standin_cpu: float  # CPU seconds the bench process (both stand-ins) used meanwhile
    # 0: one `--role all` bot on SQLite; N: a `--role web` process plus N `--role worker` processes on PostgreSQL.
    workers: int = 0
    redis: bool = False  # REDIS_URL set: TRTC_MAX_RPS is one limit for every process
    web_cpu: float = 0.0  # with workers: CPU seconds of the web process from the burst to the last answer
    jobs_per_worker: list[float] = field(default_factory=list)  # voiceclone_jobs_total on each worker's /metrics
    # Threads not answered exactly once: what they hold, e.g. "Voice cloned... | Voice cloned..." -> count.
    odd_threads: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # ERROR/Traceback lines the bot processes logged in this run
    previews: bool = True  # PREVIEW=on (the default): each clone is followed by a TextToSpeech preview and its upload
    preview_files: int = 0  # threads holding the <VoiceName>-preview.mp3 file message
    preview_failed: int = 0  # threads saying the preview failed instead
    tts_accepted: int = 0  # accepted TextToSpeech requests
    tts_busiest: int = 0  # the most accepted TextToSpeech requests in any one-second window
    refusals_by_action: dict[str, int] = field(default_factory=dict)  # X-TC-Action -> requests refused for max_rps
    body_bytes: int = 0  # the size of one share's signed event body (the floor of item 9 sends bodies this size)

    @property
    def topology(self) -> str:
        """How the bot ran, in words."""
        if not self.workers:
            return "one --role all process (SQLite)"
        workers = f"{self.workers} --role worker process{'es' if self.workers > 1 else ''}"
        return f"--role web + {workers} (PostgreSQL{', Redis' if self.redis else ''})"

    @property
    def clone_rate(self) -> float:
        """Accepted VoiceClone requests per second, from the first to the last."""
        span = self.clone_offsets[-1] if self.clone_offsets else 0.0
        return (self.accepted - 1) / span if span > 0 else 0.0

    @property
    def busiest_second(self) -> int:
        """The most accepted VoiceClone requests in any one-second window (the server's limit is max_rps per
        action)."""
        return _busiest(self.clone_offsets)


def run_burst(
    workdir: Path,
    clip: Recording,
    shares: int = 200,
    max_rps: int | None = 20,
    workers: int = 0,
    redis: bool = False,
) -> BurstResult:
    """`shares` file shares of `clip`, each in its own channel, POSTed to the bot at once.

    `workers=0`: one `--role all` bot; N: the burst goes to a `--role web` process and N `--role worker`
    processes do the work (PostgreSQL; `redis`: one TRTC limit for all through Redis)."""
    env = {"TRTC_MAX_RPS": str(max_rps)} if workers and max_rps else {}
    logs = _log_sizes(workdir)
    with Rig(workdir, max_rps=max_rps, post_limit=SLACK_POST_LIMIT, env=env, workers=workers, redis=redis) as rig:
        # One channel per share: acknowledgement and feedback of many shares without Slack's per-channel posting
        # pace in the way (run_channel puts them all in one channel).
        batch = [rig.file_share(f"CBENCH{i:04d}", clip, name=f"Voice Memo {i}.m4a") for i in range(shares)]
        bot_cpu, ffmpeg_cpu = rig.cpu_seconds()
        web_cpu = rig.cpu_seconds(web_only=True)[0]
        own_cpu = _own_cpu()
        sent = send_burst_from_child(rig.url, [(share.body, share.headers) for share in batch])
        ack_cpu = rig.cpu_seconds(web_only=True)[0] - web_cpu
        for share, result in zip(batch, sent, strict=True):
            share.sent_wall, share.sent_mono = result.wall, result.mono
        rig.wait_final(batch, ANSWER_TIMEOUT + shares * 0.5)
        done = time.monotonic()
        # The previews follow the answers: the thread is complete once each is in (or said to have failed).
        _wait_previews(rig, batch, ANSWER_TIMEOUT + shares * 0.5)
        bot_cpu_after, ffmpeg_cpu_after = rig.cpu_seconds()
        web_cpu_after = rig.cpu_seconds(web_only=True)[0]
        standin_cpu = _own_cpu() - own_cpu
        feedback = rig.first_feedback(batch)
        refusals = rig.trtc.refusals
        refused = rig.trtc.refusals_by_action
        clones, speeches = _accepted(rig, "VoiceClone"), _accepted(rig, "TextToSpeech")
        outcomes = Counter(rig.final_reaction(share) or "none" for share in batch)
        threads, stray = rig.thread_messages(batch)
        slack_429s = rig.slack.post_refusals
        jobs_per_worker = rig.worker_metric("voiceclone_jobs_total")
    first_sent = min(s.mono for s in sent)
    accepted = clones
    previews = rig.previews
    return BurstResult(
        shares=shares,
        body_bytes=len(batch[0].body),
        channels=len({share.channel for share in batch}),
        max_rps=max_rps,
        clip=f"{clip.name} ({clip.seconds} s, {clip.path.stat().st_size // 1024} KiB)",
        ack_seconds=[s.seconds for s in sent],
        statuses=dict(Counter(s.status for s in sent)),
        ack_makespan=max(s.mono + s.seconds for s in sent) - first_sent,
        ack_cpu=ack_cpu,
        feedback_seconds=[feedback[s.ts] - s.sent_mono for s in batch if s.ts in feedback],
        feedback_missing=sum(s.ts not in feedback for s in batch),
        clone_offsets=[t - accepted[0] for t in accepted] if accepted else [],
        accepted=len(accepted),
        refusals=refusals,
        outcomes=dict(outcomes),
        answered_in=done - first_sent,
        answered_once=sum(_answered_once(threads.get(share.ts, []), previews) for share in batch),
        stray_messages=stray,
        slack_429s=slack_429s,
        bot_cpu=bot_cpu_after - bot_cpu,
        ffmpeg_cpu=ffmpeg_cpu_after - ffmpeg_cpu,
        standin_cpu=standin_cpu,
        workers=workers,
        redis=redis,
        web_cpu=web_cpu_after - web_cpu if workers else 0.0,
        jobs_per_worker=jobs_per_worker,
        odd_threads=dict(
            Counter(
                " | ".join(_gist(m) for m in sorted(threads.get(share.ts, []), key=lambda m: float(m["ts"])))
                or "(no bot message)"
                for share in batch
                if not _answered_once(threads.get(share.ts, []), previews)
            )
        ),
        errors=_new_errors(workdir, logs),
        previews=previews,
        preview_files=sum(any(_preview_file(m) for m in threads.get(s.ts, [])) for s in batch),
        preview_failed=sum(any(_preview_failed(m) for m in threads.get(s.ts, [])) for s in batch),
        tts_accepted=len(speeches),
        tts_busiest=_busiest(speeches),
        refusals_by_action={str(action): count for action, count in refused.items()},
    )


def _log_sizes(workdir: Path) -> dict[Path, int]:
    """How long each bot log in `workdir` is now (the logs are appended to, run after run)."""
    return {path: path.stat().st_size for path in workdir.glob("*.log")} if workdir.exists() else {}


def _new_errors(workdir: Path, before: dict[Path, int], limit: int = 20) -> list[str]:
    """Lines saying ERROR, CRITICAL or Traceback that the bot processes wrote to their logs since `before`."""
    found: list[str] = []
    for path in sorted(workdir.glob("*.log")):
        with open(path, "rb") as log:
            log.seek(before.get(path, 0))
            for line in log.read().decode(errors="replace").splitlines():
                if any(word in line for word in ("ERROR", "CRITICAL", "Traceback")):
                    found.append(f"{path.name}: {line.strip()[:300]}")
    return found[:limit]


def _gist(message: dict[str, Any]) -> str:
    """A bot message in a few words (its text up to the first "(" or ":"; "(edited)" when it was edited), so
    that threads holding the same kind of messages count together."""
    text = " ".join(str(message.get("text") or message.get("subtype") or "?").split())
    text = re.split(r" ?[(:]", text, maxsplit=1)[0][:40]
    return text + (" (edited)" if message.get("edited") else "")


def _is_answer(message: dict[str, Any]) -> bool:
    return str(message.get("text") or "").startswith(ANSWER_PREFIXES)


def _answered_once(messages: list[dict[str, Any]], previews: bool = True) -> bool:
    """Exactly one final answer in the thread; besides it nothing, but with previews on (the default) and a voice
    cloned, exactly one preview of it after the answer: its mp3 file message, or the message saying why there is
    none. The preview (":loud_sound: Preview of ...") is never taken for the answer, nor counted as a second one."""
    answers = [m for m in messages if _is_answer(m)]
    if len(answers) != 1:
        return False
    (answer,) = answers
    rest = [m for m in messages if m is not answer]
    if not previews or not str(answer.get("text") or "").startswith("Voice cloned"):
        return not rest
    return (
        len(rest) == 1
        and (_preview_file(rest[0]) is not None or _preview_failed(rest[0]))
        and float(rest[0]["ts"]) > float(answer["ts"])
    )


def _preview_settled(rig: Rig, share: Share) -> bool:
    """The share needs no preview (the clone failed) or its thread holds the preview, or says it failed."""
    messages = rig.thread_messages([share])[0].get(share.ts, [])
    if rig.final_reaction(share) == "x":
        return True
    return any(_preview_file(m) is not None or _preview_failed(m) for m in messages)


def _wait_previews(rig: Rig, shares: list[Share], timeout: float) -> bool:
    """With previews on, wait until every share's preview is settled (a no-op with PREVIEW=off)."""
    if not rig.previews:
        return True
    return rig.slack.wait_for(lambda: all(_preview_settled(rig, s) for s in shares), timeout)


def _accepted(rig: Rig, action: str) -> list[float]:
    """Arrival times (time.monotonic()) of the TRTC stand-in's accepted requests of `action`, sorted."""
    return sorted(r.time for r in rig.trtc.requests_of(action) if r.outcome == "ok")


def _busiest(times: Sequence[float]) -> int:
    """The most of these sorted times in any one-second window."""
    best, low = 0, 0
    for high, t in enumerate(times):
        while times[low] <= t - 1.0:
            low += 1
        best = max(best, high - low + 1)
    return best


def _answer_time(messages: list[dict[str, Any]]) -> float | None:
    """time.time() when the thread's answer appeared: the post, or the edit that made the message the answer
    (nothing edits a message after its answer)."""
    times = [float((m.get("edited") or {}).get("ts") or m["ts"]) for m in messages if _is_answer(m)]
    return min(times) if times else None


@dataclass
class ChannelResult:
    """Shares sent all at once into one channel: cloning at the API's pace, answers at Slack's."""

    shares: int
    max_rps: int | None
    post_limit: tuple[float, int]  # the Slack stand-in's chat.postMessage limit per channel
    clip: str
    ack_seconds: list[float]
    statuses: dict[int, int]
    feedback_seconds: list[float]  # send to the first reaction or bot message in the thread
    feedback_missing: int
    clone_offsets: list[float]  # accepted VoiceClone requests: seconds after the first one arrived
    first_clone: float  # first send to the first accepted VoiceClone request
    accepted: int  # accepted VoiceClone requests
    refusals: int  # every action together
    outcomes: dict[str, int]  # final reaction -> count
    answer_offsets: list[float]  # per answered share: seconds from the first send to its answer, sorted
    answers_per_thread: dict[int, int]  # bot messages in a share's thread -> how many threads had that many
    answered_once: int  # as BurstResult.answered_once: one answer, then (previews on) its one preview
    stray_messages: int
    slack_429s: int  # chat.postMessage calls the stand-in refused (HTTP 429 with Retry-After)
    bot_ratelimited: float  # 429s the bot counted (voiceclone_slack_retries_total, reason "ratelimited")
    post_calls: int  # chat.postMessage calls received, refused ones included
    reactions_done: float  # first send to the last final reaction
    # From the first send until every VoiceClone request had arrived: wall seconds, and CPU seconds of the bot,
    # its ffmpeg runs, the bench process (both stand-ins) and the whole machine (the rest is other work).
    cloning_wall: float = 0.0
    cloning_bot_cpu: float = 0.0
    cloning_ffmpeg_cpu: float = 0.0
    cloning_bench_cpu: float = 0.0
    cloning_machine_cpu: float = 0.0
    previews: bool = True  # PREVIEW=on (the default)
    preview_files: int = 0  # threads holding the preview mp3
    tts_accepted: int = 0  # accepted TextToSpeech requests
    refusals_by_action: dict[str, int] = field(default_factory=dict)
    last_message: float = float("nan")  # first send to the last bot message stored in the shares' threads

    @property
    def cloning_other_cpu(self) -> float:
        """CPU seconds other processes (not the bot, its ffmpeg or the bench) used while the clones went out."""
        own = self.cloning_bot_cpu + self.cloning_ffmpeg_cpu + self.cloning_bench_cpu
        return max(0.0, self.cloning_machine_cpu - own)

    @property
    def clone_rate(self) -> float:
        """Accepted VoiceClone requests per second, from the first to the last."""
        span = self.clone_offsets[-1] if self.clone_offsets else 0.0
        return (self.accepted - 1) / span if span > 0 else 0.0

    @property
    def last_answer(self) -> float:
        """First send to the last answer in its thread."""
        return self.answer_offsets[-1] if self.answer_offsets else float("nan")

    @property
    def new_messages(self) -> int:
        """New messages the shares need in the channel: an answer each, and with previews on a preview each (a
        shared file is a message: the bot paces its uploads at the channel's posting pace)."""
        return self.shares * (2 if self.previews else 1)

    @property
    def slack_floor(self) -> float:
        """The least time Slack's limit allows for the shares' new messages in one channel."""
        per_second, burst = self.post_limit
        return max(0.0, (self.new_messages - burst) / per_second)


def run_channel(
    workdir: Path,
    clip: Recording,
    shares: int = 100,
    max_rps: int | None = 20,
    post_limit: tuple[float, int] = SLACK_POST_LIMIT,
) -> ChannelResult:
    """`shares` file shares of `clip` in ONE channel, POSTed to the bot at once (issue 8)."""
    with Rig(workdir, max_rps=max_rps, post_limit=post_limit) as rig:
        batch = [rig.file_share("CBENCHONE", clip, name=f"Voice Memo {i}.m4a") for i in range(shares)]
        cpu_before = (*rig.cpu_seconds(), _own_cpu(), machine_cpu())
        sent = send_burst_from_child(rig.url, [(share.body, share.headers) for share in batch])
        for share, result in zip(batch, sent, strict=True):
            share.sent_wall, share.sent_mono = result.wall, result.mono
        # CPU while the clones went out: to tell the bot's own limits from other work on the machine.
        rig.trtc.wait_for_requests(shares, ANSWER_TIMEOUT, action="VoiceClone")
        cpu_after = (*rig.cpu_seconds(), _own_cpu(), machine_cpu())
        cloning_wall = time.monotonic() - min(s.mono for s in sent)
        # Answers go out at about one a second: allow for that on top of the usual margin.
        rig.wait_final(batch, ANSWER_TIMEOUT + shares / post_limit[0] * 1.5)
        done = time.monotonic()
        _wait_previews(rig, batch, ANSWER_TIMEOUT + shares / post_limit[0] * 1.5)
        feedback = rig.first_feedback(batch)
        refusals = rig.trtc.refusals
        refused = rig.trtc.refusals_by_action
        accepted = _accepted(rig, "VoiceClone")
        tts_accepted = len(_accepted(rig, "TextToSpeech"))
        outcomes = Counter(rig.final_reaction(share) or "none" for share in batch)
        threads, stray = rig.thread_messages(batch)
        slack_429s = rig.slack.post_refusals
        post_calls = len(rig.slack.calls_to("chat.postMessage"))
        bot_ratelimited = rig.bot_metric("voiceclone_slack_retries_total", reason="ratelimited")
    first_sent = min(s.mono for s in sent)
    previews = rig.previews
    answers = [_answer_time(threads.get(share.ts, [])) for share in batch]
    return ChannelResult(
        shares=shares,
        max_rps=max_rps,
        post_limit=post_limit,
        clip=f"{clip.name} ({clip.seconds} s, {clip.path.stat().st_size // 1024} KiB)",
        ack_seconds=[s.seconds for s in sent],
        statuses=dict(Counter(s.status for s in sent)),
        feedback_seconds=[feedback[s.ts] - s.sent_mono for s in batch if s.ts in feedback],
        feedback_missing=sum(s.ts not in feedback for s in batch),
        clone_offsets=[t - accepted[0] for t in accepted] if accepted else [],
        first_clone=accepted[0] - first_sent if accepted else float("nan"),
        accepted=len(accepted),
        refusals=refusals,
        outcomes=dict(outcomes),
        answer_offsets=sorted(to_monotonic(t) - first_sent for t in answers if t is not None),
        answers_per_thread=dict(Counter(len(threads.get(share.ts, [])) for share in batch)),
        answered_once=sum(_answered_once(threads.get(share.ts, []), previews) for share in batch),
        stray_messages=stray,
        slack_429s=slack_429s,
        bot_ratelimited=bot_ratelimited,
        post_calls=post_calls,
        reactions_done=done - first_sent,
        cloning_wall=cloning_wall,
        cloning_bot_cpu=cpu_after[0] - cpu_before[0],
        cloning_ffmpeg_cpu=cpu_after[1] - cpu_before[1],
        cloning_bench_cpu=cpu_after[2] - cpu_before[2],
        cloning_machine_cpu=cpu_after[3] - cpu_before[3],
        previews=previews,
        preview_files=sum(any(_preview_file(m) for m in threads.get(s.ts, [])) for s in batch),
        tts_accepted=tts_accepted,
        refusals_by_action={str(action): count for action, count in refused.items()},
        last_message=max(
            (to_monotonic(float(m["ts"])) - first_sent for s in batch for m in threads.get(s.ts, [])),
            default=float("nan"),
        ),
    )


def machine_cpu() -> float:
    """CPU seconds the whole machine has used so far (every process, every core)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class ConversionResult:
    """The bot's share-to-VoiceClone time against the ffmpeg command line on the same file, side by side."""

    recording: str
    bot_seconds: list[float] = field(default_factory=list)  # share sent -> VoiceClone request arrived
    cli_seconds: list[float] = field(default_factory=list)  # `ffmpeg -i in -ac 1 -ar 16000 -t 180 out.wav`
    # Per bot run: send -> the download's arrival at the Slack stand-in's file host (ack, queue, files.info), then
    # -> the VoiceClone request's arrival (download, ffmpeg and the checks on its output, encode, sign, send).
    stages: list[dict[str, float]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Median bot time over median command-line time."""
        return statistics.median(self.bot_seconds) / statistics.median(self.cli_seconds)

    def stage_medians(self) -> dict[str, float]:
        """The median of each stage."""
        return (
            {key: statistics.median(s[key] for s in self.stages if key in s) for key in self.stages[0]}
            if self.stages
            else {}
        )


def run_conversion(workdir: Path, recording: Recording, reps: int = 5) -> ConversionResult:
    """Alternate one bot share and one command-line conversion of `recording`, `reps` times each."""
    result = ConversionResult(f"{recording.name} ({recording.seconds} s AAC, {_kib(recording)} KiB)")
    out = workdir / "cli.wav"
    with Rig(workdir, post_limit=SLACK_POST_LIMIT) as rig, httpx.Client(timeout=30) as client:
        # Warm-up, not counted: the bot's first request pays for auth.test and lazy imports; both pay for
        # reading the file into the page cache.
        _bot_conversion(rig, client, recording, "CCONVWARM")
        _cli_conversion(recording, out)
        for rep in range(reps):
            if rep % 2:
                result.cli_seconds.append(_cli_conversion(recording, out))
            seconds, stages = _bot_conversion(rig, client, recording, f"CCONV{rep:02d}")
            result.bot_seconds.append(seconds)
            result.stages.append(stages)
            if not rep % 2:
                result.cli_seconds.append(_cli_conversion(recording, out))
    return result


def _bot_conversion(
    rig: Rig, client: httpx.Client, recording: Recording, channel: str
) -> tuple[float, dict[str, float]]:
    seen = len(rig.trtc.requests_of("VoiceClone"))
    downloads = len(rig.slack.file_requests)
    share = rig.file_share(channel, recording)
    response = rig.deliver(share, client)
    response.raise_for_status()
    if not rig.trtc.wait_for_requests(seen + 1, ANSWER_TIMEOUT, action="VoiceClone"):
        raise RuntimeError(f"no VoiceClone request for {recording.name}:\n{rig.log_tail()}")
    request = rig.trtc.requests_of("VoiceClone")[seen]
    if not rig.wait_final([share], ANSWER_TIMEOUT) or rig.final_reaction(share) != "white_check_mark":
        raise RuntimeError(f"{recording.name} was not cloned:\n{rig.log_tail()}")
    # Its preview (TextToSpeech, upload) is done before the next timing starts: no run overlaps the one before.
    if not _wait_previews(rig, [share], ANSWER_TIMEOUT):
        raise RuntimeError(f"no preview for {recording.name}:\n{rig.log_tail()}")
    fetched = [r for r in rig.slack.file_requests[downloads:] if r.status == 200]
    download = to_monotonic(fetched[0].time)
    stages = {"to download": download - share.sent_mono, "download to request": request.time - download}
    return request.time - share.sent_mono, stages


def _cli_conversion(recording: Recording, out: Path) -> float:
    command = [
        find_ffmpeg(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(recording.path),
        "-ac",
        "1",
        "-ar",
        "16000",
        "-t",
        "180",
        str(out),
    ]
    start = time.monotonic()
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
    return time.monotonic() - start


@dataclass
class MemoryResult:
    """One recording handled by a freshly started bot."""

    recording: str
    seconds: int
    size: int
    baseline: int  # bot RSS when started and idle, bytes
    peaks: MemoryPeaks
    outcome: str | None  # the final reaction; None: no answer within MEMORY_TIMEOUT
    answered_in: float | None  # share sent -> final answer
    audio_seconds: float | None  # what VoiceClone received
    previewed: bool | None = None  # the preview was in the thread (or said why not) while memory was sampled


def run_memory(workdir: Path, recording: Recording) -> MemoryResult:
    """Share `recording` with a bot started for it alone, sampling memory until the final answer."""
    with Rig(workdir, post_limit=SLACK_POST_LIMIT) as rig, httpx.Client(timeout=30) as client:
        assert rig.process is not None
        baseline = status_bytes(rig.process.pid, "VmRSS")
        share = rig.file_share("CMEMORY", recording)
        with MemorySampler(rig.process.pid) as sampler:
            rig.deliver(share, client).raise_for_status()
            answered: float | None = None
            previewed: bool | None = None
            if rig.wait_final([share], MEMORY_TIMEOUT):
                answered = time.monotonic() - share.sent_mono
                # The peaks include the preview (TextToSpeech, its mp3 kept and uploaded), as users run the bot.
                previewed = _wait_previews(rig, [share], MEMORY_TIMEOUT) if rig.previews else None
        requests = rig.trtc.requests_of("VoiceClone")
        outcome = rig.final_reaction(share)
    return MemoryResult(
        recording=f"{recording.name} ({_kib(recording)} KiB)",
        seconds=int(recording.seconds),
        size=recording.path.stat().st_size,
        baseline=baseline,
        peaks=sampler.peaks,
        outcome=outcome,
        answered_in=answered,
        audio_seconds=requests[0].audio_seconds if requests else None,
        previewed=previewed,
    )


def _kib(recording: Recording) -> int:
    return recording.path.stat().st_size // 1024


@dataclass
class PressResult:
    """CONSENT=ask: the uploader's "Clone this voice" press until the VoiceClone request reaches TRTC."""

    recording: str
    seconds: list[float] = field(default_factory=list)  # press sent -> VoiceClone request arrived
    asked_seconds: list[float] = field(default_factory=list)  # share sent -> consent question in the thread


def run_press(workdir: Path, recording: Recording, presses: int = 20) -> PressResult:
    """Share `recording` `presses` times (one channel each) with CONSENT=ask, wait for the consent question,
    press Confirm as the uploader and time the press to the VoiceClone request; one warm-up not counted."""
    result = PressResult(f"{recording.name} ({recording.seconds} s AAC, {_kib(recording)} KiB)")
    rig = Rig(workdir, post_limit=SLACK_POST_LIMIT, env={"CONSENT": "ask"})
    with rig, httpx.Client(timeout=30) as client:
        for rep in range(presses + 1):
            share = rig.file_share(f"CPRESS{rep:02d}", recording)
            rig.deliver(share, client).raise_for_status()

            def question(share: Share = share) -> dict[str, Any] | None:
                for message in rig.slack.thread(share.channel, share.ts)[1:]:
                    if CONFIRM_ACTION in str(message.get("blocks") or ""):
                        return message
                return None

            if not rig.slack.wait_for(lambda: question() is not None, ANSWER_TIMEOUT):
                raise RuntimeError(f"no consent question for {recording.name}:\n{rig.log_tail()}")
            asked = time.monotonic() - share.sent_mono
            message = question()
            assert message is not None
            seen = len(rig.trtc.requests_of("VoiceClone"))
            sent, response = rig.press(share.channel, message["ts"], CONFIRM_ACTION, client, share.user)
            response.raise_for_status()
            if not rig.trtc.wait_for_requests(seen + 1, ANSWER_TIMEOUT, action="VoiceClone"):
                raise RuntimeError(f"no VoiceClone request after the press:\n{rig.log_tail()}")
            arrived = rig.trtc.requests_of("VoiceClone")[seen].time
            if not rig.wait_final([share], ANSWER_TIMEOUT):
                raise RuntimeError(f"no answer after the press:\n{rig.log_tail()}")
            # The preview (the default) is in before the next share: each press is timed on a bot at rest.
            if not _wait_previews(rig, [share], ANSWER_TIMEOUT):
                raise RuntimeError(f"no preview after the press:\n{rig.log_tail()}")
            if rep:  # the first is a warm-up
                result.seconds.append(arrived - sent)
                result.asked_seconds.append(asked)
    return result


@dataclass
class PreviewResult:
    """PREVIEW=on: the clone's answer in the thread until the TextToSpeech preview is shared in that thread."""

    shares: int
    max_rps: int | None
    clip: str
    preview_text: str  # what the previews said (the TextToSpeech requests' Text)
    audio_formats: dict[str, int]  # the TextToSpeech requests' AudioFormat -> count
    outcomes: dict[str, int]  # final reaction -> count
    answered: int  # shares whose thread shows the "Voice cloned" answer
    previews: int  # shares whose thread holds the <VoiceName>-preview.mp3 file message
    preview_failed: int  # shares whose thread says the preview failed instead
    seconds: list[float] = field(default_factory=list)  # answer in the thread -> preview file message in it
    complete_seconds: list[float] = field(default_factory=list)  # answer -> files.completeUploadExternal recorded
    tts_seconds: list[float] = field(default_factory=list)  # answer -> the TextToSpeech request's arrival
    tts_requests: int = 0
    tts_refused: int = 0  # TextToSpeech requests refused (max_rps or any error)
    clone_refusals: int = 0  # requests the TRTC stand-in refused for its max_rps
    playable: int = 0  # previews ffmpeg reads as mp3 audio with a duration and decodes without error
    probes: list[str] = field(default_factory=list)  # per preview: what ffmpeg said (format, codec, rate, duration)
    sizes: list[int] = field(default_factory=list)  # preview bytes
    threads: dict[str, int] = field(default_factory=dict)  # what each thread holds ("answer+preview") -> count


PREVIEW_SUFFIX = "-preview.mp3"


def run_preview(workdir: Path, clip: Recording, shares: int = 20, max_rps: int | None = 20) -> PreviewResult:
    """`shares` file shares of `clip`, one channel each, POSTed at once to a bot with PREVIEW=on (issue 12; the
    default, as in every scenario); per share, the answer ("Voice cloned") landing in the thread to the preview mp3
    being shared in that thread."""
    with Rig(workdir, max_rps=max_rps, post_limit=SLACK_POST_LIMIT) as rig:
        batch = [rig.file_share(f"CPREVIEW{i:03d}", clip, name=f"Preview Memo {i}.m4a") for i in range(shares)]
        sent = send_burst_from_child(rig.url, [(share.body, share.headers) for share in batch])
        for share, result in zip(batch, sent, strict=True):
            share.sent_wall, share.sent_mono = result.wall, result.mono
        rig.wait_final(batch, ANSWER_TIMEOUT + shares * 0.5)
        _wait_previews(rig, batch, ANSWER_TIMEOUT)
        threads, _ = rig.thread_messages(batch)
        completes = [c for c in list(rig.slack.calls) if c.method == "files.completeUploadExternal"]
        requests = rig.trtc.requests
        outcomes = Counter(rig.final_reaction(share) or "none" for share in batch)
        refusals = rig.trtc.refusals
        contents = {}
        for messages in threads.values():
            for message in messages:
                file = _preview_file(message)
                if file is not None:
                    contents[file["id"]] = rig.slack.file_content(file["id"])
    tts = [r for r in requests if r.action == "TextToSpeech"]
    result = PreviewResult(
        shares=shares,
        max_rps=max_rps,
        clip=f"{clip.name} ({clip.seconds} s, {_kib(clip)} KiB)",
        preview_text=next((r.text or "" for r in tts), ""),
        audio_formats=dict(Counter(str(r.audio_format) for r in tts)),
        outcomes=dict(outcomes),
        answered=0,
        previews=0,
        preview_failed=0,
        tts_requests=len(tts),
        tts_refused=sum(r.outcome != "ok" for r in tts),
        clone_refusals=refusals,
    )
    kinds: Counter[str] = Counter()
    for share in batch:
        messages = threads.get(share.ts, [])
        answers = [m for m in messages if _is_answer(m)]
        files = [(m, f) for m in messages if (f := _preview_file(m)) is not None]
        failed = [m for m in messages if _preview_failed(m)]
        kinds["+".join(_thread_kind(m) for m in sorted(messages, key=lambda m: float(m["ts"])))] += 1
        answered = _answer_time(messages)
        if answered is None or not str(answers[0].get("text", "")).startswith("Voice cloned"):
            continue
        result.answered += 1
        result.preview_failed += bool(failed)
        if not files:
            continue
        result.previews += 1
        message, file = files[0]
        result.seconds.append(float(message["ts"]) - answered)
        done = [
            c.time for c in completes if c.params.get("thread_ts") == share.ts
            and share.channel in (c.params.get("channel_id"), c.params.get("channels"))
        ]  # fmt: skip
        if done:
            result.complete_seconds.append(min(done) - answered)
        spoke = [r.time for r in tts if (r.voice or {}).get("VoiceId") and r.voice["VoiceId"] in str(answers[0])]
        if spoke:
            result.tts_seconds.append(min(spoke) - to_monotonic(answered))
        content = contents[file["id"]]
        result.sizes.append(len(content))
        ok, said = probe_mp3(content)
        result.playable += ok
        result.probes.append(said)
    result.threads = dict(kinds)
    return result


def _preview_file(message: dict[str, Any]) -> dict[str, Any] | None:
    """The preview mp3 a bot message shares, if it is one."""
    if message.get("subtype") != "file_share":
        return None
    return next((f for f in message.get("files") or [] if str(f.get("name", "")).endswith(PREVIEW_SUFFIX)), None)


def _preview_failed(message: dict[str, Any]) -> bool:
    return str(message.get("text") or "").startswith("I couldn't make a preview")


def _thread_kind(message: dict[str, Any]) -> str:
    if _is_answer(message):
        return "answer"
    if _preview_file(message) is not None:
        return "preview"
    return "failed-preview" if _preview_failed(message) else "other"


def probe_mp3(content: bytes) -> tuple[bool, str]:
    """Whether `content` is mp3 audio (ffmpeg reads it as format mp3 with an mp3 audio stream and a duration, and
    decodes it to the end without an error), and what ffmpeg said. ffmpeg alone: the bundled one has no ffprobe."""
    ffmpeg = find_ffmpeg()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "preview.mp3"  # a file, not a pipe: the duration needs a seekable input
        path.write_bytes(content)
        # No output: ffmpeg prints what the input is, then exits 1 for want of an output file.
        probed = subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-i", str(path)], capture_output=True, text=True)
        decode = [ffmpeg, "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"]
        decoded = subprocess.run(decode, capture_output=True)
    header = probed.stderr
    fmt = re.search(r"Input #0, ([\w,]+), from", header)
    audio = re.search(r"Stream #0:\d+.*?: Audio: (\w+).*?, (\d+) Hz, (\w+)", header)
    length = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", header)
    duration = int(length[1]) * 3600 + int(length[2]) * 60 + float(length[3]) if length else 0.0
    format_name, codec = (fmt[1] if fmt else None), (audio[1] if audio else None)
    said = (
        f"{format_name}/{codec}, {audio[2] if audio else None} Hz, {audio[3] if audio else None}, {duration:.2f} s"
    )
    ok = (
        format_name == "mp3" and codec == "mp3" and duration > 0
        and decoded.returncode == 0 and not decoded.stderr.strip()
    )
    return ok, said
