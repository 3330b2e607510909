"""Jobs used by the end-to-end tests. Each leaves a trace in a file the test names."""
from __future__ import annotations

import os
import signal
import time

from workers import job


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text + "\n")


@job(queue="default-q")
def noop() -> None:
    """Does nothing: for throughput and plumbing."""


@job(queue="default-q")
def record(path: str, value: object) -> None:
    """Append ``pid value`` to ``path``: proves the job ran, and where."""
    _append(path, f"{os.getpid()} {value}")


@job(queue="default-q")
def sleep_then_record(path: str, seconds: float) -> None:
    """Mark the start, sleep, mark the end: a job that is busy for a while."""
    _append(path, f"start {os.getpid()}")
    time.sleep(seconds)
    _append(path, f"end {os.getpid()}")


@job(queue="default-q")
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@job(queue="default-q")
def exit_hard(path: str = "") -> None:
    """Kill the worker mid-job."""
    if path:
        _append(path, f"attempt {os.getpid()}")
    os._exit(3)


@job(queue="default-q")
def ignore_term(path: str, seconds: float) -> None:
    """A job that ignores TERM and blocks (a stuck read, say)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _append(path, f"start {os.getpid()}")
    time.sleep(seconds)
    _append(path, f"end {os.getpid()}")


@job(name="NewsletterJob", queue="newsletter-sender")
class NewsletterJob:
    """backburner's class style, under the name a Ruby producer uses."""

    @staticmethod
    def perform(path: str, *args: object) -> None:
        import json

        _append(path, json.dumps(list(args)))


# -- jobs for tests/e2e/test_signals_and_children.py and test_connections.py


@job(queue="default-q")
def block_until(path: str, release_path: str, timeout: float = 60.0) -> None:
    """Busy until ``release_path`` exists, so the test decides when the job ends."""
    _append(path, f"start {os.getpid()}")
    deadline = time.monotonic() + timeout
    while not os.path.exists(release_path) and time.monotonic() < deadline:
        time.sleep(0.01)  # sync-ok: the job polls for the test's go-ahead file
    _append(path, f"end {os.getpid()}")


@job(queue="default-q")
def sleep_in_grandchild(path: str, seconds: float) -> None:
    """Run ``sleep`` in a grandchild process and wait for it: a job with a subprocess."""
    import subprocess

    proc = subprocess.Popen(["sleep", str(seconds)])
    _append(path, f"start {os.getpid()} {proc.pid}")
    proc.wait()
    _append(path, f"end {os.getpid()}")


# -- jobs for tests/e2e/test_jobs.py


@job(queue="default-q")
def fail_and_record(path: str) -> None:
    """Record each attempt as ``pid monotonic-seconds``, then fail: a poison job."""
    _append(path, f"{os.getpid()} {time.monotonic():.3f}")
    raise ValueError("fail_and_record always fails")


@job(queue="default-q")
def abort_hard(path: str) -> None:
    """Record the attempt, then die of SIGABRT (with no core file)."""
    import resource

    _append(path, f"attempt {os.getpid()}")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.abort()


@job(queue="default-q")
def late_failure(path: str, seconds: float) -> None:
    """First run: deaf to SIGALRM (like C code holding the GIL), outlive the TTR, then
    fail, so the release or bury comes too late. Later runs succeed."""
    marker = path + ".first"
    if not os.path.exists(marker):
        _append(marker, f"first {os.getpid()}")
        previous = signal.signal(signal.SIGALRM, signal.SIG_IGN)
        try:
            time.sleep(seconds)  # sync-ok: the job must outlive its TTR
        finally:
            signal.signal(signal.SIGALRM, previous)
        raise RuntimeError("failed after its TTR expired")
    _append(path, f"second {os.getpid()}")


# -- jobs for tests/e2e/test_operations.py


@job(queue="default-q")
def hang_deaf_to_alarm(path: str, release_path: str, after: float = 0.0) -> None:
    """A hung job: after ``after`` s it blocks SIGALRM (so its own TTR-1 deadline
    cannot fire, like C code that never returns), starts ``sleep 60`` in its
    process group, records ``start <pid> <sleep pid>`` and waits for
    ``release_path`` (or 60 s). Only the master can stop it."""
    import subprocess

    if after:
        time.sleep(after)  # sync-ok: lets the worker's TTR probe (at 0.5 s) run first
    # Blocking SIGALRM in this thread alone is not enough: the kernel then
    # delivers it to the worker's other thread and Python still raises the
    # deadline here. Ignoring it is what a stuck C extension amounts to.
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    proc = subprocess.Popen(["sleep", "60"])
    _append(path, f"start {os.getpid()} {proc.pid}")
    deadline = time.monotonic() + 60
    while not os.path.exists(release_path) and time.monotonic() < deadline:
        time.sleep(0.01)  # sync-ok: the job polls for the test's go-ahead file
    proc.kill()
    proc.wait()
    _append(path, f"end {os.getpid()}")


_ballast: list[bytearray] = []


@job(queue="default-q")
def allocate_then_wait(path: str, mib: int, release_path: str) -> None:
    """Grow this worker by ``mib`` MiB (kept after the job: a leak), record
    ``allocated <pid>``, then wait for ``release_path`` and record ``end <pid>``."""
    block = bytearray(mib * 1024 * 1024)
    for offset in range(0, len(block), 4096):  # touch every page so it counts in RSS
        block[offset] = 1
    _ballast.append(block)
    _append(path, f"allocated {os.getpid()}")
    deadline = time.monotonic() + 60
    while not os.path.exists(release_path) and time.monotonic() < deadline:
        time.sleep(0.01)  # sync-ok: the job polls for the test's go-ahead file
    _append(path, f"end {os.getpid()}")


# -- more jobs for tests/e2e/test_jobs.py


@job(queue="default-q")
def slow_poison(path: str, seconds: float) -> None:
    """Record the attempt, take ``seconds``, then fail: enqueued with TTR 1 (no
    deadline can be kept), every failure comes after beanstalkd took the job back."""
    _append(path, f"attempt {os.getpid()}")
    time.sleep(seconds)  # sync-ok: the job must outlive its TTR
    raise RuntimeError("slow_poison always fails, late")


@job(queue="default-q")
def exit_zero(path: str) -> None:
    """Record the attempt, then leave the worker with status 0 mid-job."""
    _append(path, f"attempt {os.getpid()}")
    os._exit(0)


@job(queue="default-q")
def swallow_term(path: str, release_path: str) -> None:
    """Install a SIGTERM handler of its own (a library might), then wait for
    the test's go-ahead: a drain's TERM lands here and is swallowed."""
    signal.signal(signal.SIGTERM, lambda signum, frame: _append(path, "swallowed"))
    _append(path, f"start {os.getpid()}")
    deadline = time.monotonic() + 30
    while not os.path.exists(release_path) and time.monotonic() < deadline:
        time.sleep(0.01)  # sync-ok: the job polls for the test's go-ahead file
    _append(path, f"end {os.getpid()}")
