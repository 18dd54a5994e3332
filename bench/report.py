"""Turn measurements into docs/benchmarks.md (every number next to its target) and two PNG plots."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

import psutil

from bench.cost import CpuResult, MixedBurstResult, cost_checks, cost_details, cost_method
from bench.scenarios import (
    MEMORY_TIMEOUT,
    SLACK_POST_LIMIT,
    BurstResult,
    ChannelResult,
    ConversionResult,
    MemoryResult,
    PressResult,
    PreviewResult,
    percentile,
)
from bot.voice.audio import find_ffmpeg

MB = 1_000_000  # targets are in MB; RSS is reported in the same unit

# Targets (issue 5; item 6 is issue 8's one-channel scenario, with the same clone-rate target; the conversion
# ratio and the memory ceiling are issue 10's item 7; item 7 here is issue 11's press -> request).
ACK_P99 = 0.100
ACK_MAX = 3.0
FEEDBACK_P99 = 0.500
CONVERSION_RATIO = 1.2
BOT_PEAK = 100 * MB
PRESS_TO_REQUEST = 1.0
PEAK_SPREAD = 0.10
CLONE_RATE = 19.0
# Issue 13: with the web role (acknowledge and store only; the work in worker processes) the burst's ack p99.
WEB_ACK_P99 = 0.050


@dataclass
class Results:
    """Everything one bench run measured (a scenario left out is None)."""

    command: str
    started: datetime
    seconds: float = 0.0
    load_average: float = 0.0  # 1-minute load average when the run started
    other_cpu: float = 0.0  # CPU seconds other processes used during the run (not the bench, bot or ffmpeg)
    bursts: list[BurstResult] = field(default_factory=list)
    channel: ChannelResult | None = None
    conversion: ConversionResult | None = None
    memory: list[MemoryResult] = field(default_factory=list)
    press: PressResult | None = None
    preview: PreviewResult | None = None
    web_bursts: list[BurstResult] = field(default_factory=list)  # item 9: --role web + 1 worker
    # Item 9's floor: per run, each request's seconds from the same load generator to uvicorn answering an empty 200.
    web_floor: list[list[float]] = field(default_factory=list)
    worker_bursts: list[BurstResult] = field(default_factory=list)  # item 10: --role web + N workers, every N
    cpu: CpuResult | None = None  # item 11 (issue 21): CPU per share against the ffmpeg command line
    mixed: MixedBurstResult | None = None  # item 12 (issue 21): peak memory under a mixed burst


@dataclass(frozen=True)
class Check:
    """One number against its target."""

    number: int  # the item of issue 5 it belongs to (6: the one-channel scenario of issue 8)
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
    sent = sum(b.shares for b in bursts)
    if bursts:
        out += _ack_checks(bursts, ack_item=1, feedback_item=2, prefix="", ack_target=ACK_P99)
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
            Check(4, f"Largest child peak RSS (decoder process or ffmpeg), {minutes}", _mb(run.peaks.children), "",
                  None),
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
            Check(5, "Refusals by the TRTC stand-in (all runs, both actions)", str(refusals), "0", refusals == 0),
            Check(
                5,
                "Previews in their threads (PREVIEW=on, the default; all runs)",
                f"{sum(b.preview_files for b in bursts)} of {sent}" if all(b.previews for b in bursts) else "off",
                "",
                None,
            ),
            Check(
                5,
                "Answered exactly once in its own thread (all runs)",
                f"{sum(b.answered_once for b in bursts)} of {sent}",
                f"{sent} of {sent}",
                sum(b.answered_once for b in bursts) == sent,
            ),
        ]
    channel = results.channel
    if channel is not None:
        out += channel_checks(channel)
    press = results.press
    if press is not None and press.seconds:
        p50, p99, worst = (percentile(press.seconds, 50), percentile(press.seconds, 99), max(press.seconds))
        asked = _ms(statistics.median(press.asked_seconds))
        limit = f"<= {_ms(PRESS_TO_REQUEST)}"
        out += [
            Check(7, "CONSENT=ask: share to consent question, median", asked, "", None),
            Check(7, f"Press to VoiceClone request p50 ({len(press.seconds)} presses)", _ms(p50), "", None),
            Check(7, "Press to VoiceClone request p99", _ms(p99), limit, p99 <= PRESS_TO_REQUEST),
            Check(7, "Press to VoiceClone request max", _ms(worst), limit, worst <= PRESS_TO_REQUEST),
        ]
    if results.preview is not None:
        out += preview_checks(results.preview)
    if results.web_bursts:
        out += web_checks(results.web_bursts)
    if results.web_floor:
        _, floor = _runs([percentile(run, 99) for run in results.web_floor], _ms)
        out.append(Check(9, "Floor: the same burst to uvicorn answering an empty 200 (no Bolt, no database), ack p99",
                         floor, "", None))
    if results.worker_bursts:
        out += worker_checks(results.worker_bursts)
    out += cost_checks(results.cpu, results.mixed, Check)
    return out


def web_checks(bursts: Sequence[BurstResult]) -> list[Check]:
    """Item 9 (issue 13): the burst's acks from a --role web process, a worker process doing the work."""
    sent = sum(b.shares for b in bursts)
    once = sum(b.answered_once for b in bursts)
    return [
        *_ack_checks(bursts, ack_item=9, feedback_item=9, prefix="Web role: ", ack_target=WEB_ACK_P99),
        Check(9, "Web role: answered exactly once in its own thread (all runs)", f"{once} of {sent}",
              f"{sent} of {sent}", once == sent),
    ]  # fmt: skip


