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
import logging
from collections import deque
from dataclasses import dataclass, field

from supervisor.pool import Slot

log = logging.getLogger(__name__)

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


class CrashBrake:
    """Per-slot restart delays and per-queue "failing" marks (the crash-loop brake).

    Deliberate kills (hung, memory, stop) never reach it: only crashes count.
    """

    def __init__(self) -> None:
        self.policies: dict[Slot, RestartPolicy] = {}
        self.not_before: dict[Slot, float] = {}
        self.failing: set[str] = set()

    def record(self, slot: Slot, now: float) -> bool:
        """Count a crash of ``slot``; True when its queue has just become failing."""
        policy = self.policies.setdefault(slot, RestartPolicy())
        policy.record_failure(now)
        delay = policy.delay(now)
        if delay > 0:
            self.not_before[slot] = now + delay
            log.warning("worker %s keeps dying: restarting in %.1f s", slot, delay)
        if not policy.failing(now) or slot.queue in self.failing:
            return False
        self.failing.add(slot.queue)
        log.error("queue %s is failing: worker %s died %d times in %.0f s; restarts back "
                  "off up to %.0f s", slot.queue, slot, len(policy.failures),
                  FAILURE_WINDOW, MAX_DELAY)
        return True

    def may_start(self, slot: Slot, now: float) -> bool:
        if self.not_before.get(slot, 0.0) > now:
            return False
        self.not_before.pop(slot, None)
        return True

    def recovered(self, now: float) -> list[str]:
        """Queues no longer failing (no slot over the limit in the window)."""
        done = [q for q in self.failing if not any(
            p.failing(now) for s, p in self.policies.items() if s.queue == q)]
        for queue in done:
            self.failing.discard(queue)
            log.info("queue %s recovered", queue)
        return done
