"""What the pool should look like: slots per queue, scaling, and config reloads.

Pure bookkeeping with no fork and no signal, so the arbiter stays short. A
reload is diffed per queue: only the queues whose settings changed get a new
*generation*, and their children are replaced one at a time.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Mapping

from supervisor.config import Config, QueueConfig

log = logging.getLogger(__name__)

# [supervisor]-only keys whose change touches every child of every queue (keys
# allowed in a queue section are already in its values, with the fallback).
WORKER_GLOBALS = ("beanstalk_url", "tube_namespace", "namespace_separator", "user", "group",
                  "socket_timeout")


@dataclass(frozen=True, order=True)
class Slot:
    queue: str
    index: int

    def __str__(self) -> str:
        return f"{self.queue} #{self.index}"


def _job_settings(config: Config, queue: QueueConfig) -> Mapping[str, Any]:
    values = {k: v for k, v in queue.values.items() if k != "processes"}
    values.update({k: config[k] for k in WORKER_GLOBALS})
    values["tube"] = queue.tube
    return values


def max_jobs_with_jitter(limit: int) -> int:
    """Up to 10% more, so children started together do not all recycle together."""
    return limit + random.randint(0, max(1, limit // 10)) if limit else 0


class Pool:
    """Desired process counts and config generations, per queue."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.counts = {name: q.processes for name, q in config.queues.items()}
        self.generation = {name: 0 for name in config.queues}

    def wanted(self) -> list[Slot]:
        return [Slot(q, i + 1) for q, n in self.counts.items() for i in range(n)]

    def queue(self, name: str) -> QueueConfig:
        return self.config.queues[name]

    def total(self) -> int:
        return sum(self.counts.values())

    def scale(self, queue: str | None, change: str) -> str:
        """``+N``, ``-N`` or ``N`` children for ``queue``; returns what was done."""
        name = self.scale_target(queue)
        current = self.counts[name]
        try:
            value = int(change)
        except ValueError:
            raise ValueError(f"bad scale {change!r}: expected +N, -N or N") from None
        new = current + value if change.strip()[:1] in "+-" else value
        new = max(0, min(1024, new))
        self.counts[name] = new
        return f"queue {name}: {current} -> {new} processes"

    def scale_target(self, queue: str | None) -> str:
        if queue is None:
            queue = self.config["scale_queue"]
        if queue is None and len(self.counts) == 1:
            queue = next(iter(self.counts))
        if queue is None:
            raise ValueError("several queues and no scale_queue in [supervisor]: "
                             "name one with `bbsupervise ctl scale QUEUE +1`")
        if queue not in self.counts:
            raise ValueError(f"no queue named {queue!r}")
        return queue

    def reload(self, new: Config) -> list[str]:
        """Adopt ``new``; returns one line per queue that changed."""
        changes: list[str] = []
        for name in sorted(set(self.config.queues) | set(new.queues)):
            old_q, new_q = self.config.queues.get(name), new.queues.get(name)
            if new_q is None:
                changes.append(f"queue {name}: removed")
                self.counts.pop(name, None)
                self.generation.pop(name, None)
                continue
            if old_q is None:
                changes.append(f"queue {name}: added with {new_q.processes} processes")
                self.generation[name] = 0
            elif _job_settings(self.config, old_q) != _job_settings(new, new_q):
                self.generation[name] += 1
                changes.append(f"queue {name}: settings changed, replacing its workers")
            if self.counts.get(name) != new_q.processes and old_q is not None:
                changes.append(f"queue {name}: {self.counts.get(name)} -> "
                               f"{new_q.processes} processes")
            self.counts[name] = new_q.processes
        self.config = new
        return changes
