"""Which children the master must step in for: hung, silent, or too big.

Reads the children's shared state slots and RSS (psutil); does no I/O to
beanstalkd and signals nothing itself: it returns verdicts, the arbiter acts.

* Busy past its deadline: the child's own ``ttr - 1`` alarm failed (signals
  blocked, stuck in C code). Kill its process group ``HUNG_GRACE`` after the
  deadline, inside the last second of the TTR, before beanstalkd could hand
  the job to another worker while this one still runs it.
* Idle or connecting with a stale heartbeat: a live child writes one at
  least every ``RESERVE_TIMEOUT`` s (or on every reconnect attempt).
* RSS over ``max_memory_per_child``: asked to finish its job, then replaced.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import psutil

from supervisor.children import Child
from workers.runner import reserve_timeout
from workers.scoreboard import WorkerState

HUNG_GRACE = 0.25
CHECK_INTERVAL = 1.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Verdict:
    child: Child
    kill: bool   # True: SIGKILL the group now; False: TERM (finish the job, then go)
    reason: str


def silent_after(reply_timeout: float) -> float:
    """A live idle child beats at least every reserve timeout; allow a dead
    connection's full reply timeout plus slack before calling it hung."""
    return reserve_timeout(reply_timeout) + reply_timeout + 5.0


def hung(children: Iterable[Child], now: float, reply_timeout: float) -> list[Verdict]:
    verdicts = []
    silent = silent_after(reply_timeout)
    for child in children:
        if child.killed:
            continue
        snap = child.state.read()
        if snap.state is WorkerState.BUSY and snap.deadline and now > snap.deadline + HUNG_GRACE:
            verdicts.append(Verdict(child, True, f"hung: job id={snap.job_id} ran "
                                    f"{now - snap.job_started:.1f} s, past its TTR-1 deadline"))
        elif snap.state in (WorkerState.IDLE, WorkerState.CONNECTING) \
                and now - snap.heartbeat > silent:
            verdicts.append(Verdict(child, True, f"hung: no heartbeat for "
                                    f"{now - snap.heartbeat:.0f} s while {snap.state.name.lower()}"))
    return verdicts


def next_deadline(children: Iterable[Child]) -> float | None:
    """When the master must next look at a busy child (monotonic), if ever."""
    times = [s.deadline + HUNG_GRACE for s in (c.state.read() for c in children if not c.killed)
             if s.state is WorkerState.BUSY and s.deadline]
    return min(times) if times else None


def oversized(children: Iterable[Child], limit_mib: dict[str, int]) -> list[Verdict]:
    verdicts = []
    for child in children:
        limit = limit_mib.get(child.slot.queue, 0)
        if not limit or child.stopping:
            continue
        try:
            rss = psutil.Process(child.pid).memory_info().rss
        except psutil.Error:
            continue
        if rss > limit * MIB:
            verdicts.append(Verdict(child, False, f"recycling: RSS {rss / MIB:.0f} MiB "
                                    f"exceeds max_memory_per_child {limit} MiB"))
    return verdicts


class Throttle:
    """Rate-limits periodic checks (the RSS poll, ...) to once per ``CHECK_INTERVAL``."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def due(self, now: float | None = None, what: str = "memory") -> bool:
        now = time.monotonic() if now is None else now
        if now - self.last.get(what, 0.0) >= CHECK_INTERVAL:
            self.last[what] = now
            return True
        return False
