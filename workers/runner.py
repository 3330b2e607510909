"""The child's loop: reserve -> decode -> hooks -> run with deadline -> delete | release | bury.

One job in hand at a time, on one connection owned by this process
(rule 1). A job is deleted only after it succeeded (rule 2); every other
outcome goes through :mod:`workers.outcomes`, which releases with back-off
or buries, keeping the job's own priority.
"""
from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module behind signal
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable

import greenstalk

from supervisor import logconfig
from workers import connection, outcomes, policy, registry, wire
from workers.errors import JobTimeout
from workers.perform import Performer, ProbeThread
from workers.scoreboard import CrashTable, StateSlot, WorkerState

log = logging.getLogger(__name__)

# Server-side reserve timeout, at most: the longest an idle child goes
# without writing its heartbeat or noticing that its master is gone.
RESERVE_TIMEOUT = 5


def reserve_timeout(reply_timeout: float) -> int:
    """Half the socket timeout, so a live server always answers before it expires."""
    return max(1, min(RESERVE_TIMEOUT, int(reply_timeout / 2)))


# Exit status of a child that stops after max_jobs_per_child: the master logs
# it as a recycle, not a crash (os.EX_TEMPFAIL).
EXIT_RECYCLE = 75


class _StopIdle(BaseException):
    """Raised by the TERM handler when the child holds no job: leave now."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a child needs to know about its place in the pool."""

    queue: str
    tube: str
    index: int
    address: tuple[str, int]
    max_jobs: int = 0  # 0 = never recycle
    reply_timeout: float = connection.REPLY_TIMEOUT
    on_reconnect: Callable[[str, int], Any] | None = None


