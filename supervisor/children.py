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
from typing import Any, Callable, Sequence

from supervisor import logconfig, signals, titles
from supervisor.pool import Slot
from workers.runner import EXIT_RECYCLE, Runner, WorkerSpec
from workers.scoreboard import CrashTable, StateSlot

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
EXIT_CHILD_ERROR = 70  # os.EX_SOFTWARE: the child's own code failed
__all__ = ["Child", "ChildSetup", "EXIT_CHILD_ERROR", "EXIT_RECYCLE", "spawn"]


@dataclass
class Child:
    """A live (not yet reaped) worker process."""

    pid: int
    slot: Slot
    state: StateSlot
    generation: int = 0
    started_at: float = field(default_factory=time.monotonic)
    stop_reason: str = ""    # why the master asked it to stop; "" = it was not
    killed: str = ""         # why the master SIGKILLed it; "" = it did not
    stop_sent: float = 0.0   # when the last TERM was sent (monotonic)

    @property
    def stopping(self) -> bool:
        return bool(self.stop_reason or self.killed)

    def stop(self, reason: str) -> None:
        """Ask the child to finish its job and exit (SIGTERM), once."""
        if not self.stopping:
            self.stop_reason = reason
            self.stop_sent = time.monotonic()
            self.send(signal.SIGTERM)

    def send(self, sig: int) -> None:
        """Signal the child; it is never reaped yet, so the pid is still ours."""
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill_group(self, reason: str) -> None:
        """SIGKILL the child's process group, so the job's own subprocesses die too."""
        self.killed = reason
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.send(signal.SIGKILL)


@dataclass(frozen=True)
class ChildSetup:
    """What every child of this config needs besides its slot."""

    address: tuple[str, int]
    user: str | None = None
    group: str | None = None
    post_fork: Callable[[str, int], Any] | None = None
    worker_exit: Callable[[str, int], Any] | None = None
    on_reconnect: Callable[[str, int], Any] | None = None


def spawn(spec: WorkerSpec, sigq: signals.SignalQueue, crashes: CrashTable,
          hooks: ChildSetup, generation: int = 0, close_fds: Sequence[int] = ()) -> Child:
    """Fork a worker for ``spec``; returns its :class:`Child` in the master.

    ``close_fds`` are the master's own sockets (control socket), closed in
    the child so that no worker holds them.
    """
    state = StateSlot()
    mask = signals.block_handled()
    try:
        pid = os.fork()
        if pid == 0:
            for fd in close_fds:
                os.close(fd)
            _child_main(spec, sigq, crashes, hooks, state, mask)  # never returns
    finally:
        signals.restore(mask)
    try:
        os.setpgid(pid, pid)  # also done in the child; whichever runs first wins
    except (PermissionError, ProcessLookupError):
        pass
    return Child(pid=pid, slot=Slot(spec.queue, spec.index), state=state,
                 generation=generation)


def _child_main(spec: WorkerSpec, sigq: signals.SignalQueue, crashes: CrashTable,
                hooks: ChildSetup, state: StateSlot, mask: set[int]) -> None:
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
        drop_privileges(hooks.user, hooks.group)
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


def drop_privileges(user: str | None, group: str | None) -> None:
    """Become ``user``/``group`` (after the fork, before connecting or running jobs)."""
    import grp
    import pwd

    if group:
        os.setgid(grp.getgrnam(group).gr_gid)
    if user:
        entry = pwd.getpwnam(user)
        if not group:
            os.setgid(entry.pw_gid)
        os.initgroups(user, os.getgid())
        os.setuid(entry.pw_uid)
    elif group:
        os.setgroups([])


def _set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` when the master dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass
