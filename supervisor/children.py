"""Slots and children: fork a worker, signal it, and what happens in the child.

A :class:`Slot` is a place in the pool, ``(queue, index)``; a :class:`Child`
is the process currently filling it. The fork follows shared/DESIGN.md:
handled signals blocked around ``fork()``; in the child, its own process
group, ``PR_SET_PDEATHSIG`` plus a parent check, default handlers, then its
own, then unblock; the beanstalkd connection is opened only after all that.
"""
from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from supervisor import logconfig, signals, titles
from workers.runner import Runner, WorkerSpec
from workers.scoreboard import CrashTable, StateSlot

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
EXIT_CHILD_ERROR = 70  # os.EX_SOFTWARE: the child's own code failed


@dataclass(frozen=True, order=True)
class Slot:
    queue: str
    index: int

    def __str__(self) -> str:
        return f"{self.queue} #{self.index}"


@dataclass
class Child:
    """A live (not yet reaped) worker process."""

    pid: int
    slot: Slot
    state: StateSlot
    started_at: float = field(default_factory=time.monotonic)
    stopping: bool = False   # sent TERM by the master: its exit is expected
    killed: bool = False     # SIGKILLed by the master

    def send(self, sig: int) -> None:
        """Signal the child; it is never reaped yet, so the pid is still ours."""
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill_group(self) -> None:
        """SIGKILL the child's process group, so the job's own subprocesses die too."""
        self.killed = True
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.send(signal.SIGKILL)


@dataclass(frozen=True)
class ChildHooks:
    post_fork: Callable[[str, int], Any] | None = None
    worker_exit: Callable[[str, int], Any] | None = None


def spawn(spec: WorkerSpec, sigq: signals.SignalQueue, crashes: CrashTable,
          hooks: ChildHooks) -> Child:
    """Fork a worker for ``spec``; returns its :class:`Child` in the master."""
    state = StateSlot()
    mask = signals.block_handled()
    try:
        pid = os.fork()
        if pid == 0:
            _child_main(spec, sigq, crashes, hooks, state, mask)  # never returns
    finally:
        signals.restore(mask)
    try:
        os.setpgid(pid, pid)  # also done in the child; whichever runs first wins
    except (PermissionError, ProcessLookupError):
        pass
    return Child(pid=pid, slot=Slot(spec.queue, spec.index), state=state)


def _child_main(spec: WorkerSpec, sigq: signals.SignalQueue, crashes: CrashTable,
                hooks: ChildHooks, state: StateSlot, mask: set[int]) -> None:
    code = EXIT_CHILD_ERROR
    try:
        master = os.getppid()
        os.setpgid(0, 0)  # a terminal's Ctrl-C reaches only the master
        _set_pdeathsig(signal.SIGTERM)
        if os.getppid() != master:  # the master died before prctl took effect
            os._exit(0)
        sigq.close_in_child()
        random.seed()
        logconfig.set_context(spec.queue)
        set_title = titles.worker_setter(spec.queue, spec.index)
        set_title("starting")
        runner = Runner(spec, state, crashes, set_title)
        runner.install_signals()
        signals.restore(mask - set(signals.HANDLED) - {signal.SIGALRM})
        _call_hook(hooks.post_fork, spec, "post_fork")
        code = runner.run()
        _call_hook(hooks.worker_exit, spec, "worker_exit")
    except BaseException:  # noqa: BLE001 - process boundary: log, then leave
        log.exception("worker crashed")
    finally:
        logging.shutdown()
        os._exit(code)


def _call_hook(hook: Callable[[str, int], Any] | None, spec: WorkerSpec, name: str) -> None:
    if hook is None:
        return
    try:
        hook(spec.queue, spec.index)
    except Exception as exc:  # noqa: BLE001 - user hook
        log.error("%s hook failed: %s: %s", name, type(exc).__name__, exc)


def _set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` when the master dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass
