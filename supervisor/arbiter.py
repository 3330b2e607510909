"""The master loop: sleep until a signal, reap, refill slots, enforce deadlines.

Single-threaded; holds no beanstalkd socket, ever (rule 1). It sleeps in
``select`` on the signal pipe (SIGCHLD included) with a timeout that is the
next thing it must do, so it neither blocks nor busy-polls (rule 3).
"""
from __future__ import annotations

import enum
import logging
import os
import signal
import time
from typing import Callable

from supervisor import backoff, signals, titles
from supervisor.children import Child, ChildHooks, Slot, spawn
from supervisor.config import Config, resolve_hook
from workers.connection import parse_url
from workers.runner import WorkerSpec
from workers.scoreboard import CrashTable, WorkerState

log = logging.getLogger(__name__)

TICK = 1.0  # longest sleep: heartbeat and deadline checks need no finer grain


class State(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"
    EXITED = "exited"


class ExitCode(enum.IntEnum):
    OK = 0
    ABNORMAL = 1
    USAGE = 2   # usage or config error (documented in the README)


class Arbiter:
    """Owns the pool: which slots exist, which child fills each, and why."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = State.RUNNING
        self.children: dict[int, Child] = {}
        self.policies: dict[Slot, backoff.RestartPolicy] = {}
        self.not_before: dict[Slot, float] = {}
        self.drain_deadline = 0.0
        self.exit_code = ExitCode.OK
        self.crashes = CrashTable()
        self.address = parse_url(config["beanstalk_url"])
        self.hooks = ChildHooks(
            post_fork=resolve_hook(config, config["post_fork"], "[supervisor] post_fork"),
            worker_exit=resolve_hook(config, config["worker_exit"], "[supervisor] worker_exit"))
        self.on_reconnect = resolve_hook(config, config["on_reconnect"],
                                         "[supervisor] on_reconnect")
        self.sigq: signals.SignalQueue | None = None
        self.dispatch: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self.stop_graceful, signal.SIGINT: self.stop_graceful,
            signal.SIGQUIT: self.stop_now, signal.SIGCHLD: lambda: None,
            signal.SIGHUP: self.ignored("SIGHUP (reload is not available yet)"),
            signal.SIGUSR1: self.ignored("SIGUSR1"), signal.SIGUSR2: self.ignored("SIGUSR2"),
            signal.SIGTTIN: self.ignored("SIGTTIN"), signal.SIGTTOU: self.ignored("SIGTTOU"),
        }

    # -- the loop ----------------------------------------------------------
    def run(self) -> int:
        self.sigq = signals.SignalQueue()
        log.info("master started: %d queues, %d workers, beanstalkd at %s:%d, config %s",
                 len(self.config.queues), self.config.total_processes, *self.address,
                 self.config.path)
        self.update_title()
        while self.state is not State.EXITED:
            self.reap_children()
            self.reconcile()
            self.enforce_deadlines()
            if self.state is State.EXITED:
                break
            for signum in self.sigq.wait(self.sleep_time()):
                self.dispatch[signum]()
        log.info("master exiting with code %d", self.exit_code)
        return int(self.exit_code)

    def sleep_time(self) -> float:
        now = time.monotonic()
        wake = [now + TICK] + list(self.not_before.values())
        if self.state is State.DRAINING:
            wake.append(self.drain_deadline)
        return max(0.0, min(wake) - now)

    # -- signals -----------------------------------------------------------
    def stop_graceful(self) -> None:
        if self.state is not State.RUNNING:
            log.info("second stop signal: stopping now")
            return self.stop_now()
        timeout = float(self.config["graceful_timeout"])
        log.info("graceful stop: draining %d workers (graceful_timeout %.0f s)",
                 len(self.children), timeout)
        self.state = State.DRAINING
        self.drain_deadline = time.monotonic() + timeout
        for child in self.children.values():
            child.stopping = True
            child.send(signal.SIGTERM)
        self.update_title()

    def stop_now(self) -> None:
        log.info("stopping now: killing %d workers", len(self.children))
        self.state = State.STOPPING
        for child in self.children.values():
            child.stopping = True
            child.kill_group()
        self.update_title()

    def ignored(self, what: str) -> Callable[[], None]:
        return lambda: log.info("%s received; ignored", what)

    # -- children ----------------------------------------------------------
    def reap_children(self) -> None:
        """``waitpid(-1, WNOHANG)`` until nothing is left to reap."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self.child_exited(child, status)

    def child_exited(self, child: Child, status: int) -> None:
        snap = child.state.read()
        busy = snap.state is WorkerState.BUSY and snap.job_id
        held = f" while busy with job id={snap.job_id}" if busy else ""
        how = backoff.describe_status(status)
        child.state.close()
        if child.stopping and (backoff.is_clean(status) or child.killed):
            log.info("worker %s pid=%d %s", child.slot, child.pid, how)
        elif backoff.is_clean(status):
            log.info("worker %s pid=%d %s; replacing it", child.slot, child.pid, how)
        else:
            log.error("worker %s pid=%d %s%s; replacing it", child.slot, child.pid, how, held)
            self.record_failure(child.slot)
        if busy and not backoff.is_clean(status):
            self.crashes.add(snap.job_id)

    def record_failure(self, slot: Slot) -> None:
        now = time.monotonic()
        policy = self.policies.setdefault(slot, backoff.RestartPolicy())
        policy.record_failure(now)
        delay = policy.delay(now)
        if delay > 0:
            self.not_before[slot] = now + delay
            log.warning("worker %s keeps dying: restarting in %.1f s", slot, delay)
        if policy.failing(now):
            log.error("queue %s is failing: worker %s died %d times in %.0f s",
                      slot.queue, slot, len(policy.failures), backoff.FAILURE_WINDOW)

    def wanted_slots(self) -> list[Slot]:
        return [Slot(q.name, i + 1) for q in self.config.queues.values()
                for i in range(q.processes)]

    def reconcile(self) -> None:
        """Start a child in every empty slot whose back-off has expired."""
        if self.state is not State.RUNNING:
            if not self.children:
                self.state = State.EXITED
            return
        filled = {c.slot for c in self.children.values()}
        now = time.monotonic()
        for slot in self.wanted_slots():
            if slot in filled or self.not_before.get(slot, 0.0) > now:
                continue
            self.not_before.pop(slot, None)
            self.spawn_child(slot)

    def spawn_child(self, slot: Slot) -> None:
        queue = self.config.queues[slot.queue]
        spec = WorkerSpec(queue=slot.queue, tube=queue.tube, index=slot.index,
                          address=self.address, on_reconnect=self.on_reconnect)
        assert self.sigq is not None
        child = spawn(spec, self.sigq, self.crashes, self.hooks)
        self.children[child.pid] = child
        log.info("spawned worker %s pid=%d", slot, child.pid)

    def enforce_deadlines(self) -> None:
        if self.state is State.DRAINING and time.monotonic() >= self.drain_deadline:
            log.warning("graceful_timeout expired: killing %d workers still busy",
                        len(self.children))
            self.stop_now()

    def update_title(self) -> None:
        titles.set_title(titles.master(self.config.path, self.state.value,
                                       len(self.config.queues), self.config.total_processes))