class Runner:
    """The worker loop of one child process."""

    def __init__(self, spec: WorkerSpec, slot: StateSlot, crashes: CrashTable,
                 set_title: Callable[[str], None]) -> None:
        self.spec, self.slot, self.crashes = spec, slot, crashes
        self.set_title = set_title
        self.client: greenstalk.Client[bytes] | None = None
        self.stopping = False
        self.interruptible = False  # True only while waiting with no job in hand
        self.backoff = connection.Backoff()
        self.performer = Performer(self)
        self.slot_lock = threading.Lock()  # the probe thread also writes the slot
        self.outcomes = outcomes.Outcomes(self)
        self._resolved: dict[str, policy.Resolved] = {}
        self._idle_title = "idle"
        self.master_pid = os.getppid()  # called in the child, after the fork
        self.reserve_timeout = reserve_timeout(spec.reply_timeout)
        self.connections = 0
        self.reopen_logs = False  # set by SIGUSR1, acted on in the loop
        self.pending_reserve = False  # a reserve went out with the last delete
        self.handlers: dict[int, Any] = {}

    # -- signals -----------------------------------------------------------
    def install_signals(self) -> None:
        """Child handlers; TERM while idle leaves at once, while busy after the job."""
        self.handlers = {signal.SIGTERM: self._on_term, signal.SIGINT: self._on_term,
                         signal.SIGQUIT: self._on_quit, signal.SIGALRM: self.performer.on_alarm,
                         signal.SIGUSR1: self._on_usr1}
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)
        for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)

    def restore_signals(self) -> None:
        """Put back handlers a job replaced: a job's own SIGTERM handler would
        otherwise keep this worker taking jobs through a drain."""
        for sig, handler in self.handlers.items():
            # _signal.getsignal: signal.getsignal's enum conversion costs ~3 us
            if _signal.getsignal(sig) is not handler:
                log.warning("a job replaced the %s handler; restoring it",
                            signal.Signals(sig).name)
                signal.signal(sig, handler)

    @staticmethod
    def _on_quit(signum: int, frame: FrameType | None) -> None:
        os._exit(0)

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        self.reopen_logs = True  # acted on in the loop, never inside a log write

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.interruptible:
            # No job in hand: closing the socket returns anything beanstalkd
            # was about to hand us to the ready queue, so nothing is lost.
            raise _StopIdle()

    # -- main loop ---------------------------------------------------------
    def run(self) -> int:
        """Serve jobs until told to stop or recycled; returns the exit code."""
        code = 0
        probe = ProbeThread(self.performer)
        probe.start()
        try:
            while not self.stopping or self.pending_reserve:
                job = self.reserve()
                if self.reopen_logs:
                    self.reopen_logs = False
                    logconfig.reopen()
                if job is not None:
                    self.handle(job)
                    if self.spec.max_jobs and self.slot.jobs_done >= self.spec.max_jobs:
                        log.info("recycling after %d jobs", self.slot.jobs_done)
                        code = EXIT_RECYCLE
                        break
        except _StopIdle:
            pass
        finally:
            self.interruptible = False
            probe.stopped.set()
            self.slot.set(WorkerState.DRAINING)
            connection.close_quietly(self.client)
        return code

    def reserve(self) -> greenstalk.Job[bytes] | None:
        """One reserve with the server-side timeout; None when nothing came."""
        if self.client is None:
            self.connect()
        assert self.client is not None
        self.interruptible = True
        try:
            if self.pending_reserve:  # sent with the last delete
                self.pending_reserve = False
                if self.stopping and not connection.reply_waiting(self.client):
                    return None
                # A job that came with it is in hand: run it even when
                # stopping. Left unrun, its reservation would still count
                # as one of its attempts.
                return connection.read_reserved(self.client)
            if self.stopping:
                return None
            return self.client.reserve(self.reserve_timeout)
        except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
            self.check_parent()
            self.slot.idle(time.monotonic())
            return None
        except Exception as exc:
            if not connection.is_connection_error(exc):
                raise
            self.lost(exc)
            return None
        finally:
            self.interruptible = False

    def check_parent(self) -> None:
        """PR_SET_PDEATHSIG covers a dead master; this covers a re-parented child."""
        if os.getppid() != self.master_pid:
            log.warning("master %d is gone; stopping", self.master_pid)
            self.stopping = True

    # -- connection --------------------------------------------------------
    def connect(self) -> None:
        """Connect, watching exactly our tube; retry with back-off until it works."""
        self.set_title("connecting")
        reported = False
        while self.client is None:
            self.slot.set(WorkerState.CONNECTING)  # also the heartbeat while we retry
            self.interruptible = True
            try:
                self.client = connection.open_client(self.spec.address, watch=[self.spec.tube],
                                                     reply_timeout=self.spec.reply_timeout)
            except Exception as exc:
                if not connection.is_connection_error(exc):
                    raise
                if not reported:
                    log.warning("cannot connect to beanstalkd at %s:%d: %s; retrying",
                                *self.spec.address, exc)
                    reported = True
                time.sleep(self.backoff.next_delay())
            finally:
                self.interruptible = False
            if self.stopping and self.client is None:
                raise _StopIdle()
        self.backoff.reset()
        log.info("connected to %s:%d, watching %s", *self.spec.address, self.spec.tube)
        if self.connections and self.spec.on_reconnect is not None:
            self._call_reconnect_hook()  # every connection but the first is a reconnect
        self.connections += 1
        self.slot.idle(time.monotonic())
        self.set_title(self._idle_title)

    def _call_reconnect_hook(self) -> None:
        try:
            self.spec.on_reconnect(self.spec.queue, self.spec.index)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - user hook must not kill the worker
            log.error("on_reconnect hook failed: %s: %s", type(exc).__name__, exc)

    def lost(self, exc: BaseException) -> None:
        """Throw the client away; the next reserve reconnects."""
        log.warning("connection to beanstalkd lost: %s: %s", type(exc).__name__, exc)
        connection.close_quietly(self.client)
        self.client = None
        self.pending_reserve = False

    # -- one job -----------------------------------------------------------
    def handle(self, job: greenstalk.Job[bytes]) -> None:
        started = time.monotonic()
        try:
            name, args = wire.decode(job.body)
        except wire.PayloadError as exc:
            self.outcomes.bury_bad(job, str(exc))
            return self.finish(started)
        spec = registry.get(name)
        if spec is None:
            self.outcomes.bury_bad(job, f"no job registered as {name[:100]!r}")
            return self.finish(started)
        settings = self.resolved(spec)
        # Provisional deadline from the job's settings, so the master can
        # step in even if this job blocks SIGALRM before the TTR probe runs;
        # the probe replaces it with the job's real TTR.
        self.slot.busy(job.id, started, started + settings.ttr - 1 if settings.ttr > 1 else 0.0)
        held_before = self.crashes.claim(job.id)
        if (held_before or job.id in self.crashes) \
                and self.outcomes.exhausted_by_crashes(job, name, settings):
            self.crashes.unclaim(job.id)
            return self.finish(started)
        self.set_title(f"busy {name} #{job.id}")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job %s id=%d started", name, job.id)
        failure = self.performer.perform(job, spec, args, started)
        self.restore_signals()
        if failure is None:
            # Succeeded: even if the delete was lost (it runs again, at least
            # once), this was no failed attempt.
            self.outcomes.succeeded(job, name, started)
            self.crashes.unclaim(job.id)
        elif self.outcomes.failed(job, spec, args, settings, failure, started):
            self.crashes.unclaim(job.id)
        # else: a failure whose reservation was lost stays marked, so the
        # next holder counts it
        self.finish(started)

    def wants_next_job(self) -> bool:
        """After this job, will the loop reserve again? (not draining, not recycling)"""
        return not self.stopping and not (
            self.spec.max_jobs and self.slot.jobs_done + 1 >= self.spec.max_jobs)

    def finish(self, started: float) -> None:
        self.slot.jobs_done += 1
        with self.slot_lock:
            self.slot.idle(time.monotonic())
        self.set_title(self._idle_title)

    def resolved(self, spec: registry.JobSpec) -> policy.Resolved:
        found = self._resolved.get(spec.name)
        if found is None:
            found = self._resolved[spec.name] = policy.resolve(spec, queue=self.spec.queue)
        return found


__all__ = ["Runner", "WorkerSpec", "JobTimeout", "RESERVE_TIMEOUT", "reserve_timeout"]
