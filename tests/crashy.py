"""``post_fork`` hooks that make chosen queues' workers crash (tests/e2e/test_operations.py).

The hook is set in ``[supervisor]`` and so runs in every child; only queues
whose name starts with a given prefix crash, the others are left alone.
"""
from __future__ import annotations

import os
import threading


def crash_at_start(queue: str, index: int) -> None:
    """Queues named ``crashy*``: the worker dies (status 1) right after the fork."""
    if queue.startswith("crashy"):
        os._exit(1)


def crash_after_2s(queue: str, index: int) -> None:
    """Queues named ``late*``: the worker runs normally, then dies (status 1) 2 s after it started."""
    if queue.startswith("late"):
        timer = threading.Timer(2.0, os._exit, args=(1,))
        timer.daemon = True
        timer.start()
