"""The status report the control socket serves: master, children, queues.

Read-only: the children's shared state slots, psutil for memory, and the
pool's counts. ``bbsupervise status`` adds beanstalkd's tube counts.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterable

import psutil

from supervisor.children import Child
from supervisor.config import Config
from supervisor.pool import Pool
from workers.scoreboard import WorkerState


def pool_status(config: Config, state: str, started_at: float, failing: list[str],
                pool: Pool, children: Iterable[Child]) -> dict[str, Any]:
    now = time.monotonic()
    return {
        "master": {"pid": os.getpid(), "state": state, "config": config.path,
                   "uptime": now - started_at, "rss": rss(os.getpid()), "failing": failing,
                   "beanstalk_url": config["beanstalk_url"]},
        "queues": {q: {"processes": n, "tube": pool.queue(q).tube}
                   for q, n in pool.counts.items()},
        "children": [child_status(c, now) for c in sorted(children, key=lambda c: c.slot)],
    }


def rss(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def child_status(child: Child, now: float) -> dict[str, Any]:
    snap = child.state.read()
    state = "draining" if child.stopping else snap.state.name.lower()
    busy = snap.state is WorkerState.BUSY
    return {"queue": child.slot.queue, "slot": child.slot.index, "pid": child.pid,
            "state": state, "job_id": snap.job_id or None,
            "busy_seconds": now - snap.job_started if busy else None,
            "jobs_done": snap.jobs_done, "rss": rss(child.pid),
            "uptime": now - child.started_at}
