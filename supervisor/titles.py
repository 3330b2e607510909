"""Every process title string is built here, so `ps` output stays consistent.

    bbsupervise: master [conf/prod.ini] 3 queues, 6 workers
    bbsupervise: worker newsletter-sender #1 idle
    bbsupervise: worker newsletter-sender #1 busy myapp.jobs.send #42
"""
from __future__ import annotations

from typing import Callable

import setproctitle

PREFIX = "bbsupervise:"


def master(config_path: str, state: str, queues: int, workers: int) -> str:
    extra = "" if state == "running" else f" {state}"
    q = "queue" if queues == 1 else "queues"
    w = "worker" if workers == 1 else "workers"
    return f"{PREFIX} master [{config_path}] {queues} {q}, {workers} {w}{extra}"


def worker_prefix(queue: str, index: int) -> str:
    return f"{PREFIX} worker {queue} #{index}"


def set_title(title: str) -> None:
    setproctitle.setproctitle(title)


def worker_setter(queue: str, index: int) -> Callable[[str], None]:
    """A cheap ``set(state)`` for the child's hot path (about 1 us a call)."""
    prefix = worker_prefix(queue, index) + " "
    setter = setproctitle.setproctitle

    def set_state(state: str) -> None:
        setter(prefix + state)

    return set_state