def _label(prefix: str, name: str) -> str:
    """'Ack latency p99', or 'Web role: ack latency p99'."""
    return f"{prefix}{name[0].lower()}{name[1:]}" if prefix else name


def _ack_checks(
    bursts: Sequence[BurstResult], *, ack_item: int, feedback_item: int, prefix: str, ack_target: float
) -> list[Check]:
    """Acknowledgement and feedback latency of a set of bursts (medians of the runs, each run listed)."""
    ack50 = _runs([percentile(b.ack_seconds, 50) for b in bursts], _ms)
    ack99 = _runs([percentile(b.ack_seconds, 99) for b in bursts], _ms)
    worst = max(max(b.ack_seconds) for b in bursts)
    sent = sum(b.shares for b in bursts)
    ok = sum(b.statuses.get(200, 0) for b in bursts)
    fb50 = _runs([percentile(b.feedback_seconds, 50) for b in bursts], _ms)
    fb99 = _runs([percentile(b.feedback_seconds, 99) for b in bursts], _ms)
    missing = sum(b.feedback_missing for b in bursts)
    return [
        Check(ack_item, _label(prefix, "Ack latency p50"), ack50[1], "", None),
        Check(ack_item, _label(prefix, "Ack latency p99"), ack99[1], f"<= {_ms(ack_target)}", ack99[0] <= ack_target),
        Check(ack_item, _label(prefix, "Ack latency max (worst run)"), _ms(worst), f"< {ACK_MAX:g} s", worst < ACK_MAX),
        Check(ack_item, _label(prefix, "Acks answered 200"), f"{ok} of {sent}", f"{sent} of {sent}", ok == sent),
        Check(feedback_item, _label(prefix, "Feedback latency p50"), fb50[1], "", None),
        Check(feedback_item, _label(prefix, "Feedback latency p99"), fb99[1], f"<= {_ms(FEEDBACK_P99)}",
              fb99[0] <= FEEDBACK_P99),
        Check(feedback_item, _label(prefix, "Shares without feedback"), str(missing), "0", missing == 0),
    ]  # fmt: skip


def worker_checks(bursts: Sequence[BurstResult]) -> list[Check]:
    """Item 10 (issue 13): clones/s with 1 and with 2 worker processes under one shared TRTC limit (Redis)."""
    out: list[Check] = []
    counts = sorted({b.workers for b in bursts})
    for workers in counts:
        runs = [b for b in bursts if b.workers == workers]
        rate = _runs([b.clone_rate for b in runs], lambda v: f"{v:.1f}/s")
        accepted = sum(b.accepted for b in runs)
        sent = sum(b.shares for b in runs)
        label = f"{workers} worker process{'es' if workers > 1 else ''}"
        out.append(
            Check(10, f"{label}: clones per second (first to last accepted)",
                  f"{rate[1]} ({accepted} of {sent} accepted)", "", None)
        )  # fmt: skip
    refusals = sum(b.refusals for b in bursts)
    limit = bursts[0].max_rps
    busiest = max(b.busiest_second for b in bursts)
    sent = sum(b.shares for b in bursts)
    once = sum(b.answered_once for b in bursts)
    which = " and ".join(str(n) for n in counts)
    out += [
        Check(10, f"{which} workers: refusals by the TRTC stand-in (all runs)", str(refusals), "0", refusals == 0),
        Check(10, f"{which} workers: most accepted in any one second (all runs)", str(busiest),
              f"<= {limit}" if limit else "", busiest <= limit if limit else None),
        Check(10, f"{which} workers: answered exactly once in its own thread (all runs)", f"{once} of {sent}",
              f"{sent} of {sent}", once == sent),
    ]  # fmt: skip
    return out


def preview_checks(run: PreviewResult) -> list[Check]:
    """Item 8 (issue 12): the clone's answer in the thread -> the preview mp3 shared in that thread; no target."""
    n, got = run.shares, run.previews
    values = run.seconds
    out = [
        Check(8, f"PREVIEW=on: answer -> preview in the thread p50 ({got} of {n} shares)",
              _ms(percentile(values, 50)), "", None),
        Check(8, "PREVIEW=on: answer -> preview in the thread p99", _ms(percentile(values, 99)), "", None),
        Check(8, "PREVIEW=on: answer -> preview in the thread max", _ms(max(values, default=float("nan"))), "",
              None),
        Check(8, "PREVIEW=on: previews that are playable mp3 (ffmpeg reads and decodes)", f"{run.playable} of {n}",
              "", None),
    ]  # fmt: skip
    return out


