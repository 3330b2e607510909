"""Jobs, job hooks, global hooks and worker hooks for tests/e2e/test_hooks.py.

Imported by the master (``imports = tests.hooks_e2e``) and by the test
process, which enqueues these jobs. Every job and hook appends one JSON
array per call to a file: the job's first argument for jobs and their
hooks, a file named by an environment variable for global and worker hooks.

Global hooks are registered only when ``BB_HOOKS_E2E_GLOBAL`` names their
file, so that importing this module in the pytest process does not put
global hooks on every other test's enqueues.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import greenstalk
import psutil

from workers import connection, hooks, job, policy

QUEUE = "hooks-q"
CLASS_QUEUE = "hooks-cls"
GLOBAL_LOG_ENV = "BB_HOOKS_E2E_GLOBAL"
WORKER_LOG_ENV = "BB_HOOKS_E2E_WORKER"


def _append(path: str, *record: Any) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(list(record)) + "\n")


def tube_counts(queue: str) -> dict[str, int]:
    """Ready/reserved/delayed/buried jobs on ``queue``'s tube, asked on a connection
    of our own: what beanstalkd holds at the moment a hook runs."""
    settings = policy.current()
    address = connection.parse_url(settings.beanstalk_url)
    with greenstalk.Client(address, encoding=None) as client:
        try:
            stats: dict[str, Any] = dict(client.stats_tube(settings.tube(queue)))
        except greenstalk.NotFoundError:  # beanstalkd drops a tube nobody uses
            stats = {}
    return {k: int(stats.get(f"current-jobs-{k}", 0))
            for k in ("ready", "reserved", "delayed", "buried")}


# -- a function job with every success-path hook -------------------------------

@job(queue=QUEUE)
def traced(path: str, value: Any) -> None:
    _append(path, "perform", os.getpid(), value)


@traced.hook("before_enqueue")
def traced_before_enqueue(path: str, value: Any) -> bool:
    _append(path, "before_enqueue", value, tube_counts(QUEUE)["ready"])
    return bool(value != "veto")


@traced.hook("after_enqueue")
def traced_after_enqueue(path: str, value: Any) -> None:
    _append(path, "after_enqueue", value, tube_counts(QUEUE)["ready"])


@traced.hook("before_perform")
def traced_before_perform(path: str, value: Any) -> None:
    _append(path, "before_perform", os.getpid(), value)


@traced.hook("around_perform")
def traced_around_perform(proceed: Callable[[], Any], path: str, value: Any) -> None:
    _append(path, "around_enter", value)
    proceed()
    _append(path, "around_exit", value)


@traced.hook("after_perform")
def traced_after_perform(path: str, value: Any) -> None:
    _append(path, "after_perform", value)


# -- a job without hooks, for priorities and tube names -------------------------

@job(queue=QUEUE)
def plain(path: str) -> None:
    _append(path, "perform", os.getpid())


# -- after_perform that raises ------------------------------------------------

@job(queue=QUEUE)
def after_perform_raises(path: str) -> None:
    _append(path, "perform", os.getpid())


@after_perform_raises.hook("after_perform")
def explode_after(path: str) -> None:
    _append(path, "after_perform")
    raise RuntimeError("after_perform hook exploded")


# -- a failing job with the failure-path hooks ----------------------------------

@job(queue=QUEUE)
def fails(path: str, value: Any) -> None:
    _append(path, "perform", os.getpid(), value)
    raise ValueError(f"fails with {value}")


@fails.hook("on_failure")
def fails_on_failure(exc: BaseException, path: str, value: Any) -> None:
    _append(path, "on_failure", type(exc).__name__, str(exc), path, value)


@fails.hook("on_retry")
def fails_on_retry(attempt: int, delay: int, path: str, value: Any) -> None:
    _append(path, "on_retry", attempt, delay, path, value, tube_counts(QUEUE))


@fails.hook("on_bury")
def fails_on_bury(path: str, value: Any) -> None:
    _append(path, "on_bury", path, value, tube_counts(QUEUE))


# -- failure-path hooks that raise --------------------------------------------------

@job(queue=QUEUE)
def fails_hooks_raise(path: str) -> None:
    _append(path, "perform", os.getpid())
    raise ValueError("the job failed")


@fails_hooks_raise.hook("on_failure")
def raising_on_failure(exc: BaseException, path: str) -> None:
    _append(path, "on_failure", type(exc).__name__)
    raise RuntimeError("on_failure hook exploded")


@fails_hooks_raise.hook("on_retry")
def raising_on_retry(attempt: int, delay: int, path: str) -> None:
    _append(path, "on_retry", attempt, delay)
    raise RuntimeError("on_retry hook exploded")


# -- custom back-off --------------------------------------------------------------

def ten_times_plus_seven(retry_delay: int, retries: int) -> int:
    """A back-off no default could produce: 37 s for retry_delay 3, first retry."""
    return retry_delay * 10 + retries + 7


@job(queue=QUEUE, retry_delay=3, max_job_retries=2, retry_delay_func=ten_times_plus_seven)
def custom_backoff(path: str) -> None:
    _append(path, "perform", os.getpid())
    raise ValueError("custom_backoff always fails")


# -- class jobs ---------------------------------------------------------------------

@job(name="HooksE2E::ClassHooked", queue=QUEUE)
class ClassHooked:
    """backburner's class style, hooks as class methods (Ruby's ``def self.on_...``)."""

    def perform(self, path: str, value: Any) -> None:
        _append(path, "perform", os.getpid(), value)

    @classmethod
    def before_enqueue(cls, path: str, value: Any) -> bool:
        _append(path, "before_enqueue", cls.__name__, value)
        return bool(value != "veto")

    @classmethod
    def after_enqueue(cls, path: str, value: Any) -> None:
        _append(path, "after_enqueue", cls.__name__, value, tube_counts(QUEUE)["ready"])

    @classmethod
    def before_perform(cls, path: str, value: Any) -> None:
        _append(path, "before_perform", cls.__name__, value)

    @classmethod
    def around_perform(cls, proceed: Callable[[], Any], path: str, value: Any) -> None:
        _append(path, "around_enter", cls.__name__, value)
        proceed()
        _append(path, "around_exit", cls.__name__, value)

    @classmethod
    def after_perform(cls, path: str, value: Any) -> None:
        _append(path, "after_perform", cls.__name__, value)


@job(name="HooksE2E::ClassAttrs")
class ClassAttrs:
    """Settings as class attributes; each attempt outlives ``ttr - 1``."""

    queue = CLASS_QUEUE
    ttr = 2
    pri = 321
    max_job_retries = 1
    retry_delay = 1

    def perform(self, path: str, seconds: float) -> None:
        _append(path, "perform", os.getpid())
        time.sleep(seconds)  # sync-ok: the job must outlive its deadline
        _append(path, "perform_end", os.getpid())

    @classmethod
    def on_failure(cls, exc: BaseException, path: str, seconds: float) -> None:
        _append(path, "on_failure", type(exc).__name__, str(exc))

    @classmethod
    def on_retry(cls, attempt: int, delay: int, path: str, seconds: float) -> None:
        _append(path, "on_retry", attempt, delay, tube_counts(CLASS_QUEUE))

    @classmethod
    def on_bury(cls, path: str, seconds: float) -> None:
        _append(path, "on_bury", tube_counts(CLASS_QUEUE))


@job(name="HooksE2E::DocStyle", queue=QUEUE)
class DocStyle:
    """Hooks as plain methods taking ``self``, exactly as docs/jobs.md shows them."""

    def perform(self, path: str) -> None:
        _append(path, "perform", os.getpid())
        raise ValueError("doc style fails")

    def before_perform(self, path: str) -> None:
        _append(path, "before_perform", path)

    def on_failure(self, exc: BaseException, path: str) -> None:
        _append(path, "on_failure", type(exc).__name__, path)


# -- global hooks (only in a process that has the env var) ---------------------------

def _register_global_hooks(log: str) -> None:
    def simple(point: str) -> None:
        @hooks.register(point)
        def record(name: str, *args: Any) -> Any:
            _append(log, point, name, *args)
            return not (point == "before_enqueue" and args[-1:] == ("global-veto",))

    for point in ("before_enqueue", "after_enqueue", "before_perform", "after_perform", "on_bury"):
        simple(point)

    @hooks.register("around_perform")
    def around(name: str, proceed: Callable[[], Any], *args: Any) -> None:
        _append(log, "around_enter", name, *args)
        proceed()
        _append(log, "around_exit", name, *args)

    @hooks.register("on_failure")
    def on_failure(name: str, exc: BaseException, *args: Any) -> None:
        _append(log, "on_failure", name, type(exc).__name__, *args)

    @hooks.register("on_retry")
    def on_retry(name: str, attempt: int, delay: int, *args: Any) -> None:
        _append(log, "on_retry", name, attempt, delay, *args)

    @hooks.register("on_error")
    def on_error(exc: BaseException, job_name: str, args: Any, job_id: int) -> None:
        _append(log, "on_error", type(exc).__name__, str(exc), job_name, list(args), job_id)


if os.environ.get(GLOBAL_LOG_ENV):
    _register_global_hooks(os.environ[GLOBAL_LOG_ENV])


# -- worker hooks (config: post_fork / worker_exit) --------------------------------

def _beanstalkd_connections() -> int:
    """TCP connections this process holds to the configured beanstalkd."""
    port = connection.parse_url(policy.current().beanstalk_url)[1]
    proc = psutil.Process()
    method = getattr(proc, "net_connections", None) or proc.connections
    return sum(1 for c in method(kind="tcp") if c.raddr and c.raddr.port == port)


def _worker_record(*record: Any) -> None:
    path = os.environ.get(WORKER_LOG_ENV)
    if path:
        _append(path, *record)


def record_post_fork(queue: str, index: int) -> None:
    _worker_record("post_fork", os.getpid(), os.getppid(), queue, index,
                   _beanstalkd_connections())


def record_post_fork_override(queue: str, index: int) -> None:
    _worker_record("post_fork_override", os.getpid(), os.getppid(), queue, index,
                   _beanstalkd_connections())


def record_worker_exit(queue: str, index: int) -> None:
    _worker_record("worker_exit", os.getpid(), queue, index)
