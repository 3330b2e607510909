"""The Python half of ``scripts/demo``: the producer, the progress display, the waits.

    python -m examples.demo_driver port BEANSTALKD_PID
    python -m examples.demo_driver workers CONFIG MASTER_PID PIDFILE
    python -m examples.demo_driver run CONFIG
    python -m examples.demo_driver long CONFIG MASTER_PID

Each command waits with a deadline and exits 1 with a reason when it runs
out. Queue names, tubes and the server address come from the config, as a
producer in an application would take them (``configure(config_file=...)``).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any, Callable, TypeVar

import greenstalk
import psutil

from examples import demo_jobs as jobs
from workers import configure, enqueue
from workers.connection import parse_url
from workers.policy import Settings

T = TypeVar("T")
PROGRESS_INTERVAL = 1.0


class Timeout(Exception):
    pass


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Timeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- port: where did the kernel put beanstalkd? ------------------------------
def listening_port(pid: int) -> int | None:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except AttributeError:  # psutil < 6
        conns = psutil.Process(pid).connections(kind="tcp")
    return next((c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN), None)


def cmd_port(args: argparse.Namespace) -> None:
    print(wait_for(lambda: listening_port(args.pid), 5, f"beanstalkd pid {args.pid} to listen"))


# -- workers: wait until every child is connected and idle --------------------
class MasterGone(Exception):
    pass


def titles(master: int) -> dict[int, str]:
    """pid -> title of each worker; MasterGone if the master has exited."""
    try:
        proc = psutil.Process(master)
        gone = proc.status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped
    except psutil.NoSuchProcess:
        gone = True
    if gone:
        raise MasterGone(f"the bbsupervise master (pid {master}) has exited")
    found = {}
    for child in proc.children():
        try:
            found[child.pid] = child.cmdline()[0]
        except (psutil.NoSuchProcess, IndexError):
            pass
    return found


def cmd_workers(args: argparse.Namespace) -> None:
    settings = configure(config_file=args.config)
    wanted = sum(q["processes"] for q in settings.queues.values())

    def all_idle() -> dict[int, str] | None:
        now = titles(args.master)
        idle = [t for t in now.values() if t.endswith(" idle")]
        return now if len(idle) == wanted else None

    now = wait_for(all_idle, args.timeout, f"{wanted} idle workers")
    with open(args.pidfile, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{pid}\n" for pid in now))
    print(f"  {args.master:>7}  {psutil.Process(args.master).cmdline()[0]}")
    for pid, title in sorted(now.items(), key=lambda item: item[1]):
        print(f"  {pid:>7}  {title}")


# -- run: enqueue a mix of jobs, show progress, then the summary --------------
def enqueue_mix() -> dict[str, int]:
    """About 300 jobs over three queues; returns how many went to each queue."""
    rng = random.Random(7)
    sent = {"emails": 0, "images": 0, "reports": 0}
    for i in range(150):
        if i % 15 == 14:
            jobs.send_to_bounced.enqueue(f"user{i}@bounce.example")
        elif i % 50 == 0:
            jobs.NewsletterJob.enqueue(i // 50, "Spring news")
        else:
            jobs.send_welcome.enqueue(i, f"user{i}@example.com")
        sent["emails"] += 1
    for i in range(100):
        if i % 20 == 19:
            jobs.decode_corrupt.enqueue(i)
        elif i % 5 == 0:
            jobs.resize.enqueue(i, round(rng.uniform(0.1, 0.3), 2))
        else:
            jobs.thumbnail.enqueue(i)
        sent["images"] += 1
    for i in range(40):
        if i % 4 == 0:
            jobs.render_pdf.enqueue(i, round(rng.uniform(0.2, 0.5), 2))
        else:
            jobs.daily_totals.enqueue(f"2026-01-{i % 28 + 1:02d}")
        sent["reports"] += 1
    # A job name nobody registered (a typo, or another app's job): buried
    # with a reason, never imported.
    enqueue("billing.InvoiceJob", 42, queue="reports")
    sent["reports"] += 1
    return sent


def tube_stats(client: greenstalk.Client[bytes], tube: str) -> dict[str, Any]:
    try:
        return dict(client.stats_tube(tube))
    except greenstalk.NotFoundError:  # beanstalkd drops an empty, unwatched tube
        return {}


def counts(client: greenstalk.Client[bytes], settings: Settings,
           queues: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per queue: (completed, buried, still to do) from stats-tube."""
    result = {}
    for queue in queues:
        s = tube_stats(client, settings.tube(queue))
        left = sum(int(s.get(f"current-jobs-{k}", 0)) for k in ("ready", "reserved", "delayed"))
        result[queue] = (int(s.get("cmd-delete", 0)), int(s.get("current-jobs-buried", 0)), left)
    return result