def channel_checks(run: ChannelResult) -> list[Check]:
    """Item 6: shares in one channel, cloned at the API's pace and answered at Slack's."""
    n = run.shares
    ack99 = percentile(run.ack_seconds, 99)
    ok = run.statuses.get(200, 0)
    return [
        Check(
            6,
            "One channel: clones per second (first to last accepted)",
            f"{run.clone_rate:.1f}/s ({run.accepted} of {n} accepted)",
            f">= {CLONE_RATE:g}/s",
            run.clone_rate >= CLONE_RATE and run.accepted == n,
        ),
        Check(6, "One channel: refusals by the TRTC stand-in", str(run.refusals), "0", run.refusals == 0),
        Check(6, "One channel: ack latency p50", _ms(percentile(run.ack_seconds, 50)), "", None),
        Check(6, "One channel: ack latency p99", _ms(ack99), f"<= {_ms(ACK_P99)}", ack99 <= ACK_P99),
        Check(6, "One channel: acks answered 200", f"{ok} of {n}", f"{n} of {n}", ok == n),
        Check(
            6,
            "One channel: first feedback p50 / p99",
            f"{_ms(percentile(run.feedback_seconds, 50))} / {_ms(percentile(run.feedback_seconds, 99))}"
            + (f" ({run.feedback_missing} without)" if run.feedback_missing else ""),
            "",
            None,
        ),
        Check(
            6,
            "One channel: last answer after the first send",
            f"{run.last_answer:.1f} s",
            "",
            None,
        ),
        Check(
            6,
            f"One channel: last bot message ({'answers and previews' if run.previews else 'answers'}) after the"
            " first send",
            f"{run.last_message:.1f} s (Slack's limit allows no less than {run.slack_floor:.0f} s for"
            f" {run.new_messages} new messages)",
            "",
            None,
        ),
        Check(
            6,
            "One channel: answered exactly once in its own thread",
            f"{run.answered_once} of {n}",
            f"{n} of {n}",
            run.answered_once == n,
        ),
        Check(
            6,
            "One channel: bot messages outside the shares' threads",
            str(run.stray_messages),
            "0",
            run.stray_messages == 0,
        ),
        Check(6, "One channel: Slack 429s received (chat.postMessage)", str(run.slack_429s), "", None),
    ]


