"""Measures 1-3: drain throughput, enqueue throughput, put-to-start latency.

Each run measures bbsupervise and its baseline back to back (alternating
which goes first), so both see the same machine noise; the ratio is taken
per run.
"""
from __future__ import annotations

import time
from typing import Callable

import greenstalk

import workers
from bench import jobs
from bench.context import Context, Master, Stamps
from bench.procs import wait_for
from bench.server import fill
from workers import wire

NOOP_BODY = wire.encode(jobs.noop.spec.name, [])
PAUSE = 3600          # the tube stays paused through fill and start-up; unpausing starts the clock
DRAIN_POLL = 0.002    # stats-tube every 2 ms: ~0.1 ms of work per poll, same for both sides
ENQUEUE_BLOCK = 500
LATENCY_WARMUP = 10   # first samples of a run are dropped (first-call costs)

# row key, N, log_level (None = the default config), stderr to /dev/null
DRAIN_VARIANTS = (
    ("drain_n1", 1, None, False),
    ("drain_n2", 2, None, False),
    ("drain_n4", 4, None, False),
    ("drain_n2_devnull", 2, None, True),
    ("drain_n2_warning", 2, "warning", False),
)


def race(ctx: Context, tube: str, count: int, alive: Callable[[], bool]) -> float:
    """Unpause ``tube`` and return jobs/s until ``count`` deletes were counted on it."""
    def done() -> bool:
        if not alive():
            raise RuntimeError(f"a worker process died while draining {tube}")
        return ctx.poller.deleted(tube) >= count

    started = time.perf_counter()
    ctx.poller.unpause(tube)
    wait_for(done, max(60.0, count / 200), f"{count} deletes on {tube}", DRAIN_POLL)
    return count / (time.perf_counter() - started)


def drain_bbsupervise(ctx: Context, processes: int, log_level: str | None,
                      log_to_null: bool) -> float:
    queue = ctx.name(f"bench-drain-n{processes}")
    master = None
    try:
        fill(ctx.server.address, wire.tube_name(queue), NOOP_BODY, ctx.plan.jobs, PAUSE)
        master = Master(ctx, queue, processes, log_level, log_to_null)
        master.wait_ready()
        return race(ctx, master.tube, ctx.plan.jobs, lambda: master.proc.poll() is None)
    finally:
        if master is not None:
            master.stop()


def drain_bare(ctx: Context, processes: int) -> float:
    tube = ctx.name("bare-drain")
    fill(ctx.server.address, tube, NOOP_BODY, ctx.plan.jobs, PAUSE)
    procs = ctx.bare("drain", tube, processes)
    try:
        ctx.poller.wait_waiting(tube, processes)
        return race(ctx, tube, ctx.plan.jobs, lambda: all(p.poll() is None for p in procs))
    finally:
        ctx.stop_all(procs)


def drain(ctx: Context) -> None:
    """Each variant against a ceiling measured right next to it, first one then the other."""
    for run in range(ctx.plan.runs):
        for i, (key, n, level, null) in enumerate(DRAIN_VARIANTS):
            if (run + i) % 2:
                ceiling = drain_bare(ctx, n)
                product = drain_bbsupervise(ctx, n, level, null)
            else:
                product = drain_bbsupervise(ctx, n, level, null)
                ceiling = drain_bare(ctx, n)
            ctx.results.add(key, product, ceiling, processes=n)


def enqueue(ctx: Context) -> None:
    """``workers.enqueue`` against ``put`` of the same body, in alternating blocks.

    Alternating blocks of ENQUEUE_BLOCK puts, rather than one long loop per
    side, makes both sides see the same machine noise.
    """
    workers.configure(beanstalk_url=ctx.server.url)
    tube = wire.tube_name(str(jobs.noop.spec.queue))  # where enqueue(noop) puts it
    client = ctx.server.client(use=tube)

    def product(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            workers.enqueue(jobs.noop)
        return time.perf_counter() - started

    def baseline(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            client.put(NOOP_BODY, priority=65536, ttr=120)
        return time.perf_counter() - started

    try:
        product(1)  # connects
        for run in range(ctx.plan.runs):
            spent = {product: 0.0, baseline: 0.0}
            done = 0
            while done < ctx.plan.jobs:
                block = min(ENQUEUE_BLOCK, ctx.plan.jobs - done)
                order = (product, baseline) if (run + done // block) % 2 == 0 \
                    else (baseline, product)
                for side in order:
                    spent[side] += side(block)
                done += block
            ctx.results.add("enqueue", done / spent[product], done / spent[baseline])
    finally:
        client.close()


def put_to_start(ctx: Context, producer: greenstalk.Client[bytes], tube: str, body: bytes,
                 idle: int, stamps: Stamps) -> float:
    """One sample, put only when all ``idle`` workers of ``tube`` wait in reserve."""
    ctx.poller.wait_waiting(tube, idle, timeout=10, interval=0.0002)
    producer.use(tube)
    put_at = time.monotonic()
    producer.put(body)
    return stamps.read() - put_at


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def latency(ctx: Context, idle: int = 2) -> None:
    """Sequential put->start samples, bbsupervise and bare alternating sample by sample."""
    for _ in range(ctx.plan.runs):
        stamps = Stamps(ctx.workdir / ctx.name("stamps"))
        master = Master(ctx, ctx.name("bench-latency"), idle)
        bare_tube = ctx.name("bare-latency")
        procs = ctx.bare("stamp", bare_tube, idle, stamps.path)
        producer = ctx.server.client()
        try:
            master.wait_ready()
            ctx.poller.wait_waiting(bare_tube, idle)
            sides = [(master.tube, wire.encode(jobs.stamp.spec.name, [stamps.path])),
                     (bare_tube, b"bare")]
            got: dict[str, list[float]] = {master.tube: [], bare_tube: []}
            for i in range(LATENCY_WARMUP + ctx.plan.latency_samples):
                for tube, body in (sides if i % 2 else sides[::-1]):
                    sample = put_to_start(ctx, producer, tube, body, idle, stamps)
                    if i >= LATENCY_WARMUP:
                        got[tube].append(sample)
            ours, theirs = got[master.tube], got[bare_tube]
            for pct in (50, 99):
                ctx.results.add(f"latency_p{pct}", percentile(ours, pct) * 1e6,
                                percentile(theirs, pct) * 1e6, samples=len(ours))
        finally:
            producer.close()
            master.stop()
            ctx.stop_all(procs)
            stamps.close()