def cmd_run(args: argparse.Namespace) -> None:
    settings = configure(config_file=args.config)
    queues = list(settings.queues)
    started = time.monotonic()
    sent = enqueue_mix()
    print(f"enqueued {sum(sent.values())} jobs in {time.monotonic() - started:.2f} s: "
          + ", ".join(f"{q} {n}" for q, n in sent.items()))
    print("\nprogress (completed + buried / enqueued, per queue)")
    print("  time " + "".join(f"{q:>16}" for q in queues))
    with greenstalk.Client(parse_url(settings.beanstalk_url), encoding=None) as client:
        def finished() -> dict[str, tuple[int, int, int]] | None:
            now = counts(client, settings, queues)
            done = all(d + b >= sent.get(q, 0) and not left for q, (d, b, left) in now.items())
            return now if done else None

        def show(now: dict[str, tuple[int, int, int]]) -> None:
            cells = (f"{d}+{b} / {sent.get(q, 0)}" for q, (d, b, _) in now.items())
            print(f"{time.monotonic() - started:5.1f}s" + "".join(f"{c:>16}" for c in cells),
                  flush=True)

        deadline = started + args.timeout
        while True:
            # One line a second, and one more the moment the last job is done.
            try:
                final = wait_for(finished, PROGRESS_INTERVAL, "")
                break
            except Timeout:
                show(counts(client, settings, queues))
            if time.monotonic() >= deadline:
                raise Timeout(f"jobs still pending after {args.timeout:.0f} s")
        show(final)
    summary(settings, sent, final, time.monotonic() - started)


def summary(settings: Settings, sent: dict[str, int],
            final: dict[str, tuple[int, int, int]], elapsed: float) -> None:
    print(f"\nsummary after {elapsed:.1f} s")
    print(f"  {'queue':<10}{'workers':>8}{'enqueued':>10}{'completed':>11}{'buried':>8}")
    totals = [0, 0, 0, 0]
    for queue, (done, buried, _) in final.items():
        row = [settings.queues[queue]["processes"], sent.get(queue, 0), done, buried]
        totals = [a + b for a, b in zip(totals, row)]
        print(f"  {queue:<10}{row[0]:>8}{row[1]:>10}{row[2]:>11}{row[3]:>8}")
    print(f"  {'total':<10}{totals[0]:>8}{totals[1]:>10}{totals[2]:>11}{totals[3]:>8}")


# -- long: one long job, and wait until a worker is busy with it --------------
def cmd_long(args: argparse.Namespace) -> None:
    configure(config_file=args.config)
    job_id = jobs.annual_report.enqueue(2025, args.seconds)
    marker = f"busy {jobs.annual_report.spec.name} #{job_id}"

    def busy() -> tuple[int, str] | None:
        return next(((p, t) for p, t in titles(args.master).items() if t.endswith(marker)),
                    None)

    pid, title = wait_for(busy, args.timeout, f"a worker to take job {job_id}")
    print(f"  {pid:>7}  {title}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_driver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("port")
    p.add_argument("pid", type=int)
    p.set_defaults(func=cmd_port)
    p = sub.add_parser("workers")
    p.add_argument("config")
    p.add_argument("master", type=int)
    p.add_argument("pidfile")
    p.add_argument("--timeout", type=float, default=15)
    p.set_defaults(func=cmd_workers)
    p = sub.add_parser("run")
    p.add_argument("config")
    p.add_argument("--timeout", type=float, default=20)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("long")
    p.add_argument("config")
    p.add_argument("master", type=int)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=10)
    p.set_defaults(func=cmd_long)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (Timeout, MasterGone, psutil.NoSuchProcess, OSError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
