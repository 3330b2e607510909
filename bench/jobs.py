"""The jobs the bench runs under bbsupervise (the master imports this module).

``stamp`` writes the moment the job function starts to a FIFO the bench
reads. CLOCK_MONOTONIC is one clock for every process on a Linux host, so
that moment compares with the bench's own ``time.monotonic()`` at ``put``.
"""
from __future__ import annotations

import os
import time

from workers import job


@job(queue="bench")
def noop() -> None:
    """Nothing: what is measured is the runner around it."""


@job(queue="bench")
def stamp(fifo: str) -> None:
    _write_stamp(fifo, time.monotonic())


@job(queue="bench")
def stamp_then_sleep(fifo: str, seconds: float) -> None:
    """Busy for ``seconds``, after telling the bench when it started."""
    _write_stamp(fifo, time.monotonic())
    time.sleep(seconds)


def _write_stamp(fifo: str, started: float) -> None:
    # The bench holds the FIFO open for reading, so this open never blocks;
    # a line this short is written atomically (under PIPE_BUF).
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, f"{started!r}\n".encode())
    finally:
        os.close(fd)
