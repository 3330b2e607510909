"""Pure policy: how a child ended, and when its slot may be refilled.

A slot whose child keeps dying is restarted with a growing delay (capped,
with jitter) instead of a tight fork loop (huey and resque-pool restarted
with no back-off). Failures are counted over a time window, so a child
that crashes 2 s after each start counts as much as one that dies at once.
"""
from __future__ import annotations

import os
import random
import signal
from collections import deque
from dataclasses import dataclass, field

FAILURE_WINDOW = 60.0   # seconds over which failures count
BASE_DELAY = 0.1        # delay after the second failure in the window
MAX_DELAY = 30.0
FAILING_AFTER = 5       # failures in the window that mark the slot failing


def describe_status(status: int) -> str:
    """``exited with status 1`` / ``killed by signal SIGKILL``."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            label = signal.Signals(sig).name
        except ValueError:
            label = str(sig)
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"killed by signal {label}{core}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def is_clean(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@dataclass
class RestartPolicy:
    """Failure history of one slot."""

    failures: deque[float] = field(default_factory=deque)

    def record_failure(self, now: float) -> None:
        self.failures.append(now)
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self.failures and now - self.failures[0] > FAILURE_WINDOW:
            self.failures.popleft()

    def delay(self, now: float) -> float:
        """Seconds to wait before the next start: 0 after a single failure."""
        self._forget(now)
        count = len(self.failures)
        if count <= 1:
            return 0.0
        delay = min(MAX_DELAY, BASE_DELAY * 2 ** (count - 2))
        return random.uniform(delay * 0.8, delay)

    def failing(self, now: float) -> bool:
        self._forget(now)
        return len(self.failures) >= FAILING_AFTER
