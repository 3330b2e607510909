"""Measures 4-7: memory, restart, drain on SIGTERM, idle cost.

Memory, idle cost and the idle drain share one master with 8 children
(and, alongside it, 8 bare workers as the baseline): they are read once
every worker has run some jobs and sits idle again, as in production.
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
from typing import Callable

import psutil

from bench import bare, jobs
from bench.context import Context, Master, Stamps
from bench.procs import wait_exit, wait_for
from bench.server import fill
from bench.throughput import NOOP_BODY
from workers import wire

MiB = 2**20


def warm(ctx: Context, tube: str, body: bytes, idle: int) -> None:
    """Run ``warm_jobs`` jobs through the workers of ``tube`` and wait until all idle."""
    count = ctx.plan.warm_jobs
    fill(ctx.server.address, tube, body, count)
    wait_for(lambda: ctx.poller.deleted(tube) >= count, 30, f"{count} warm-up jobs on {tube}")
    ctx.poller.wait_waiting(tube, idle)


def memory(ctx: Context, master: Master, children: list[psutil.Process],
           plain: list[psutil.Process]) -> None:
    def mib(proc: psutil.Process) -> tuple[float, float]:
        info = proc.memory_full_info()
        return info.uss / MiB, info.rss / MiB

    ours = [mib(c) for c in children]
    theirs = [mib(p) for p in plain]
    top = mib(psutil.Process(master.pid))
    plain_uss, plain_rss = max(u for u, _ in theirs), max(r for _, r in theirs)
    ctx.results.add("child_uss", max(u for u, _ in ours), plain_uss,
                    each=[round(u, 2) for u, _ in ours])
    ctx.results.add("child_rss", max(r for _, r in ours), plain_rss,
                    each=[round(r, 2) for _, r in ours])
    ctx.results.add("master_uss", top[0], plain_uss)
    ctx.results.add("master_rss", top[1], plain_rss)


def idle_cost(ctx: Context, master: Master, children: list[psutil.Process],
              plain: list[psutil.Process]) -> None:
    def cpu(procs: list[psutil.Process]) -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in procs))

    top = psutil.Process(master.pid)
    before = (cpu([top]), cpu(children), cpu(plain))
    started = time.monotonic()
    time.sleep(ctx.plan.idle_seconds)  # the measure itself: a window with no work
    elapsed = time.monotonic() - started
    after = (cpu([top]), cpu(children), cpu(plain))
    pct = [(a - b) / elapsed * 100 for a, b in zip(after, before)]
    ctx.results.add("idle_cpu_master", pct[0], window_s=round(elapsed, 2))
    ctx.results.add("idle_cpu_children", pct[1], pct[2], window_s=round(elapsed, 2))


def stop_idle(ctx: Context, master: Master, plain: list[subprocess.Popen[bytes]]) -> None:
    ours = master.terminate()
    started = time.monotonic()
    for proc in plain:
        proc.send_signal(signal.SIGTERM)
    for proc in plain:
        wait_exit(proc, 30)
    ctx.results.add("stop_idle", ours, time.monotonic() - started)


def idle_pool(ctx: Context) -> None:
    """Memory, idle CPU and SIGTERM with 8 idle children, against 8 bare workers."""
    count = ctx.plan.children
    for _ in range(ctx.plan.runs):
        master = Master(ctx, ctx.name("bench-idle"), count)
        bare_tube = ctx.name("bare-idle")
        procs = ctx.bare("idle", bare_tube, count)
        try:
            master.wait_ready()
            ctx.poller.wait_waiting(bare_tube, count)
            warm(ctx, master.tube, NOOP_BODY, count)
            warm(ctx, bare_tube, NOOP_BODY, count)
            children = master.wait_ready()
            plain = [psutil.Process(p.pid) for p in procs]
            memory(ctx, master, children, plain)
            idle_cost(ctx, master, children, plain)
            stop_idle(ctx, master, procs)
        finally:
            master.stop()
            ctx.stop_all(procs)


def stop_busy(ctx: Context) -> None:
    """SIGTERM while one of 8 children is in a 1 s job; baseline: the job's time left."""
    for _ in range(ctx.plan.runs):
        stamps = Stamps(ctx.workdir / ctx.name("stamps"))
        master = Master(ctx, ctx.name("bench-busy"), ctx.plan.children)
        producer = ctx.server.client()
        try:
            master.wait_ready()
            producer.use(master.tube)
            producer.put(wire.encode(jobs.stamp_then_sleep.spec.name,
                                     [stamps.path, ctx.plan.busy_seconds]))
            job_end = stamps.read() + ctx.plan.busy_seconds
            left = job_end - time.monotonic()
            ctx.results.add("stop_busy", master.terminate(), left)
        finally:
            producer.close()
            master.stop()
            stamps.close()


def time_replacement(ctx: Context, tube: str, idle: int, kill: Callable[[], None]) -> float:
    """Seconds from ``kill()`` until a new connection exists and ``idle`` wait on ``tube``."""
    connections = ctx.poller.total_connections()

    def replaced() -> bool:
        return (ctx.poller.total_connections() > connections
                and ctx.poller.waiting(tube) == idle)

    started = time.monotonic()
    kill()
    wait_for(replaced, 10, f"a replacement worker waiting on {tube}", 0.0005)
    return time.monotonic() - started


def restart(ctx: Context) -> None:
    """SIGKILL idle children one slot at a time (a slot's first death has no back-off)."""
    count = ctx.plan.restarts
    address = ctx.server.address
    for _ in range(ctx.plan.runs):
        master = Master(ctx, ctx.name("bench-restart"), count)
        bare_tube = ctx.name("bare-restart")
        plain = [ctx.reaper.fork(lambda: bare.serve("idle", *address, bare_tube))]

        def replace_plain() -> None:
            ctx.reaper.kill_forked(plain[0])  # SIGKILL + waitpid, as a supervisor reaps
            plain[0] = ctx.reaper.fork(lambda: bare.serve("idle", *address, bare_tube))

        ours, theirs = [], []
        try:
            master.wait_ready()
            ctx.poller.wait_waiting(bare_tube, 1)
            for slot in range(1, count + 1):
                victim = next(c for c in master.children() if master.slot_of(c) == slot)
                ours.append(time_replacement(ctx, master.tube, count,
                                             lambda: os.kill(victim.pid, signal.SIGKILL)))
                master.wait_ready()
                theirs.append(time_replacement(ctx, bare_tube, 1, replace_plain))
            ctx.results.add("restart", statistics.median(ours) * 1e3,
                            statistics.median(theirs) * 1e3,
                            samples_ms=[round(x * 1e3, 2) for x in ours],
                            baseline_samples_ms=[round(x * 1e3, 2) for x in theirs])
        finally:
            master.stop()
            ctx.reaper.kill_forked(plain[0])
