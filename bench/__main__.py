"""``python -m bench``: run the measures, print one table, optionally write JSON.

    scripts/bench                      # full run: 3 runs, 20,000 jobs (a few minutes)
    scripts/bench --quick              # everything small, under 30 s
    scripts/bench --json bench.json    # also write every figure
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Callable

from bench import lifecycle, report, throughput
from bench.context import Context, Plan
from bench.procs import Reaper

GROUPS: dict[str, Callable[[Context], None]] = {
    "drain": throughput.drain,
    "enqueue": throughput.enqueue,
    "latency": throughput.latency,
    "idle": lifecycle.idle_pool,      # memory, idle CPU, SIGTERM with idle children
    "busy": lifecycle.stop_busy,
    "restart": lifecycle.restart,
}
QUICK = Plan(runs=1, jobs=2_000, latency_samples=50, restarts=3, idle_seconds=1.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Measure bbsupervise against the bare greenstalk client on a private "
                    "beanstalkd (127.0.0.1, kernel-chosen port). Prints one table.")
    parser.add_argument("--quick", action="store_true",
                        help="everything small (1 run, 2,000 jobs, 1 s idle, 3 restarts): "
                             "under 30 s, for the test suite")
    parser.add_argument("--runs", type=int, metavar="N",
                        help=f"repetitions of each measure (default {Plan.runs})")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help=f"jobs per drain and enqueue run (default {Plan.jobs:,})")
    parser.add_argument("--only", metavar="LIST",
                        help=f"comma-separated subset of: {', '.join(GROUPS)}")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write every figure here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (configs and logs) and print its path")
    return parser


def plan_from(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else Plan()
    if args.runs is not None:
        plan = replace(plan, runs=args.runs)
    if args.jobs is not None:
        plan = replace(plan, jobs=args.jobs)
    return plan


def groups_from(parser: argparse.ArgumentParser, only: str | None) -> list[str]:
    if not only:
        return list(GROUPS)
    chosen = [g.strip() for g in only.split(",") if g.strip()]
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)} (choose from {', '.join(GROUPS)})")
    return chosen


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP take the same way out as Ctrl-C, so every process is stopped.
    raise KeyboardInterrupt


def run(plan: Plan, groups: list[str], workdir: Path, reaper: Reaper) -> Context:
    ctx = Context(plan, workdir, reaper)
    for name in groups:
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        GROUPS[name](ctx)
        print(f"bench: {name} done in {time.monotonic() - started:.1f} s",
              file=sys.stderr, flush=True)
    return ctx


def meta(plan: Plan, ctx: Context, groups: list[str], seconds: float) -> dict[str, object]:
    # "processes": [pid, create time] of everything started, so a test can
    # check that none outlived the bench.
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "plan": asdict(plan), "groups": groups, "seconds": round(seconds, 1),
            "cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "beanstalkd": ctx.server.version,
            "greenstalk": _version("greenstalk"), "bbsupervise": _version("bbsupervise"),
            "processes": sorted(ctx.reaper.started.items())}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    plan = plan_from(args)
    if plan.runs < 1 or plan.jobs < 1:
        parser.error("--runs and --jobs must be at least 1")
    groups = groups_from(parser, args.only)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="bbsupervise-bench."))
    reaper = Reaper()
    started = time.monotonic()
    try:
        ctx = run(plan, groups, workdir, reaper)
        rows = ctx.results.rows()
        print(report.table(rows))
        if args.json:
            report.write_json(args.json, rows, meta(plan, ctx, groups,
                                                    time.monotonic() - started))
        return 0
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        reaper.close()
        if args.keep:
            print(f"bench: work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
