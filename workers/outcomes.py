"""What happens to a job after it ran: delete, release with back-off, or bury.

Only the failure paths ask beanstalkd about the job (``stats-job``), for its
priority and its ``reserves``: every reservation that did not end in success
is a failed attempt, including one whose worker died or whose TTR ran out,
which beanstalkd's ``releases`` misses. A successful job costs one delete.
A NOT_FOUND on a late delete/release/bury means the reservation was lost
(TTR expired, or the connection dropped and beanstalkd made the job ready
again): it is logged and the worker carries on.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import greenstalk

from supervisor.logconfig import info_enabled, info_line
from workers import connection, hooks, policy
from workers.errors import JobTimeout
from workers.perform import Failure, describe
from workers.registry import JobSpec

if TYPE_CHECKING:
    from workers.runner import Runner

log = logging.getLogger(__name__)


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


class Outcomes:
    """The end of each job, on the runner's connection."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def _command(self, what: str, job_id: int, call: Callable[[greenstalk.Client[bytes]], Any]
                 ) -> bool:
        """Run one command on the job; False (and a log line) if the reservation is gone."""
        client = self.runner.client
        if client is None:
            log.warning("job id=%d: reservation lost (connection dropped); cannot %s it: "
                        "beanstalkd has made it ready again", job_id, what)
            return False
        try:
            call(client)
            return True
        except greenstalk.NotFoundError:
            log.warning("job id=%d: reservation lost (TTR expired or job gone); "
                        "cannot %s it", job_id, what)
        except Exception as exc:
            if not connection.is_connection_error(exc):
                raise
            self.runner.lost(exc)
            log.warning("job id=%d: reservation lost (connection dropped); cannot %s it: "
                        "beanstalkd has made it ready again", job_id, what)
        return False

    def _stats(self, job_id: int) -> dict[str, Any] | None:
        stats: dict[str, Any] = {}
        ok = self._command("inspect", job_id, lambda c: stats.update(c.stats_job(job_id)))
        return stats if ok else None

    def succeeded(self, job: greenstalk.Job[bytes], name: str, started: float) -> None:
        """Delete the job, and in the same write ask for the next one when we will want it."""
        runner = self.runner
        if runner.wants_next_job():
            def delete(c: greenstalk.Client[bytes]) -> None:
                connection.send_delete_and_reserve(c, job.id, runner.reserve_timeout)
                runner.pending_reserve = True
                connection.read_deleted(c)
        else:
            def delete(c: greenstalk.Client[bytes]) -> None:
                c.delete(job.id)
        if self._command("delete", job.id, delete) and info_enabled():
            info_line(f"job {name} id={job.id} completed in {_ms(started):.1f} ms")

    def bury_bad(self, job: greenstalk.Job[bytes], reason: str) -> None:
        """A body that names no runnable job: bury it, keeping its priority."""
        stats = self._stats(job.id)
        if stats is None:
            return
        if self._command("bury", job.id, lambda c: c.bury(job, priority=stats["pri"])):
            log.error("job id=%d on tube %s buried: %s", job.id, stats.get("tube", "?"), reason)

    def exhausted_by_crashes(self, job: greenstalk.Job[bytes], name: str,
                             settings: policy.Resolved) -> bool:
        """For a job whose worker died holding it: bury it if its attempts are used up."""
        stats = self._stats(job.id)
        if stats is None:
            return True
        failures = int(stats["reserves"]) - 1
        limit = settings.max_job_retries + 1
        if failures < limit:
            log.warning("job %s id=%d: attempt %d of %d (an earlier attempt died with its "
                        "worker or lost its reservation)", name, job.id, failures + 1, limit)
            return False
        if self._command("bury", job.id, lambda c: c.bury(job, priority=stats["pri"])):
            log.error("job %s id=%d failed: attempt %d of %d killed its worker or lost its "
                      "reservation, burying", name, job.id, failures, limit)
        return True

    def failed(self, job: greenstalk.Job[bytes], spec: JobSpec, args: list[Any],
               settings: policy.Resolved, failure: Failure, started: float) -> bool:
        """Release with back-off while retries remain, else bury; then the hooks.

        False when the reservation was lost, so the attempt is still to count."""
        ran = _ms(started)
        stats = self._stats(job.id)
        if stats is None:
            self._lost(job, spec, failure, ran)
            return False
        attempt = int(stats["reserves"])
        limit = settings.max_job_retries + 1
        if attempt < limit:
            delay = max(0, int(round(settings.retry_delay_func(settings.retry_delay, attempt - 1))))
            self._hooks(spec, "on_retry", job.id, attempt, delay, *args)
            done = self._command("release", job.id,
                                 lambda c: c.release(job, priority=stats["pri"], delay=delay))
            outcome = f"retrying in {delay} s"
        else:
            self._hooks(spec, "on_bury", job.id, *args)
            done = self._command("bury", job.id, lambda c: c.bury(job, priority=stats["pri"]))
            outcome = "burying"
        if done:
            level = logging.WARNING if outcome != "burying" else logging.ERROR
            log.log(level, "job %s id=%d failed: attempt %d of %d, %s: %s (after %.1f ms)",
                    spec.name, job.id, attempt, limit, outcome, failure.reason, ran)
        else:
            self._lost(job, spec, failure, ran)
        if failure.exc is not None and not isinstance(failure.exc, JobTimeout):
            log.debug("job %s id=%d traceback", spec.name, job.id, exc_info=failure.exc)
        self._failure_hooks(job, spec, args, failure)
        return done

    def _lost(self, job: greenstalk.Job[bytes], spec: JobSpec, failure: Failure,
              ran: float) -> None:
        """A failed job whose reservation is gone: beanstalkd will hand it out again.

        This attempt cannot be counted by a release or bury; the job's
        in-flight mark stays (see the runner), so the next worker to reserve
        it checks its ``reserves`` first and buries it once they are used up.
        """
        log.error("job %s id=%d failed after %.1f ms, and its reservation was lost "
                  "(beanstalkd will hand it out again; this attempt counts): %s",
                  spec.name, job.id, ran, failure.reason)

    def _failure_hooks(self, job: greenstalk.Job[bytes], spec: JobSpec, args: list[Any],
                       failure: Failure) -> None:
        if failure.exc is None:
            return
        self._hooks(spec, "on_failure", job.id, failure.exc, *args)
        for fn in hooks.global_hooks("on_error"):
            self._safe(fn, spec.name, job.id, "on_error", failure.exc, spec.name, args, job.id)

    def _hooks(self, spec: JobSpec, point: str, job_id: int, *args: Any) -> None:
        for fn in hooks.global_hooks(point):
            self._safe(fn, spec.name, job_id, point, spec.name, *args)
        for fn in spec.hooks.get(point, []):
            self._safe(fn, spec.name, job_id, point, *args)

    @staticmethod
    def _safe(fn: Callable[..., Any], name: str, job_id: int, point: str, *args: Any) -> None:
        """A hook that raises on a failure path is logged; the job's outcome stands."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - user hook
            log.error("job %s id=%d: %s hook failed: %s", name, job_id, point, describe(exc))
