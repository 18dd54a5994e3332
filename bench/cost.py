"""Issue 21: what one share costs in CPU against the ffmpeg command line, and the bot's memory under a mixed burst.

Both measure CPU with the kernel's counters, never wall time: the bot process and every process below it (its
ffmpeg runs once reaped, and any helper process still alive, counted live), and the command line's ffmpeg by the
rusage `wait4` returns for it. See bench.rig.tree_cpu.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.burst import send_burst_from_child
from bench.recordings import Recording
from bench.rig import MemorySampler, Rig, status_bytes, tree_cpu
from bench.scenarios import ANSWER_TIMEOUT, SLACK_POST_LIMIT, _wait_previews
from bot.voice.audio import find_ffmpeg

# After a share's preview is in its thread, the bot may still be finishing (the outbox marks, the reactions):
# the CPU reading waits this long, and the bot's own idle use over the wait is taken back out (see idle_rate).
SETTLE_SECONDS = 0.4
IDLE_SECONDS = 3.0


def cli_cpu(recording: Recording, out: Path) -> float:
    """CPU seconds the ffmpeg command line takes to convert `recording` to a 16 kHz mono WAV (as a user would)."""
    command = [
        find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(recording.path),
        "-ac", "1", "-ar", "16000", "-t", "180", str(out),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"ffmpeg failed on {recording.name} ({process.returncode})")
    return usage.ru_utime + usage.ru_stime


@dataclass
class ShareCpu:
    """CPU per share of one recording, the bot (and everything below it) against the ffmpeg command line."""

    recording: str
    seconds: int
    bot_self: list[float] = field(default_factory=list)  # per share: the bot process, idle use taken out
    bot_children: list[float] = field(default_factory=list)  # per share: its child processes (ffmpeg, helpers)
    cli: list[float] = field(default_factory=list)  # per run: ffmpeg -i in -ac 1 -ar 16000 -t 180 out.wav
    idle_rate: float = 0.0  # the bot's CPU seconds per second at rest (timers), measured before the shares
    settle: float = SETTLE_SECONDS

    @property
    def per_share(self) -> list[float]:
        return [own + below for own, below in zip(self.bot_self, self.bot_children, strict=True)]

    @property
    def bot_mean(self) -> float:
        """CPU per share, the mean: the kernel counts a process's CPU in 10 ms ticks, so one share's reading is
        off by up to a tick or two and the mean over the shares (the counters' total over their number) is the
        accurate figure."""
        return statistics.fmean(self.per_share)

    @property
    def cli_mean(self) -> float:
        return statistics.fmean(self.cli)

    @property
    def ratio(self) -> float:
        """Mean CPU per share over the command line's mean."""
        return self.bot_mean / self.cli_mean


@dataclass
class CpuResult:
    """Item 11: CPU per share (PREVIEW=on, the default) for a voice memo and a long recording."""

    items: list[ShareCpu] = field(default_factory=list)


def run_share_cpu(workdir: Path, recordings: list[Recording], reps: int = 7) -> CpuResult:
    """Share each recording `reps` times, one at a time, to one bot (defaults: previews on), and run the ffmpeg
    command line on it as often, alternating; per share the bot's CPU from the send until its preview is in the
    thread plus SETTLE_SECONDS, less its idle use over that time."""
    result = CpuResult()
    with Rig(workdir, post_limit=SLACK_POST_LIMIT) as rig, httpx.Client(timeout=30) as client:
        assert rig.process is not None
        pid = rig.process.pid
        out = workdir / "cli.wav"
        for recording in recordings:  # warm-up, not counted: first requests, lazy imports, the page cache
            _share(rig, client, recording, f"CCPUWARM{recording.seconds}")
            cli_cpu(recording, out)
        time.sleep(1.0)
        before, started = sum(tree_cpu(pid)), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle = (sum(tree_cpu(pid)) - before) / (time.monotonic() - started)
        for recording in recordings:
            item = ShareCpu(f"{recording.name} ({recording.path.stat().st_size // 1024} KiB)", int(recording.seconds))
            item.idle_rate = idle
            for rep in range(reps):
                if rep % 2:
                    item.cli.append(cli_cpu(recording, out))
                own, below = tree_cpu(pid)
                began = time.monotonic()
                _share(rig, client, recording, f"CCPU{recording.seconds}R{rep:02d}")
                time.sleep(SETTLE_SECONDS)
                own_after, below_after = tree_cpu(pid)
                item.bot_self.append(own_after - own - idle * (time.monotonic() - began))
                item.bot_children.append(below_after - below)
                if not rep % 2:
                    item.cli.append(cli_cpu(recording, out))
            result.items.append(item)
    return result


def _share(rig: Rig, client: httpx.Client, recording: Recording, channel: str) -> None:
    share = rig.file_share(channel, recording)
    rig.deliver(share, client).raise_for_status()
    if not rig.wait_final([share], ANSWER_TIMEOUT) or rig.final_reaction(share) != "white_check_mark":
        raise RuntimeError(f"{recording.name} was not cloned:\n{rig.log_tail()}")
    if not _wait_previews(rig, [share], ANSWER_TIMEOUT):
        raise RuntimeError(f"no preview for {recording.name}:\n{rig.log_tail()}")


@dataclass
class MixedBurstResult:
    """Item 12: memos, long recordings and an hour-long upload shared at once to one bot; its memory meanwhile."""

    recordings: dict[str, int]  # name (size) -> shares of it
    baseline: int  # bot RSS at rest before the burst, bytes
    bot_peak: int  # the bot process's VmHWM (the kernel's high-water mark) after the burst
    bot_sampled: int  # the largest bot RSS polling saw
    children_peak: int  # the largest VmHWM of any process below the bot (ffmpeg, helpers), polled
    children_seen: int
    tree_sampled: int  # the largest RSS of the bot and everything below it together, polled
    outcomes: dict[str, int]  # final reaction -> count
    previews: int  # threads holding their preview mp3 (or saying why none)
    seconds: float  # first send to the last preview settled
    bot_cpu: float  # CPU seconds of the bot from the burst to the end
    children_cpu: float  # ... of the processes below it


def run_mixed_burst(
    workdir: Path, memo: Recording, long: Recording, upload: Recording, memos: int = 40, longs: int = 10,
    max_rps: int = 20,
) -> MixedBurstResult:
    """`memos` shares of `memo`, `longs` of `long` and one of `upload`, one channel each, POSTed at once; the bot's
    memory polled every 20 ms until every thread is answered and previewed."""
    plan = [memo] * memos + [long] * longs + [upload]
    with Rig(workdir, max_rps=max_rps, post_limit=SLACK_POST_LIMIT) as rig:
        assert rig.process is not None
        pid = rig.process.pid
        batch = [rig.file_share(f"CMIX{i:03d}", rec, name=f"Mixed {i} {rec.name}") for i, rec in enumerate(plan)]
        time.sleep(0.5)
        baseline = status_bytes(pid, "VmRSS")
        own, below = tree_cpu(pid)
        with MemorySampler(pid) as sampler:
            began = time.monotonic()
            sent = send_burst_from_child(rig.url, [(share.body, share.headers) for share in batch])
            for share, one in zip(batch, sent, strict=True):
                share.sent_wall, share.sent_mono = one.wall, one.mono
            timeout = ANSWER_TIMEOUT + len(batch) * 2
            rig.wait_final(batch, timeout)
            settled = _wait_previews(rig, batch, timeout)
            seconds = time.monotonic() - began
        own_after, below_after = tree_cpu(pid)
        outcomes: dict[str, int] = {}
        for share in batch:
            reaction = rig.final_reaction(share) or "none"
            outcomes[reaction] = outcomes.get(reaction, 0) + 1
        if not settled:
            raise RuntimeError(f"mixed burst: previews missing after {seconds:.0f} s:\n{rig.log_tail()}")
    counts: dict[str, int] = {}
    for rec in plan:
        key = f"{rec.name} ({rec.path.stat().st_size // 1024} KiB)"
        counts[key] = counts.get(key, 0) + 1
    peaks = sampler.peaks
    return MixedBurstResult(
        recordings=counts,
        baseline=baseline,
        bot_peak=peaks.bot_hwm,
        bot_sampled=peaks.bot_sampled,
        children_peak=peaks.children,
        children_seen=peaks.children_seen,
        tree_sampled=peaks.tree_sampled,
        outcomes=outcomes,
        previews=len(batch) if settled else 0,
        seconds=seconds,
        bot_cpu=own_after - own,
        children_cpu=below_after - below,
    )


# Issue 21's targets: a share's CPU against the command line's on the same file, and the bot's peak under the burst.
SHORT_RATIO = 1.0  # the voice memo
LONG_RATIO = 1.2  # the 180 s recording
MIXED_PEAK = 100_000_000  # bytes (MB as the rest of the report counts them)


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def cost_checks(cpu: CpuResult | None, mixed: MixedBurstResult | None, check: type) -> list:  # type: ignore[type-arg]
    """Items 11 and 12 as report rows (`check`: bench.report.Check, passed in to keep the import one way)."""
    out = []
    if cpu is not None:
        for item in cpu.items:
            target = SHORT_RATIO if item.seconds < 60 else LONG_RATIO
            name = f"{item.seconds} s m4a"
            own, below = statistics.fmean(item.bot_self), statistics.fmean(item.bot_children)
            out += [
                check(11, f"CPU per share, {name}: bot + children (PREVIEW=on), mean", f"{item.bot_mean * 1000:.0f} ms"
                      f" (bot {own * 1000:.0f} ms + children {below * 1000:.0f} ms)", "", None),
                check(11, f"CPU, {name}: ffmpeg command line, mean", f"{item.cli_mean * 1000:.0f} ms", "", None),
                check(11, f"CPU per share over the command line's, {name}", f"{item.ratio:.2f}x", f"<= {target:g}x",
                      item.ratio <= target),
            ]  # fmt: skip
    if mixed is not None:
        total = sum(mixed.recordings.values())
        answered = mixed.outcomes.get("white_check_mark", 0)
        out += [
            check(12, f"Mixed burst ({total} shares at once): answered", f"{answered} of {total}",
                  f"{total} of {total}", answered == total),
            check(12, "Mixed burst: bot peak RSS", _mb(mixed.bot_peak), f"<= {_mb(MIXED_PEAK)}",
                  mixed.bot_peak <= MIXED_PEAK),
            check(12, "Mixed burst: bot and its children together, peak (polled)", _mb(mixed.tree_sampled), "", None),
            check(12, "Mixed burst: largest child peak RSS", f"{_mb(mixed.children_peak)}"
                  f" ({mixed.children_seen} children seen)", "", None),
        ]  # fmt: skip
    return out


def cost_method(cpu: CpuResult | None, mixed: MixedBurstResult | None) -> list[str]:
    """How items 11 and 12 are measured, for the report."""
    lines = []
    if cpu is not None and cpu.items:
        reps = len(cpu.items[0].per_share)
        lines += [
            f"**11: CPU per share (issue 21).** One bot process (defaults: PREVIEW=on, CONSENT=attested) gets"
            f" {reps} shares of each recording, one at a time, after one warm-up share of each; each is timed in CPU,"
            " not wall time, from just before its event is sent until its preview mp3 is in its thread and"
            f" {SETTLE_SECONDS:g} s more: the bot process's own user+system time (its idle use at rest, measured for"
            f" {IDLE_SECONDS:g} s before the shares, taken out over that span) plus that of every process below it"
            " (reaped children through the kernel's children times, live ones such as a pool of decoder processes"
            " read directly). So a share pays for everything it causes: the acknowledgement, files.info, the"
            " download, decoding, analysis, level, the WAV, base64, JSON, TC3 signing, the VoiceClone and"
            " TextToSpeech requests, the answer and the preview's upload. The command line is `ffmpeg -i in.m4a -ac 1"
            " -ar 16000 -t 180 out.wav` with the same ffmpeg the bot bundles, run as often, alternating with the"
            " shares; its CPU is the rusage `wait4` returns. The ratio is of the means (the kernel counts the bot's CPU"
            " in 10 ms ticks: the mean over the shares is exact to a tick over their number, a median is not).",
            "",
        ]
    if mixed is not None:
        lines += [
            "**12: memory under a mixed burst (issue 21).** "
            + ", ".join(f"{count} x {name}" for name, count in mixed.recordings.items())
            + ", each in its own channel, POSTed at once to a fresh bot (TRTC stand-in at 20/s per action). The"
            " bot's peak RSS is its `VmHWM` after every thread holds its answer and preview; the bot and its child"
            " processes (its decoder processes, any ffmpeg) together are polled every 20 ms (sum of `VmRSS`). The"
            " target is the bot process's: its children are at most one per core, each with one recording at a"
            " time, and reported beside it.",
            "",
        ]
    return lines


def cost_details(cpu: CpuResult | None, mixed: MixedBurstResult | None) -> list[str]:
    """The raw figures of items 11 and 12, for the report."""
    lines = []
    if cpu is not None:
        for item in cpu.items:
            shares = ", ".join(f"{v * 1000:.0f}" for v in item.per_share)
            cli = ", ".join(f"{v * 1000:.0f}" for v in item.cli)
            lines.append(
                f"- CPU per share, {item.recording}: bot + children (ms) {shares}; of which children"
                f" {', '.join(f'{v * 1000:.0f}' for v in item.bot_children)}; ffmpeg command line (ms) {cli}; the"
                f" bot's idle use {item.idle_rate * 1000:.1f} ms a second, taken out."
            )
    if mixed is not None:
        lines.append(
            f"- Mixed burst: bot RSS at rest {_mb(mixed.baseline)}, peak {_mb(mixed.bot_peak)} (polled"
            f" {_mb(mixed.bot_sampled)}); bot and children together {_mb(mixed.tree_sampled)}; answers"
            f" {mixed.outcomes}, every preview settled {mixed.seconds:.1f} s after the send; CPU meanwhile: bot"
            f" {mixed.bot_cpu:.1f} s, children {mixed.children_cpu:.1f} s."
        )
    return lines