def channel_verdict(run: ChannelResult) -> str:
    """One line: the one-channel scenario against issue 8's target."""
    met = (
        run.clone_rate >= CLONE_RATE
        and run.accepted == run.shares
        and run.refusals == 0
        and run.answered_once == run.shares
        and run.stray_messages == 0
    )
    cores = os.cpu_count() or 1
    busy = run.cloning_machine_cpu / (run.cloning_wall * cores) if run.cloning_wall else float("nan")
    need = (run.cloning_bot_cpu + run.cloning_ffmpeg_cpu) / max(1, run.shares) * CLONE_RATE / cores
    return (
        f"**Verdict, one channel (issue 8): {'met' if met else 'missed'}.** {run.shares} shares in one channel were"
        f" cloned at {run.clone_rate:.1f}/s from the first to the last accepted VoiceClone request (target >="
        f" {CLONE_RATE:g}/s, {run.accepted} of {run.shares} accepted), with {run.refusals} refused by the TRTC"
        f" stand-in (target 0); {run.answered_once} of {run.shares} were answered exactly once in their own"
        f" threads, the last {run.last_answer:.1f} s after the first send, at Slack's pace; the bot got"
        f" {run.slack_429s} HTTP 429s from Slack's per-channel post limit. While the clones went out"
        f" ({run.cloning_wall:.1f} s) the machine's {cores} cores were {busy * 100:.0f}% busy: the bot and its ffmpeg"
        f" runs {run.cloning_bot_cpu + run.cloning_ffmpeg_cpu:.1f} CPU s"
        f" ({(run.cloning_bot_cpu + run.cloning_ffmpeg_cpu) * 1000 / max(1, run.shares):.0f} ms a share), other"
        f" processes {run.cloning_other_cpu:.1f} CPU s. At {CLONE_RATE:g} clones a second the bot and ffmpeg alone"
        f" need {need * 100:.0f}% of the machine at that cost, so other work on the same cores can pull the rate"
        " below the target."
    )


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
needed, builds the test recordings once (the speech shipped in `bot/testing/data`, looped, in
`bench/out/media/`), starts the Slack and TRTC stand-ins in the bench process and runs the real bot as a
separate process (`python -m bot run --http`: Slack pacing on, as by default) aimed at them. Items 1 to 8, 11
and 12 run one bot process with the default `--role all` on a SQLite file of its own (it decodes in child
processes of its own, bot.voice.preparers: "children" below). Items 9 and 10 (issue 13) run the bot
as several processes on one PostgreSQL database that the bench creates for each run on the machine's server
(`postgresql://postgres@127.0.0.1:5432`, database `bench_<pid>_<random>`, dropped after the run) and one
`DATA_DIR`, with `REDIS_URL` (`redis://127.0.0.1:6379/11`, a Redis database of the bench's own; the bot's
call-count keys, one per TRTC action, are deleted before and after each run) so that `TRTC_MAX_RPS` is one limit
per action for all of them: one
`python -m bot run --http --role web` process receives the shares (it verifies, stores and acknowledges them,
nothing else), and one (item 9; item 10: one, then two) `--role worker` process(es), started after it, claim
the jobs from the database, download, convert, call TRTC, and the leading worker sends the Slack outbox. Each run
starts all of them afresh. `BENCH_POSTGRES_URL` and `BENCH_REDIS_URL` point the bench elsewhere. Every scenario
runs the bot with the settings users get by default, with one exception, said here: every scenario but item 7
sets `CONSENT=attested`, so each share is cloned without the uploader's consent button press that the default
`ask` waits for (no scenario but item 7 presses buttons); item 7 runs with the default, `CONSENT=ask`, presses the
button and times the default's press -> request path. Every scenario runs with the default `PREVIEW=on`: each
clone is followed by its TextToSpeech preview and the upload of that mp3 into the share's thread, so every item
pays for the previews (one more TRTC request, under TextToSpeech's own 20/s, and one more message per share),
and each thread is complete once the preview is in; item 8 times that preview. Everything
talks over loopback (127.0.0.1) on one machine: no real Slack or Tencent Cloud, no network between them, so
the times leave out real network latency. It rewrites this file, `docs/ack-latency.png`,
`docs/clones-over-time.png` and `docs/one-channel.png`; raw numbers go to `bench/out/results.json`, the bot's
logs to `bench/out/*/bot.log` (items 9 and 10: the web process's; each worker's in `worker-N.log` beside it).
`scripts/bench --help` lists the options (fewer shares or repetitions, one scenario at a time with `--only`,
e.g. `--only web`, `--only workers --workers 1,2`, `--only cpu` or `--only mixed`: such partial runs leave
`docs/` alone).

Stand-in limits that were on:

{limits}

The numbers are wall-clock times on a shared machine, but for item 11's, which are CPU times (the kernel's
counters, not the clock): anything else running on the cores shows up in them, so the machine section says how
busy it was.
"""


def _limits(results: Results) -> list[str]:
    per_second, burst = SLACK_POST_LIMIT
    bursts = results.bursts or results.web_bursts or results.worker_bursts
    rps = results.channel.max_rps if results.channel else (bursts[0].max_rps if bursts else None)
    return [
        f"- Slack stand-in, every scenario: chat.postMessage limited per channel to {per_second:g} a second with"
        f" bursts of {burst} (a token bucket), as Slack does; over it, HTTP 429 with `Retry-After`. Edits and"
        " reactions are not limited.",
        f"- TRTC stand-in, items 1, 2, 5, 6, 8, 9 and 10: at most {rps} requests a second per action (a sliding"
        " one-second window for VoiceClone and another for TextToSpeech, as Tencent counts its API frequency"
        " limits), the excess refused with `RequestLimitExceeded`. Items 3, 4 and 7 (one share at a time): no"
        " limit.",
        "- No outages, delays or errors were injected; the TRTC stand-in answers VoiceClone and TextToSpeech at"
        " once. It makes each distinct TextToSpeech audio once (ffmpeg, in the bench process) and answers the same"
        " request again with the same audio, as every preview says the same sentence: Tencent speaks on its own"
        " servers, and the stand-in's ffmpeg runs would otherwise take the cores the bot's conversions use.",
    ]


def write_markdown(results: Results, path: Path, plots: dict[str, str]) -> None:
    """Write the report; `plots` maps a title to an image path relative to the report."""
    lines = ["# Benchmarks", "", HOW_TO_RUN.format(seconds=results.seconds, limits="\n".join(_limits(results)))]
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
    if results.channel is not None:
        lines += ["", channel_verdict(results.channel)]
    lines += ["", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in machine().items()]
    share = results.other_cpu / (results.seconds * (os.cpu_count() or 1)) if results.seconds else 0.0
    lines += [
        f"- Other load: 1-minute load average {results.load_average:.2f} when the run started; other"
        f" processes used {results.other_cpu:.0f} CPU seconds during it ({share * 100:.0f}% of the machine).",
        "- "
        + (
            "The machine was shared: other work ran on the same 2 cores during the run (the load above), so"
            " the times include its effect."
            if share >= 0.05 or results.load_average >= 0.5
            else "The machine is shared with other work, which was nearly idle during this run (under 5% of it)."
        ),
        "",
        "## How each number is measured",
        "",
        *_method(results),
        *_details(results),
    ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({image})" for title, image in plots.items()]
    kept = _hand_written(path)
    path.write_text("\n".join(lines) + "\n" + (f"\n{kept}" if kept else ""))


HAND_WRITTEN = "written by hand, not by scripts/bench"


def _hand_written(path: Path) -> str:
    """The sections of the existing report written by hand (a heading that says HAND_WRITTEN, to the end):
    a new run keeps them after what it writes."""
    if not path.exists():
        return ""
    text = path.read_text()
    for at, line in enumerate(text.splitlines(keepends=True)):
        if line.startswith("## ") and HAND_WRITTEN in line:
            return "".join(text.splitlines(keepends=True)[at:])
    return ""


def _method(results: Results) -> list[str]:
    lines: list[str] = []
    if results.bursts:
        burst, runs = results.bursts[0], len(results.bursts)
        lines += [
            f"**1, 2 and 5: a burst, {runs} times.** {burst.shares} signed `file_share` events, each for its"
            f" own copy of {burst.clip} in its own channel ({burst.channels} channels), are POSTed at once"
            " to a freshly started bot (its first requests) from a separate load-generator process"
            " (aiohttp, one connection each). One channel per share keeps Slack's per-channel posting pace"
            " out of the acknowledgement and feedback figures (item 6 puts 100 shares in one channel)."
            f" Every share is cloned, so the burst is also the {burst.shares} queued clones of item 5."
            f" The burst runs {runs} times, each with a new bot process; the table gives the median of the"
            " runs and each run's figure.",
            "",
            "- *Ack latency*: from just before a request is sent to the end of its HTTP response, as the"
            " sender sees it (connection set-up included).",
            "- *Feedback latency*: from the same moment to the first thing the user would see for that share"
            " in the Slack stand-in: the :hourglass_flowing_sand: reaction on it (its reactions.add call) or the"
            " first bot message stored in its thread (a post refused with 429 does not count), whichever came"
            " first.",
            f"- *Throughput*: the TRTC stand-in enforces {burst.max_rps} requests a second per action (a"
            " sliding one-second window each for VoiceClone and TextToSpeech) and refuses the excess with"
            " `RequestLimitExceeded`. Clones per second = (accepted VoiceClone requests - 1) / (last accepted"
            " arrival - first accepted arrival); the previews' TextToSpeech requests run alongside in their own"
            " window. Refusals count both actions.",
            "- *Answered exactly once*: after the run (once every preview is in), the share's thread in the Slack"
            " stand-in holds exactly one final answer and, after it, exactly one preview of the new voice (its mp3"
            " file message, or the message saying why there is none), nothing else; the preview (\":loud_sound:"
            " Preview of ...\") is never taken for an answer.",
            "",
        ]
    channel = results.channel
    if channel is not None:
        per_second, burst = channel.post_limit
        lines += [
            f"**6: one channel (issue 8).** {channel.shares} signed `file_share` events for copies of"
            f" {channel.clip}, all in ONE channel, POSTed at once to a fresh bot from the same load generator."
            f" The TRTC stand-in allows {channel.max_rps} requests a second; the Slack stand-in refuses"
            f" chat.postMessage in a channel beyond {per_second:g} a second (bursts of {burst}) with HTTP 429 and"
            " `Retry-After`, as Slack does. Cloning must run at the API's pace while the answers go out at"
            " Slack's: "
            + (
                "two new messages per share (the answer, then the preview mp3: the bot paces its uploads like"
                " posts, as shared files are messages)"
                if channel.previews
                else "one new message per share"
            )
            + f" in one channel cannot take less than ({channel.new_messages} - {burst}) / {per_second:g} ="
            f" {channel.slack_floor:.0f} s.",
            "",
            "- *Clones per second*: as in item 5, from the first to the last accepted VoiceClone request.",
            "- *Ack latency* and *first feedback* (the :hourglass_flowing_sand: reaction or a bot message in the"
            " thread) as in items 1 and 2.",
            "- *Last answer*: from the first send to the moment the last share's thread showed its final answer"
            " (the post or the edit that made the message the answer, timed by the stand-in's message ts).",
            "- *Answered exactly once*: each share's thread holds exactly one final answer and after it its"
            " preview, as in item 5; no bot message appears in the channel outside the shares' threads. The"
            " preview mp3s go up with `files.completeUploadExternal`, which the stand-in does not limit per"
            " channel.",
            "- *Slack 429s*: chat.postMessage calls the Slack stand-in refused for the per-channel limit.",
            "",
        ]
    press = results.press
    if press is not None:
        lines += [
            f"**7: press -> VoiceClone request (issue 11).** A fresh bot with `CONSENT=ask`. {press.recording} is"
            " shared in a new channel each time; once the consent question (the message with the *Clone this"
            " voice* button) is in the share's thread, a signed `block_actions` press of that button by the"
            " uploader is POSTed to the bot, timed from just before it is sent to the arrival of the VoiceClone"
            " request at the TRTC stand-in (the audio was prepared before the question was asked: what is left"
            " is the ack, reading the prepared WAV, building and signing the body and sending it). The next"
            f" share waits for the answer. {len(press.seconds)} presses after one warm-up; p99 by linear"
            " interpolation, so with 20 presses it sits between the two slowest.",
            "",
        ]
    preview = results.preview
    if preview is not None:
        lines += [
            f"**8: clone answer -> preview in the thread (issue 12).** A fresh bot with `PREVIEW=on` and"
            f" `CONSENT=attested`. {preview.shares} signed `file_share` events, each for its own copy of"
            f" {preview.clip} in its own channel, are POSTed at once from the load generator: their"
            f" {preview.shares} VoiceClone requests and {preview.shares} TextToSpeech requests each have the TRTC"
            f" stand-in's {preview.max_rps}/s (a window per action). After each clone the bot posts the answer in"
            " the share's thread, asks"
            " TextToSpeech for the preview sentence as mp3 and uploads it into the same thread through its outbox"
            " (`files.getUploadURLExternal`, the upload, `files.completeUploadExternal` with `channel_id` and"
            " `thread_ts`). Per share, timed by the Slack stand-in's clock: from the answer landing in the thread"
            " (the stored \"Voice cloned\" message's ts, or the ts of the edit that made a message the answer) to"
            " the preview's file message landing in that thread (its ts, stamped when"
            " `files.completeUploadExternal` stored it). p99 by linear interpolation over the shares. Each"
            " preview's bytes, as the stand-in kept them, are checked with ffprobe (format mp3, an mp3 audio"
            " stream, a duration above 0) and decoded to the end by ffmpeg without an error.",
            "",
        ]
    if results.web_bursts:
        web, runs = results.web_bursts[0], len(results.web_bursts)
        lines += [
            f"**9: ack latency with the web role (issue 13), {runs} run(s).** The burst of items 1 and 2"
            f" ({web.shares} signed `file_share` events of {web.clip}, one channel each, at once from the same load"
            f" generator) goes to a `--role web` process, with {web.workers} `--role worker` process doing the work"
            " (PostgreSQL, Redis, TRTC stand-in at"
            f" {web.max_rps}/s); every process is started afresh for each run. *Ack latency* and *feedback latency*"
            " are measured exactly as in items 1 and 2; the feedback (the :hourglass_flowing_sand: reaction or"
            " the first message in the thread) now comes from the worker that leads the outbox, through the"
            " database. The table gives the median of the runs and each run's figure. *Floor*: the same load generator"
            " sends the same number of requests of the same size, at once, to a uvicorn process (configured as the"
            " bot's) whose app reads each request and answers an empty 200, after one warm-up burst: what the"
            " client, the kernel and uvicorn alone take for the burst on this machine, the least this item could"
            " measure.",
            "",
        ]
    if results.worker_bursts:
        counts = sorted({b.workers for b in results.worker_bursts})
        first = results.worker_bursts[0]
        per = Counter(b.workers for b in results.worker_bursts)
        lines += [
            "**10: clones per second with "
            + " and with ".join(f"{n} worker process{'es' if n > 1 else ''}" for n in counts)
            + f" (issue 13).** The burst of item 5 ({first.shares} shares of {first.clip}, one channel each, at"
            " once) goes to a `--role web` process; N `--role worker` processes share the work through"
            " PostgreSQL and one TRTC limit per action through Redis (`TRTC_MAX_RPS="
            f"{first.max_rps}` in every process, counted in one Redis key per action); the TRTC stand-in refuses"
            f" anything over {first.max_rps} a second of one action, whoever sends it. "
            + ", ".join(f"{per[n]} run(s) with {n}" for n in counts)
            + ", each with every process started afresh. Clones per second, refusals, the busiest one-second"
            " window and *answered exactly once* as in item 5. On a 2-core machine a second worker adds"
            " processes competing for the same cores, and one process already reaches the cap, so the target is"
            " only what must hold whatever the number of workers: no refusal, never more than the cap in any"
            " second, every share answered exactly once.",
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
            " acknowledgement, queue, files.info, download, conversion and checks, then encoding, signing and"
            " sending the request (the status message no longer comes first: the outbox posts it on the side).",
            "",
        ]
    if results.memory:
        lines += [
            "**4: memory.** For each recording a fresh bot process handles that one share, its preview"
            " included (sampled until the preview mp3 is in the thread). The bot's peak"
            " RSS is the kernel's high-water mark (`VmHWM` in `/proc/PID/status`, read before it stops);"
            " its children (its decoder processes, bot.voice.preparers, and any ffmpeg) are polled every 20 ms with"
            " psutil, keeping the largest `VmHWM` seen.",
            "",
        ]
    lines += cost_method(results.cpu, results.mixed)
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
            f" the bench process with both stand-ins {burst.standin_cpu:.1f} s. Answered exactly once in its"
            f" own thread: {burst.answered_once} of {burst.shares}; bot messages outside the threads:"
            f" {burst.stray_messages}; Slack 429s: {burst.slack_429s}. {_previews(burst)}"
        )
    channel = results.channel
    if channel is not None:
        sizes = sorted(channel.answers_per_thread.items())
        per_thread = ", ".join(f"{count} thread(s) with {size} bot message(s)" for size, count in sizes)
        answers = channel.answer_offsets
        first_answer = answers[0] if answers else float("nan")
        last_clone = channel.first_clone + (channel.clone_offsets[-1] if channel.clone_offsets else 0.0)
        lines.append(
            f"- One channel: all {channel.shares} responses with HTTP statuses {channel.statuses}; the first"
            f" VoiceClone request {channel.first_clone:.2f} s after the first send, the last"
            f" {last_clone:.2f} s after it;"
            f" {channel.accepted} accepted, {channel.refusals} refused, at most {_busiest(channel.clone_offsets)}"
            f" in any one second. Answers: {per_thread}; first answer {first_answer:.1f} s,"
            f" median {percentile(answers, 50):.1f} s, last {channel.last_answer:.1f} s after the"
            f" first send; final reactions {channel.outcomes}, all there {channel.reactions_done:.1f} s after it."
            f" chat.postMessage calls received: {channel.post_calls}, of which {channel.slack_429s} refused with"
            f" 429 (the bot's own count of 429s: {channel.bot_ratelimited:.0f})."
            + (
                f" Previews (PREVIEW=on): {channel.preview_files} mp3s in their threads, {channel.tts_accepted}"
                f" TextToSpeech requests accepted; refusals by action: {channel.refusals_by_action or 'none'}."
                if channel.previews
                else " PREVIEW=off."
            )
        )
        cores = os.cpu_count() or 1
        wall = channel.cloning_wall or float("nan")
        lines.append(
            f"- One channel, CPU from the first send until all {channel.shares} VoiceClone requests had arrived"
            f" ({channel.cloning_wall:.1f} s, {cores} cores): bot process {channel.cloning_bot_cpu:.1f} s, its"
            f" ffmpeg runs {channel.cloning_ffmpeg_cpu:.1f} s, the bench process with both stand-ins"
            f" {channel.cloning_bench_cpu:.1f} s, other processes on the machine {channel.cloning_other_cpu:.1f} s"
            f" ({channel.cloning_machine_cpu / (wall * cores) * 100:.0f}% of the machine busy in all)."
        )
    for label, runs in (("Web role", results.web_bursts), ("Workers", results.worker_bursts)):
        for run, burst in enumerate(runs, 1):
            lines.append(_split_details(f"{label} run {run}", burst))
    preview = results.preview
    if preview is not None:
        lines.append(preview_details(preview))
    conversion = results.conversion
    if conversion is not None:
        stages = ", ".join(f"{name} {value:.3f} s" for name, value in conversion.stage_medians().items())
        bot = ", ".join(f"{s:.3f}" for s in conversion.bot_seconds)
        cli = ", ".join(f"{s:.3f}" for s in conversion.cli_seconds)
        lines += [
            f"- Conversion, bot (s): {bot}; ffmpeg command line (s): {cli}.",
            f"- Where the bot's time goes (medians): {stages}. *to download*: send to the download's arrival"
            " at the Slack stand-in's file host (acknowledgement, queue, files.info); *download to request*: on"
            " to the VoiceClone request's arrival (download, ffmpeg, the voice and length checks, the WAV,"
            " base64, JSON, TC3 signing, rate limiter, sending).",
        ]
    if results.memory:
        lines += [
            "",
            "| Recording | Bot idle RSS | Bot peak RSS | Bot peak (polled) | Largest child peak | Answer | Time |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in results.memory:
            peaks = run.peaks
            answer = f":{run.outcome}:" if run.outcome else f"none within {MEMORY_TIMEOUT:g} s"
            answer += {True: " + preview", False: " (no preview in time)", None: ""}[run.previewed]
            took = f"{run.answered_in:.2f} s" if run.answered_in is not None else "-"
            lines.append(
                f"| {run.recording} | {_mb(run.baseline)} | {_mb(peaks.bot_hwm)} | {_mb(peaks.bot_sampled)} |"
                f" {_mb(peaks.children)} ({peaks.children_seen} seen) | {answer} | {took} |"
            )
    lines += cost_details(results.cpu, results.mixed)
    return lines


def _split_details(name: str, burst: BurstResult) -> str:
    """One line of detail on a run of item 9 or 10."""
    per_share = 1000 / max(1, burst.shares)
    busy = burst.ack_cpu / burst.ack_makespan if burst.ack_makespan else 0.0
    jobs = ", ".join(f"{n:.0f}" for n in burst.jobs_per_worker) or "-"
    odd = "; ".join(f"{count}x [{shape}]" for shape, count in burst.odd_threads.items())
    errors = f" Errors in the bot logs: {'; '.join(burst.errors)}." if burst.errors else ""
    return (
        f"- {name} ({burst.topology}): all {burst.shares} responses within {_ms(burst.ack_makespan)} of the first"
        f" send (HTTP statuses {burst.statuses}), ack p50 {_ms(percentile(burst.ack_seconds, 50))}, p99"
        f" {_ms(percentile(burst.ack_seconds, 99))}; the web process used {_ms(burst.ack_cpu)} of CPU meanwhile"
        f" ({busy * 100:.0f}% of one core). Feedback p50 {_ms(percentile(burst.feedback_seconds, 50))}, p99"
        f" {_ms(percentile(burst.feedback_seconds, 99))}. {burst.accepted} VoiceClone requests accepted"
        f" ({burst.clone_rate:.1f}/s), {burst.refusals} refused, at most {burst.busiest_second} in any one second;"
        f" jobs finished per worker: {jobs}; final answers {burst.outcomes}, the last {burst.answered_in:.1f} s"
        f" after the first send. CPU from the burst to the last answer: web process {burst.web_cpu:.1f} s, all bot"
        f" processes {burst.bot_cpu:.1f} s ({burst.bot_cpu * per_share:.0f} ms per share), ffmpeg"
        f" {burst.ffmpeg_cpu:.1f} s, the bench process {burst.standin_cpu:.1f} s. Answered exactly once in its own"
        f" thread: {burst.answered_once} of {burst.shares}"
        + (f" (the others: {odd})" if odd else "")
        + f"; bot messages outside the threads: {burst.stray_messages}; Slack 429s: {burst.slack_429s}."
        + f" {_previews(burst)}{errors}"
    )


def _previews(burst: BurstResult) -> str:
    """What a burst's previews did, in one sentence."""
    if not burst.previews:
        return "PREVIEW=off."
    return (
        f"Previews (PREVIEW=on): {burst.preview_files} mp3s in their threads, {burst.preview_failed} \"couldn't make"
        f" a preview\" messages; {burst.tts_accepted} TextToSpeech requests accepted, at most {burst.tts_busiest} in"
        f" any one second; refusals by action: {burst.refusals_by_action or 'none'}."
    )


