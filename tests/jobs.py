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
