"""The measurements: a burst of shares (acks, feedback, throughput), conversion cost, and memory."""

from __future__ import annotations

import resource
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.burst import send_burst_from_child
from bench.media import Recording
from bench.rig import MemoryPeaks, MemorySampler, Rig, status_bytes, to_monotonic
from bot.audio import find_ffmpeg
from bot.blocks import build_status


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return float("nan")
    position = (len(data) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


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
    ack_cpu: float  # CPU seconds the bot process used from the first send to just after the last response
    feedback_seconds: list[float]  # per share: send to the first reaction or status message recorded
    feedback_missing: int
    clone_offsets: list[float]  # accepted VoiceClone requests: seconds after the first one arrived
    accepted: int
    refusals: int  # requests the TRTC stand-in refused for its max_rps
    outcomes: dict[str, int]  # final reaction -> count ("none": no final answer in time)
    answered_in: float  # first send to the last final answer
    bot_cpu: float  # CPU seconds the bot process used from the burst to the last answer
    ffmpeg_cpu: float  # CPU seconds its ffmpeg children used meanwhile
    standin_cpu: float  # CPU seconds the bench process (both stand-ins) used meanwhile

    @property
    def clone_rate(self) -> float:
        """Accepted VoiceClone requests per second, from the first to the last."""
        span = self.clone_offsets[-1] if self.clone_offsets else 0.0
        return (self.accepted - 1) / span if span > 0 else 0.0

    @property
    def busiest_second(self) -> int:
        """The most accepted requests in any one-second window (the server's limit is max_rps)."""
        times, best, low = self.clone_offsets, 0, 0
        for high, t in enumerate(times):
            while times[low] <= t - 1.0:
                low += 1
            best = max(best, high - low + 1)
        return best


def run_burst(workdir: Path, clip: Recording, shares: int = 200, max_rps: int | None = 20) -> BurstResult:
    """`shares` file shares of `clip`, each in its own channel, POSTed to the bot at once."""
    with Rig(workdir, max_rps=max_rps) as rig:
        # One channel per share: the bot posts at most one message a second per channel (Slack's limit),
        # so a single channel would measure that pacing rather than the bot.
        batch = [rig.file_share(f"CBENCH{i:04d}", clip, name=f"Voice Memo {i}.m4a") for i in range(shares)]
        bot_cpu, ffmpeg_cpu = rig.cpu_seconds()
        own_cpu = _own_cpu()
        sent = send_burst_from_child(rig.url, [(share.body, share.headers) for share in batch])
        ack_cpu = rig.cpu_seconds()[0] - bot_cpu
        for share, result in zip(batch, sent, strict=True):
            share.sent_wall, share.sent_mono = result.wall, result.mono
        rig.wait_final(batch, ANSWER_TIMEOUT + shares * 0.5)
        done = time.monotonic()
        bot_cpu_after, ffmpeg_cpu_after = rig.cpu_seconds()
        standin_cpu = _own_cpu() - own_cpu
        feedback = rig.first_feedback(batch)
        requests = rig.trtc.requests
        refusals = rig.trtc.refusals
        outcomes = Counter(rig.final_reaction(share) or "none" for share in batch)
    first_sent = min(s.mono for s in sent)
    accepted = sorted(r.time for r in requests if r.outcome == "ok")
    return BurstResult(
        shares=shares,
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
        bot_cpu=bot_cpu_after - bot_cpu,
        ffmpeg_cpu=ffmpeg_cpu_after - ffmpeg_cpu,
        standin_cpu=standin_cpu,
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class ConversionResult:
    """The bot's share-to-VoiceClone time against the ffmpeg command line on the same file, side by side."""

    recording: str
    bot_seconds: list[float] = field(default_factory=list)  # share sent -> VoiceClone request arrived
    cli_seconds: list[float] = field(default_factory=list)  # `ffmpeg -i in -ac 1 -ar 16000 -t 180 out.wav`
    # Per bot run: send -> "converting" status (ack, queue, status message, download), "converting" ->
    # "cloning" (ffmpeg and the checks on its output), "cloning" -> request (encode, sign, send).
    stages: list[dict[str, float]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Median bot time over median command-line time."""
        return statistics.median(self.bot_seconds) / statistics.median(self.cli_seconds)

    def stage_medians(self) -> dict[str, float]:
        """The median of each stage."""
        return (
            {key: statistics.median(s[key] for s in self.stages) for key in self.stages[0]}
            if self.stages
            else {}
        )


def run_conversion(workdir: Path, recording: Recording, reps: int = 5) -> ConversionResult:
    """Alternate one bot share and one command-line conversion of `recording`, `reps` times each."""
    result = ConversionResult(f"{recording.name} ({recording.seconds} s AAC, {_kib(recording)} KiB)")
    out = workdir / "cli.wav"
    with Rig(workdir) as rig, httpx.Client(timeout=30) as client:
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
    seen = len(rig.trtc.requests)
    share = rig.file_share(channel, recording)
    response = rig.deliver(share, client)
    response.raise_for_status()
    if not rig.trtc.wait_for_requests(seen + 1, ANSWER_TIMEOUT):
        raise RuntimeError(f"no VoiceClone request for {recording.name}:\n{rig.log_tail()}")
    request = rig.trtc.requests[seen]
    if not rig.wait_final([share], ANSWER_TIMEOUT) or rig.final_reaction(share) != "white_check_mark":
        raise RuntimeError(f"{recording.name} was not cloned:\n{rig.log_tail()}")
    updates = {
        call.params.get("text"): to_monotonic(call.time)
        for call in rig.slack.calls
        if call.method == "chat.update" and call.params.get("channel") == channel
    }
    converting = updates[build_status("converting", recording.name)[0]]
    cloning = updates[build_status("cloning", recording.name)[0]]
    stages = {
        "to conversion": converting - share.sent_mono,
        "conversion": cloning - converting,
        "to request": request.time - cloning,
    }
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


def run_memory(workdir: Path, recording: Recording) -> MemoryResult:
    """Share `recording` with a bot started for it alone, sampling memory until the final answer."""
    with Rig(workdir) as rig, httpx.Client(timeout=30) as client:
        assert rig.process is not None
        baseline = status_bytes(rig.process.pid, "VmRSS")
        share = rig.file_share("CMEMORY", recording)
        with MemorySampler(rig.process.pid) as sampler:
            rig.deliver(share, client).raise_for_status()
            answered: float | None = None
            if rig.wait_final([share], MEMORY_TIMEOUT):
                answered = time.monotonic() - share.sent_mono
        requests = rig.trtc.requests
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
    )


def _kib(recording: Recording) -> int:
    return recording.path.stat().st_size // 1024
