"""Run one job under its deadline, with its hooks.

The deadline is ``ttr - 1`` s from the reservation, so the worker gives up
before beanstalkd hands the job to someone else. It is enforced with
``ITIMER_REAL`` in this (main) thread. greenstalk's ``Job`` carries no TTR,
so the real TTR is looked up lazily: a job still running after
``TTR_PROBE_DELAY`` asks ``stats-job`` once, and a short job never pays for
that round trip. With TTR 0 or 1 (beanstalkd stores 0 as 1) no deadline can
be kept: the job runs to its end, and beanstalkd may hand it to another
worker after 1 s (its late delete is then logged as "reservation lost").
"""
from __future__ import annotations

import functools
import logging
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable

import greenstalk

from workers import connection, hooks
from workers.errors import JobTimeout
from workers.registry import JobSpec

if TYPE_CHECKING:
    from workers.runner import Runner

log = logging.getLogger(__name__)

TTR_PROBE_DELAY = 0.5
PROBE_THREAD_INTERVAL = 0.25


@dataclass(frozen=True)
class Failure:
    """Why a job did not succeed: an exception, or a veto (``exc`` None)."""

    exc: BaseException | None
    reason: str


def describe(exc: BaseException) -> str:
    """One line: ``Type: message (file.py:12 in func)``."""
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        last = frames[-1]
        text += f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"
    return " ".join(text.split())


class Performer:
    """Calls a job's hooks and body with the deadline armed."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.armed = False
        self.job: greenstalk.Job[bytes] | None = None
        self.started = 0.0
        self.ttr: int | None = None

    def perform(self, job: greenstalk.Job[bytes], spec: JobSpec, args: list[Any],
                started: float) -> Failure | None:
        """None on success, else the :class:`Failure`."""
        try:
            return self._perform(job, spec, args, started)
        except JobTimeout as exc:  # the alarm landed as the job ended
            return Failure(exc, str(exc))

    def _perform(self, job: greenstalk.Job[bytes], spec: JobSpec, args: list[Any],
                 started: float) -> Failure | None:
        self.job, self.started, self.ttr = job, started, None
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, TTR_PROBE_DELAY)
        try:
            if spec.hooks or hooks.any_global():
                if not self._with_hooks(spec, args):
                    return Failure(None, "vetoed by a before_perform hook")
            else:
                spec.perform(*args)
        except JobTimeout as exc:
            return Failure(exc, str(exc))
        except BaseException as exc:  # noqa: BLE001 - any failure of the job is an outcome
            return Failure(exc, describe(exc))
        finally:
            self.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        return None

    def _with_hooks(self, spec: JobSpec, args: list[Any]) -> bool:
        name = spec.name
        vetoed = False
        for fn in hooks.global_hooks("before_perform"):
            vetoed = fn(name, *args) is False or vetoed
        for fn in spec.hooks.get("before_perform", []):
            vetoed = fn(*args) is False or vetoed
        if vetoed:
            return False
        call: Callable[[], Any] = functools.partial(spec.perform, *args)
        for fn in reversed(spec.hooks.get("around_perform", [])):
            call = functools.partial(fn, call, *args)
        for fn in reversed(hooks.global_hooks("around_perform")):
            call = functools.partial(fn, name, call, *args)
        call()
        # after_perform runs before the delete, so a failing hook is a failed
        # attempt that is retried, not a job silently half-done.
        for fn in hooks.global_hooks("after_perform"):
            fn(name, *args)
        for fn in spec.hooks.get("after_perform", []):
            fn(*args)
        return True

    def on_alarm(self, signum: int, frame: FrameType | None) -> None:
        """SIGALRM: first look up the TTR, then enforce ``ttr - 1``."""
        job = self.job
        if not self.armed or job is None:
            return
        if self.ttr is None:
            self.ttr = self._probe_ttr(self.runner.client, job)
            self.publish_deadline(job)
        if self.ttr <= 1:
            return  # no deadline can be kept (see module docstring)
        remaining = self.started + self.ttr - 1 - time.monotonic()
        if remaining > 0:
            signal.setitimer(signal.ITIMER_REAL, remaining)
            return
        raise JobTimeout(f"timed out after {self.ttr - 1} s (TTR {self.ttr} s)")

    def publish_deadline(self, job: greenstalk.Job[bytes]) -> None:
        """Tell the master the real deadline, which replaces the provisional one."""
        ttr = self.ttr or 0
        deadline = self.started + ttr - 1 if ttr > 1 else 0.0
        with self.runner.slot_lock:
            if self.armed and self.job is job:
                self.runner.slot.set_deadline(job.id, self.started, deadline)

    def probe_from_thread(self) -> None:
        """For a job deaf to SIGALRM: the watcher thread looks the TTR up instead.

        It uses a connection of its own (greenstalk clients are not thread-safe;
        any connection may ask stats-job), opened only in this rare case.
        """
        job = self.job
        if not self.armed or job is None or self.ttr is not None \
                or time.monotonic() - self.started < TTR_PROBE_DELAY + PROBE_THREAD_INTERVAL:
            return
        try:
            client = connection.open_client(self.runner.spec.address, reply_timeout=5.0)
        except OSError:
            return
        try:
            ttr = self._probe_ttr(client, job, own=False)
        finally:
            connection.close_quietly(client)
        if self.armed and self.job is job and self.ttr is None:
            self.ttr = ttr
            self.publish_deadline(job)

    def _probe_ttr(self, client: greenstalk.Client[bytes] | None, job: greenstalk.Job[bytes],
                   own: bool = True) -> int:
        """The job's TTR from beanstalkd; 0 when it cannot be known."""
        if client is None:
            return 0
        try:
            return int(client.stats_job(job.id)["ttr"])
        except greenstalk.NotFoundError:
            log.warning("job id=%d: reservation lost while running (TTR expired?)", job.id)
        except Exception as exc:  # noqa: BLE001 - classified below
            if not connection.is_connection_error(exc):
                raise
            if own:
                self.runner.lost(exc)
        return 0


class ProbeThread(threading.Thread):
    """Looks up the TTR of a job that keeps SIGALRM blocked (see Performer)."""

    def __init__(self, performer: Performer) -> None:
        super().__init__(name="ttr-probe", daemon=True)
        self.performer = performer
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(PROBE_THREAD_INTERVAL):
            try:
                self.performer.probe_from_thread()
            except Exception as exc:  # noqa: BLE001 - a helper thread must not die
                log.warning("TTR probe failed: %s: %s", type(exc).__name__, exc)