def preview_details(run: PreviewResult) -> str:
    """One line of detail on item 8."""
    threads = ", ".join(f"{count} thread(s) with {kind}" for kind, count in sorted(run.threads.items()))
    probes = Counter(run.probes)
    probed = "; ".join(f"{said} ({count}x)" for said, count in probes.most_common(3))
    size = f"{statistics.median(run.sizes) / 1024:.1f} KiB" if run.sizes else "-"

    def spread(values: Sequence[float]) -> str:
        if not values:
            return "-"
        return f"p50 {_ms(percentile(values, 50))}, max {_ms(max(values))}"

    return (
        f"- Preview: final answers {run.outcomes}; {run.answered} answered \"Voice cloned\", {run.previews} previews"
        f" in their threads, {run.preview_failed} \"couldn't make a preview\" messages; threads: {threads}."
        f" TextToSpeech requests: {run.tts_requests} ({run.tts_refused} refused; AudioFormat"
        f" {', '.join(run.audio_formats) or '-'}), text \"{run.preview_text}\"; refusals by the TRTC stand-in in"
        f" all: {run.clone_refusals}. Answer -> TextToSpeech request arrived: {spread(run.tts_seconds)};"
        f" answer -> `files.completeUploadExternal` answered: {spread(run.complete_seconds)}. Previews: median"
        f" {size}; ffprobe: {probed or '-'}; playable {run.playable} of {run.shares}."
    )


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


