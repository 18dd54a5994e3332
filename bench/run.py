"""The bench command line: run the scenarios, print the verdicts, write the report and plots."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench.burst import ack_floor
from bench.cost import run_mixed_burst, run_share_cpu
from bench.recordings import MediaCache
from bench.report import Results, checks, plot_ack, plot_channel, plot_clones, write_markdown
from bench.scenarios import (
    SLACK_POST_LIMIT,
    run_burst,
    run_channel,
    run_conversion,
    run_memory,
    run_press,
    run_preview,
)

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("burst", "channel", "conversion", "memory", "press", "preview", "web", "workers", "cpu", "mixed")


def build_parser() -> argparse.ArgumentParser:
    """The options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark the real bot (a separate process) against the Slack and TRTC stand-ins. "
        "A full run with the defaults rewrites docs/benchmarks.md and its plots.",
    )
    parser.add_argument("--shares", type=int, default=200, help="file shares in the burst (default 200)")
    parser.add_argument("--bursts", type=int, default=3, help="burst runs, a fresh bot each (default 3)")
    parser.add_argument(
        "--channel-shares", type=int, default=100, help="file shares dropped into one channel (default 100)"
    )
    parser.add_argument(
        "--max-rps", type=int, default=20, help="the TRTC stand-in's request limit (default 20)"
    )
    parser.add_argument(
        "--reps", type=int, default=7, help="repetitions of the conversion comparison (default 7)"
    )
    parser.add_argument(
        "--presses", type=int, default=20, help="consent button presses timed to the request (default 20)"
    )
    parser.add_argument(
        "--preview-shares",
        type=int,
        default=20,
        help="shares (one channel each) cloned with PREVIEW=on, answer -> preview timed (default 20)",
    )
    parser.add_argument(
        "--web-bursts",
        type=int,
        default=None,
        help="item 9: burst runs against --role web + 1 worker on PostgreSQL (default: --bursts)",
    )
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="item 10: worker process counts to compare, comma-separated (default 1,2)",
    )
    parser.add_argument(
        "--worker-runs", type=int, default=2, help="item 10: burst runs per worker count (default 2)"
    )
    parser.add_argument(
        "--cpu-reps", type=int, default=7, help="item 11: shares of each recording timed for CPU (default 7)"
    )
    parser.add_argument(
        "--mixed",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[40, 10],
        help="item 12: voice memos and long recordings in the mixed burst, with one hour-long MP3 (default 40,10)",
    )
    parser.add_argument(
        "--only", choices=SCENARIOS, action="append", help="run only this scenario (repeatable)"
    )
    parser.add_argument(
        "--docs", type=Path, default=ROOT / "docs", help="where the report goes (default docs/)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "out", help="scratch files and raw results"
    )
    parser.add_argument("--no-report", action="store_true", help="print results only; leave docs/ alone")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; exit status 0 even when a target is missed (the report says which)."""
    args = build_parser().parse_args(argv)
    only = args.only or list(SCENARIOS)
    defaults = build_parser().parse_args([])
    options = (
        "shares", "bursts", "channel_shares", "max_rps", "reps", "presses", "preview_shares", "web_bursts", "workers",
        "worker_runs", "cpu_reps", "mixed",
    )  # fmt: skip
    tuned = any(getattr(args, key) != getattr(defaults, key) for key in options)
    full = set(only) == set(SCENARIOS) and not tuned
    command = " ".join(["scripts/bench", *(sys.argv[1:] if argv is None else argv)])
    results = Results(command=command, started=datetime.now(UTC), load_average=os.getloadavg()[0])
    media = MediaCache(args.out / "media")
    began = time.monotonic()
    busy, own = _cpu_seconds()

    if "burst" in only:
        for run in range(1, args.bursts + 1):
            _say(
                f"burst {run}/{args.bursts}: {args.shares} shares of a 12 s clip at once, one channel each,"
                f" TRTC at {args.max_rps}/s"
            )
            burst = run_burst(args.out / "burst", media.m4a(15), shares=args.shares, max_rps=args.max_rps)
            results.bursts.append(burst)
    if "channel" in only:
        per_second, burst = SLACK_POST_LIMIT
        _say(
            f"one channel: {args.channel_shares} shares of a 12 s clip at once in ONE channel, TRTC at"
            f" {args.max_rps}/s, Slack posts limited to {per_second:g}/s per channel (burst {burst})"
        )
        results.channel = run_channel(
            args.out / "channel", media.m4a(15), shares=args.channel_shares, max_rps=args.max_rps
        )
    if "conversion" in only:
        _say(f"conversion: a 180 s AAC m4a through the bot and through the ffmpeg command line, {args.reps}x")
        results.conversion = run_conversion(args.out / "conversion", media.m4a(180), reps=args.reps)
    if "memory" in only:
        for seconds in (3600, 180):
            _say(f"memory: a {seconds // 60} min MP3 through a fresh bot process")
            results.memory.append(run_memory(args.out / f"memory-{seconds}", media.mp3(seconds)))
    if "press" in only:
        _say(f"press: CONSENT=ask, {args.presses} presses of Clone this voice on a 180 s AAC m4a, press -> request")
        results.press = run_press(args.out / "press", media.m4a(180), presses=args.presses)
    if "preview" in only:
        _say(
            f"preview: PREVIEW=on, {args.preview_shares} shares of a 12 s clip at once, one channel each, TRTC at"
            f" {args.max_rps}/s, clone answer -> preview mp3 in the thread"
        )
        results.preview = run_preview(
            args.out / "preview", media.m4a(15), shares=args.preview_shares, max_rps=args.max_rps
        )
    if "web" in only:
        runs = args.web_bursts if args.web_bursts is not None else args.bursts
        for run in range(1, runs + 1):
            _say(
                f"web role {run}/{runs}: {args.shares} shares at once to a --role web process, 1 --role worker"
                f" process, PostgreSQL + Redis, TRTC at {args.max_rps}/s"
            )
            results.web_bursts.append(
                run_burst(
                    args.out / "web", media.m4a(15), shares=args.shares, max_rps=args.max_rps, workers=1, redis=True
                )
            )
        # What the load generator and uvicorn alone take for the same burst: the least item 9 could measure here.
        _say(f"web role floor: {args.shares} requests at once to uvicorn answering an empty 200, {runs} runs")
        results.web_floor = ack_floor(args.shares, results.web_bursts[0].body_bytes, runs=runs)
    if "workers" in only:
        for workers in args.workers:
            for run in range(1, args.worker_runs + 1):
                _say(
                    f"workers {workers}, run {run}/{args.worker_runs}: {args.shares} shares at once to a --role web"
                    f" process, {workers} --role worker process(es), PostgreSQL + Redis (TRTC_MAX_RPS"
                    f" {args.max_rps} shared), TRTC at {args.max_rps}/s"
                )
                results.worker_bursts.append(
                    run_burst(
                        args.out / f"workers-{workers}",
                        media.m4a(15),
                        shares=args.shares,
                        max_rps=args.max_rps,
                        workers=workers,
                        redis=True,
                    )
                )
    if "cpu" in only:
        _say(
            f"cpu: a 22 s voice memo and a 180 s recording (AAC m4a), {args.cpu_reps} shares each (PREVIEW=on),"
            " CPU of the bot and its children per share against the ffmpeg command line's"
        )
        results.cpu = run_share_cpu(args.out / "cpu", [media.m4a(22), media.m4a(180)], reps=args.cpu_reps)
    if "mixed" in only:
        memos, longs = args.mixed
        _say(
            f"mixed: {memos} voice memos (22 s), {longs} recordings of 180 s and one 60 min MP3 at once, one channel"
            f" each, TRTC at {args.max_rps}/s; the bot's peak memory"
        )
        results.mixed = run_mixed_burst(
            args.out / "mixed", media.m4a(22), media.m4a(180), media.mp3(3600), memos=memos, longs=longs,
            max_rps=args.max_rps,
        )
    results.seconds = time.monotonic() - began
    busy_after, own_after = _cpu_seconds()
    results.other_cpu = max(0.0, (busy_after - busy) - (own_after - own))

    _say("")
    for check in checks(results):
        target = f"  (target {check.target}: {check.verdict.strip('*')})" if check.target else ""
        _say(f"[{check.number}] {check.measure}: {check.measured}{target}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(dataclasses.asdict(results), indent=1, default=str))

    if not args.no_report:
        if not full:
            _say("\nNot the full default run: docs/ left alone (raw numbers in bench/out/results.json).")
            return 0
        write_report(results, args.docs)
        _say(f"\nWrote {args.docs / 'benchmarks.md'} and its plots in {results.seconds:.0f} s.")
    return 0


def write_report(results: Results, docs: Path) -> None:
    """docs/benchmarks.md plus the plots of whatever was measured."""
    docs.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    if results.bursts:
        plot_ack(results.bursts, docs / "ack-latency.png")
        plot_clones(results.bursts, docs / "clones-over-time.png")
        plots = {"Ack and feedback latency": "ack-latency.png", "Clones over time": "clones-over-time.png"}
    if results.channel is not None:
        plot_channel(results.channel, docs / "one-channel.png")
        plots["One channel: clones and answers over time"] = "one-channel.png"
    write_markdown(results, docs / "benchmarks.md", plots)


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by the whole machine, and by this process and its finished descendants."""
    times = psutil.cpu_times()
    machine = times.user + times.nice + times.system + times.irq + times.softirq + times.steal
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    return machine, own


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
