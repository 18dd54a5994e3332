"""Turn measurements into docs/benchmarks.md (every number next to its target) and two PNG plots."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

import psutil

from bench.scenarios import MEMORY_TIMEOUT, BurstResult, ConversionResult, MemoryResult, percentile
from bot.audio import find_ffmpeg

MB = 1_000_000  # targets are in MB; RSS is reported in the same unit

# Targets (issue 5).
ACK_P99 = 0.100
ACK_MAX = 3.0
FEEDBACK_P99 = 0.500
CONVERSION_RATIO = 1.3
BOT_PEAK = 150 * MB
PEAK_SPREAD = 0.10
CLONE_RATE = 19.0


@dataclass
class Results:
    """Everything one bench run measured (a scenario left out is None)."""

    command: str
    started: datetime
    seconds: float = 0.0
    load_average: float = 0.0  # 1-minute load average when the run started
    other_cpu: float = 0.0  # CPU seconds other processes used during the run (not the bench, bot or ffmpeg)
    bursts: list[BurstResult] = field(default_factory=list)
    conversion: ConversionResult | None = None
    memory: list[MemoryResult] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    """One number against its target."""

    number: int  # the item of issue 5 it belongs to
    measure: str
    measured: str
    target: str
    met: bool | None  # None: reported, no target

    @property
    def verdict(self) -> str:
        return "" if self.met is None else ("met" if self.met else "**missed**")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


def _runs(values: Sequence[float], show: Callable[[float], str]) -> tuple[float, str]:
    """The median of one figure over the burst runs, and how to print it (every run's value when several)."""
    middle = statistics.median(values)
    if len(values) == 1:
        return middle, show(middle)
    return middle, f"{show(middle)} (runs: {', '.join(show(v) for v in values)})"


def checks(results: Results) -> list[Check]:
    """Every number with its target and verdict where it has one; burst figures are medians of the runs."""
    out: list[Check] = []
    bursts = results.bursts
    if bursts:
        ack50 = _runs([percentile(b.ack_seconds, 50) for b in bursts], _ms)
        ack99 = _runs([percentile(b.ack_seconds, 99) for b in bursts], _ms)
        worst = max(max(b.ack_seconds) for b in bursts)
        sent = sum(b.shares for b in bursts)
        ok = sum(b.statuses.get(200, 0) for b in bursts)
        fb50 = _runs([percentile(b.feedback_seconds, 50) for b in bursts], _ms)
        fb99 = _runs([percentile(b.feedback_seconds, 99) for b in bursts], _ms)
        missing = sum(b.feedback_missing for b in bursts)
        out += [
            Check(1, "Ack latency p50", ack50[1], "", None),
            Check(1, "Ack latency p99", ack99[1], f"<= {_ms(ACK_P99)}", ack99[0] <= ACK_P99),
            Check(1, "Ack latency max (worst run)", _ms(worst), f"< {ACK_MAX:g} s", worst < ACK_MAX),
            Check(1, "Acks answered 200", f"{ok} of {sent}", f"{sent} of {sent}", ok == sent),
            Check(2, "Feedback latency p50", fb50[1], "", None),
            Check(2, "Feedback latency p99", fb99[1], f"<= {_ms(FEEDBACK_P99)}", fb99[0] <= FEEDBACK_P99),
            Check(2, "Shares without feedback", str(missing), "0", missing == 0),
        ]
    conversion = results.conversion
    if conversion is not None:
        out += [
            Check(
                3,
                "Share to VoiceClone request, median",
                f"{statistics.median(conversion.bot_seconds):.2f} s",
                "",
                None,
            ),
            Check(
                3,
                "ffmpeg command line, median",
                f"{statistics.median(conversion.cli_seconds):.2f} s",
                "",
                None,
            ),
            Check(
                3,
                "Conversion cost ratio (bot / ffmpeg)",
                f"{conversion.ratio:.2f}x",
                f"<= {CONVERSION_RATIO}x",
                conversion.ratio <= CONVERSION_RATIO,
            ),
        ]
    memory = results.memory
    for run in memory:
        minutes = f"{run.seconds // 60} min MP3"
        answer = f":{run.outcome}:" if run.outcome else f"none within {MEMORY_TIMEOUT:g} s"
        peak = run.peaks.bot_hwm
        out += [
            Check(4, f"Answered, {minutes}", answer, ":white_check_mark:", run.outcome == "white_check_mark"),
            Check(4, f"Bot peak RSS, {minutes}", _mb(peak), f"<= {_mb(BOT_PEAK)}", peak <= BOT_PEAK),
            Check(4, f"ffmpeg peak RSS, {minutes}", _mb(run.peaks.children), "", None),
        ]
    if len(memory) == 2:
        low, high = sorted(run.peaks.bot_hwm for run in memory)
        spread = (high - low) / low if low else float("inf")
        answered = all(run.outcome == "white_check_mark" for run in memory)
        measured = f"{spread * 100:.1f}%" + ("" if answered else " (not both answered)")
        out.append(
            Check(
                4,
                "Bot peaks apart (larger over smaller)",
                measured,
                f"<= {PEAK_SPREAD * 100:.0f}%",
                spread <= PEAK_SPREAD and answered,
            )
        )
    if bursts:
        rate = _runs([b.clone_rate for b in bursts], lambda v: f"{v:.1f}/s")
        refusals = sum(b.refusals for b in bursts)
        cloned = all(b.accepted == b.shares for b in bursts)
        out += [
            Check(
                5,
                "Clones per second (first to last accepted)",
                rate[1],
                f">= {CLONE_RATE:g}/s",
                rate[0] >= CLONE_RATE and cloned,
            ),
            Check(5, "Refusals by the TRTC stand-in (all runs)", str(refusals), "0", refusals == 0),
        ]
    return out


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    model = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ffmpeg = subprocess.run([find_ffmpeg(), "-version"], capture_output=True, text=True).stdout.splitlines()
    packages = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("uvicorn", "uvloop", "slack-bolt", "httpx")
    )
    return {
        "CPU": model,
        "Cores": f"{os.cpu_count()} logical ({psutil.cpu_count(logical=False)} physical)",
        "RAM": f"{psutil.virtual_memory().total / 1024**3:.1f} GiB",
        "OS": platform.platform(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "ffmpeg": ffmpeg[0] if ffmpeg else "unknown",
        "Packages": packages,
    }


HOW_TO_RUN = """\
## How to run

```sh
scripts/bench
```

One command ({seconds:.0f} s for the run below). It installs the `test,bench` extras into `.venv` when
needed, builds the test recordings once (espeak-ng speech, else a synthetic voice, in
`bench/out/media/`), starts the Slack and TRTC stand-ins in the bench process and runs the real bot as a
separate process (`python -m bot run --http`) aimed at them over loopback. It rewrites this file,
`docs/ack-latency.png` and `docs/clones-over-time.png`; raw numbers go to `bench/out/results.json`, the
bot's logs to `bench/out/*/bot.log`. `scripts/bench --help` lists the options (fewer shares or
repetitions, one scenario at a time: such partial runs leave `docs/` alone).

The numbers are wall-clock times on a shared machine: anything else running on the cores shows up in
them, so the machine section says how busy it was.
"""


def write_markdown(results: Results, path: Path, plots: dict[str, str]) -> None:
    """Write the report; `plots` maps a title to an image path relative to the report."""
    lines = ["# Benchmarks", "", HOW_TO_RUN.format(seconds=results.seconds)]
    lines += [
        f"Measured {results.started:%Y-%m-%d %H:%M} UTC with `{results.command}` in {results.seconds:.0f} s.",
        "",
        "## Results",
        "",
        "| # | Measure | Measured | Target | Verdict |",
        "|---|---|---|---|---|",
    ]
    for check in checks(results):
        target = check.target.replace("<", "&lt;") if check.target else "-"
        lines.append(f"| {check.number} | {check.measure} | {check.measured} | {target} | {check.verdict} |")
    lines += ["", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in machine().items()]
    share = results.other_cpu / (results.seconds * (os.cpu_count() or 1)) if results.seconds else 0.0
    lines += [
        f"- Other load: 1-minute load average {results.load_average:.2f} when the run started; other"
        f" processes used {results.other_cpu:.0f} CPU seconds during it ({share * 100:.0f}% of the machine).",
        "",
        "## How each number is measured",
        "",
        *_method(results),
        *_details(results),
    ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({image})" for title, image in plots.items()]
    path.write_text("\n".join(lines) + "\n")


def _method(results: Results) -> list[str]:
    lines: list[str] = []
    if results.bursts:
        burst, runs = results.bursts[0], len(results.bursts)
        lines += [
            f"**1, 2 and 5: a burst, {runs} times.** {burst.shares} signed `file_share` events, each for its"
            f" own copy of {burst.clip} in its own channel ({burst.channels} channels), are POSTed at once"
            " to a freshly started bot (its first requests) from a separate load-generator process"
            " (aiohttp, one connection each). The bot posts at most one message a second per channel, as"
            " Slack allows, so one channel would measure that pacing; one channel per share measures the"
            f" bot. Every share is cloned, so the burst is also the {burst.shares} queued clones of item 5."
            f" The burst runs {runs} times, each with a new bot process; the table gives the median of the"
            " runs and each run's figure.",
            "",
            "- *Ack latency*: from just before a request is sent to the end of its HTTP response, as the"
            " sender sees it (connection set-up included).",
            "- *Feedback latency*: from the same moment to the first call the Slack stand-in recorded that"
            " the user would see for that share: the :hourglass_flowing_sand: reaction on it or the status"
            " message in its thread, whichever came first.",
            f"- *Throughput*: the TRTC stand-in enforces {burst.max_rps} requests a second (a sliding"
            " one-second window) and refuses the excess with `RequestLimitExceeded`. Clones per second ="
            " (accepted - 1) / (last accepted arrival - first accepted arrival).",
            "",
        ]
    conversion = results.conversion
    if conversion is not None:
        lines += [
            f"**3: conversion cost.** {conversion.recording}. Each repetition shares it in a new channel"
            " and times the send to the arrival of the VoiceClone request at the TRTC stand-in, then (or"
            " first: the order alternates) runs `ffmpeg -i in.m4a -ac 1 -ar 16000 -t 180 out.wav` on the"
            f" same file with the same ffmpeg. {len(conversion.bot_seconds)} repetitions of each after one"
            " warm-up of each; the ratio is of the medians. The bot's time is what a user waits for:"
            " acknowledgement, queue, status message, download, conversion and checks, then encoding,"
            " signing and sending the request.",
            "",
        ]
    if results.memory:
        lines += [
            "**4: memory.** For each recording a fresh bot process handles that one share. The bot's peak"
            " RSS is the kernel's high-water mark (`VmHWM` in `/proc/PID/status`, read before it stops);"
            " its children (ffmpeg) are polled every 20 ms with psutil, keeping the largest `VmHWM` seen.",
            "",
        ]
    return lines


def _details(results: Results) -> list[str]:
    lines = ["## Details", ""]
    for run, burst in enumerate(results.bursts, 1):
        per_share = 1000 / max(1, burst.shares)
        busy = burst.ack_cpu / burst.ack_makespan if burst.ack_makespan else 0.0
        slowest = _ms(max(burst.feedback_seconds, default=0))
        lines.append(
            f"- Burst run {run}: all {burst.shares} responses within {_ms(burst.ack_makespan)} of the first"
            f" send (HTTP statuses {burst.statuses}), the bot using {_ms(burst.ack_cpu)} of CPU meanwhile"
            f" ({busy * 100:.0f}% of one core). Feedback for {len(burst.feedback_seconds)} shares, the"
            f" slowest after {slowest}. {burst.accepted} VoiceClone requests accepted, {burst.refusals}"
            f" refused, at most {burst.busiest_second} in any one second; final answers {burst.outcomes},"
            f" the last {burst.answered_in:.1f} s after the first send. CPU from the burst to the last"
            f" answer: bot process {burst.bot_cpu:.1f} s ({burst.bot_cpu * per_share:.0f} ms per share),"
            f" its ffmpeg runs {burst.ffmpeg_cpu:.1f} s ({burst.ffmpeg_cpu * per_share:.0f} ms per share),"
            f" the bench process with both stand-ins {burst.standin_cpu:.1f} s."
        )
    conversion = results.conversion
    if conversion is not None:
        stages = ", ".join(f"{name} {value:.3f} s" for name, value in conversion.stage_medians().items())
        bot = ", ".join(f"{s:.3f}" for s in conversion.bot_seconds)
        cli = ", ".join(f"{s:.3f}" for s in conversion.cli_seconds)
        lines += [
            f"- Conversion, bot (s): {bot}; ffmpeg command line (s): {cli}.",
            f"- Where the bot's time goes (medians): {stages}. *to conversion*: send to the `converting`"
            " status (acknowledgement, queue, status message, download); *conversion*: on to the `cloning`"
            " status (ffmpeg, the voice and length checks, the WAV); *to request*: on to the VoiceClone"
            " request's arrival (base64, JSON, TC3 signing, rate limiter, sending).",
        ]
    if results.memory:
        lines += [
            "",
            "| Recording | Bot idle RSS | Bot peak RSS | Bot peak (polled) | ffmpeg peak | Answer | Time |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in results.memory:
            peaks = run.peaks
            answer = f":{run.outcome}:" if run.outcome else f"none within {MEMORY_TIMEOUT:g} s"
            took = f"{run.answered_in:.2f} s" if run.answered_in is not None else "-"
            lines.append(
                f"| {run.recording} | {_mb(run.baseline)} | {_mb(peaks.bot_hwm)} | {_mb(peaks.bot_sampled)} |"
                f" {_mb(peaks.children)} ({peaks.children_seen} seen) | {answer} | {took} |"
            )
    return lines


def plot_ack(bursts: Sequence[BurstResult], path: Path) -> None:
    """Histogram of ack latency, and CDFs of ack and feedback latency, all runs pooled, with the targets."""
    plt = _pyplot()
    acks = [s * 1000 for b in bursts for s in b.ack_seconds]
    feedback = [s * 1000 for b in bursts for s in b.feedback_seconds]
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 4.2))
    hist.hist(acks, bins=40, color="tab:blue")
    for q, style in ((50, ":"), (99, "--")):
        value = percentile(acks, q)
        hist.axvline(value, color="black", linestyle=style, label=f"p{q} {value:.0f} ms (pooled)")
    hist.axvline(ACK_P99 * 1000, color="tab:red", label=f"p99 target {ACK_P99 * 1000:.0f} ms")
    title = f"Ack latency, {bursts[0].shares} shares at once ({len(bursts)} runs pooled)"
    hist.set(xlabel="ack latency (ms)", ylabel="requests", title=title)
    hist.legend()
    for values, label, color in ((acks, "ack", "tab:blue"), (feedback, "first feedback", "tab:orange")):
        data = sorted(values)
        fraction = [(i + 1) / len(data) for i in range(len(data))]
        cdf.step(data, fraction, where="post", label=label, color=color)
    cdf.axvline(ACK_P99 * 1000, color="tab:blue", linestyle="--", label="ack p99 target")
    cdf.axvline(FEEDBACK_P99 * 1000, color="tab:orange", linestyle="--", label="feedback p99 target")
    cdf.axhline(0.99, color="grey", linewidth=0.8)
    cdf.set(xlabel="ms after the share was sent", ylabel="fraction of shares", title="CDF", ylim=(0, 1.02))
    cdf.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_clones(bursts: Sequence[BurstResult], path: Path) -> None:
    """Cumulative accepted VoiceClone requests over time, one line per run, against the limit and target."""
    plt = _pyplot()
    fig, axes = plt.subplots(figsize=(8, 4.5))
    end = 1.0
    for run, burst in enumerate(bursts, 1):
        times = burst.clone_offsets
        label = f"run {run}: {burst.clone_rate:.1f}/s, {burst.refusals} refused"
        axes.step(times, range(1, len(times) + 1), where="post", label=label)
        end = max(end, *times)
    limit = bursts[0].max_rps
    if limit:
        axes.plot([0, end], [0, limit * end], linestyle="--", color="grey", label=f"server limit {limit}/s")
    axes.plot(
        [0, end], [0, CLONE_RATE * end], linestyle=":", color="tab:red", label=f"target {CLONE_RATE:g}/s"
    )
    axes.set(
        xlabel="seconds since the first VoiceClone request",
        ylabel="clones accepted",
        title=f"{bursts[0].shares} queued clones per run",
        ylim=(0, bursts[0].shares * 1.05),
    )
    axes.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib  # deferred: a second of imports that only the plots need

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