def _busiest(offsets: Sequence[float]) -> int:
    """The most events in any one-second window."""
    best, low = 0, 0
    for high, t in enumerate(offsets):
        while offsets[low] <= t - 1.0:
            low += 1
        best = max(best, high - low + 1)
    return best


def plot_channel(run: ChannelResult, path: Path) -> None:
    """One channel: accepted clones and answers over time since the first send, with the two paces."""
    plt = _pyplot()
    fig, axes = plt.subplots(figsize=(8, 4.5))
    clones = [run.first_clone + t for t in run.clone_offsets]
    axes.step(clones, range(1, len(clones) + 1), where="post", label=f"clones accepted ({run.clone_rate:.1f}/s)")
    axes.step(
        run.answer_offsets,
        range(1, len(run.answer_offsets) + 1),
        where="post",
        label=f"answers in their threads (last at {run.last_answer:.0f} s)",
    )
    end = max([1.0, *clones, *run.answer_offsets])
    start = clones[0] if clones else 0.0
    axes.plot(
        [start, start + run.shares / CLONE_RATE],
        [0, run.shares],
        linestyle=":",
        color="tab:red",
        label=f"target {CLONE_RATE:g} clones/s",
    )
    per_second, burst = run.post_limit
    axes.plot(
        [0, run.slack_floor],
        [burst, run.shares],
        linestyle="--",
        color="grey",
        label=f"Slack's post limit ({per_second:g}/s, burst {burst})"
        + (": answers, each followed by its preview" if run.previews else ""),
    )
    axes.set(
        xlabel="seconds since the first share was sent",
        ylabel="shares",
        title=f"{run.shares} shares in one channel",
        xlim=(0, end * 1.02),
        ylim=(0, run.shares * 1.05),
    )
    axes.legend(loc="lower right")
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
