"""Signal handling for the master: handlers only record, the loop acts.

A handler appends the signal number and returns; ``set_wakeup_fd`` makes
the C-level handler write a byte to a non-blocking pipe, which is what the
master's ``select`` sleeps on. So the master wakes for every signal
(CHLD included) and never busy-polls, and no logging, reaping or forking
happens inside a handler (rq logged and raised in handlers; gunicorn's
pattern is the model).
"""
from __future__ import annotations

import os
import select
import signal
from types import FrameType
from typing import Sequence

# Every signal an operator might send has a handler: the default action of
# HUP, USR1 and USR2 would kill the master, TTIN/TTOU would stop it.
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
           signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)


class SignalQueue:
    """Records signals and wakes the loop through a self-pipe."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signum)

    def wait(self, timeout: float, extra: Sequence[int] = ()) -> tuple[list[int], list[int]]:
        """Sleep until a signal arrives, an ``extra`` fd is readable, or ``timeout``.

        Returns the signals received and the readable ``extra`` fds.
        """
        ready: list[int] = []
        if not self.pending:
            try:
                ready, _, _ = select.select([self.read_fd, *extra], [], [], max(0.0, timeout))
            except InterruptedError:
                pass
        self._drain_pipe()
        return self.take(), [fd for fd in ready if fd != self.read_fd]

    def take(self) -> list[int]:
        """Signals recorded but not yet returned by ``wait``."""
        taken, self.pending = self.pending, []
        return taken

    def _drain_pipe(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close_in_child(self) -> None:
        """In a new child: stop writing to the master's pipe and forget its fds."""
        signal.set_wakeup_fd(-1)
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        os.close(self.read_fd)
        os.close(self.write_fd)


def block_handled() -> set[int]:
    """Block the handled signals (around fork); returns the old mask."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED + (signal.SIGALRM,))


def restore(mask: set[int]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
