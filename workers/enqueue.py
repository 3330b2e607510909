"""The producer side: ``enqueue`` and its one reused connection per process/thread.

A connection is kept per thread (greenstalk clients have no locks) and is
rebuilt after a fork (a client shared across fork interleaves replies; see
rule 1). Connection errors are retried a bounded number of times, then
raised as one clear :class:`~workers.errors.ServerUnavailable`.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from typing import Any

import greenstalk

from workers import connection, errors, hooks, policy, registry, wire

log = logging.getLogger(__name__)

RETRIES = 3
MAX_JOB_SIZE = 65_535  # beanstalkd's default -z; a bigger body gets JOB_TOO_BIG
_local = threading.local()


def reset_connection() -> None:
    """Drop this thread's producer connection (after configure())."""
    connection.close_quietly(getattr(_local, "client", None))
    _local.client = None


def _client() -> greenstalk.Client[bytes]:
    client = getattr(_local, "client", None)
    if client is not None and getattr(_local, "pid", None) == os.getpid():
        return client  # type: ignore[no-any-return]
    # A client inherited through fork shares the parent's TCP stream: using
    # it would interleave replies. Closing our copy of the fd is safe (no
    # shutdown() is sent), so drop it and connect anew.
    connection.close_quietly(client)
    address = connection.parse_url(policy.current().beanstalk_url)
    _local.client = connection.open_client(address)
    _local.pid, _local.using = os.getpid(), "default"
    return _local.client  # type: ignore[no-any-return]


os.register_at_fork(after_in_child=reset_connection)


def delay_seconds(delay: int | float | dt.timedelta | dt.datetime) -> int:
    """Seconds from ``delay``: a number, a timedelta, or an aware datetime."""
    if delay.__class__ is int and 0 <= delay <= 2**32 - 1:
        return delay  # the common case, checked first
    if isinstance(delay, dt.datetime):
        if delay.tzinfo is None:
            raise ValueError("delay as datetime must be timezone-aware")
        seconds = (delay - dt.datetime.now(dt.timezone.utc)).total_seconds()
        return max(0, round(seconds))
    if isinstance(delay, dt.timedelta):
        delay = delay.total_seconds()
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
        raise ValueError(f"delay must be >= 0 seconds, a timedelta or a datetime, got {delay!r}")
    if delay > 2**32 - 1:
        raise ValueError(f"delay {delay} exceeds beanstalkd's maximum 2**32-1 s")
    return int(delay + 0.999) if delay != int(delay) else int(delay)


def _spec_of(target: Any, queue: str | None) -> tuple[str, registry.JobSpec | None]:
    if isinstance(target, registry.JobSpec):
        return target.name, target
    spec = getattr(target, "spec", None) or getattr(target, "job_spec", None)
    if isinstance(spec, registry.JobSpec):
        return spec.name, spec
    if isinstance(target, str):
        found = registry.get(target)
        if found is None and queue is None:
            raise ValueError(f"job {target!r} is not registered here: pass queue= "
                             "to enqueue it by name")
        return target, found
    raise TypeError(f"enqueue() needs a @job, or a job name, not {target!r}")


def enqueue(job: Any, *args: Any, pri: int | str | None = None,
            delay: int | float | dt.timedelta | dt.datetime = 0,
            ttr: int | None = None, queue: str | None = None) -> int | None:
    """Put ``job(*args)`` on its queue's tube and return the beanstalkd job id.

    ``job`` is a @job function or class, or a job name (with ``queue=`` when
    this process has not registered it). ``pri`` is 0..2**32-1 or a label.
    Returns None when a ``before_enqueue`` hook vetoed the job.
    """
    name, spec = _spec_of(job, queue)
    settings = policy.resolve(spec, queue=queue, pri=pri, ttr=ttr)
    body = wire.encode(name, args)
    if len(body) > MAX_JOB_SIZE:
        raise errors.EnqueueError(f"job {name!r}: body is {len(body)} bytes, beanstalkd "
                                  f"accepts at most {MAX_JOB_SIZE}")
    seconds = delay_seconds(delay)
    if not _run_hooks("before_enqueue", name, spec, args):
        log.info("job %s not enqueued: a before_enqueue hook vetoed it", name)
        return None
    job_id = _put(body, settings.tube, settings.pri, seconds, settings.ttr)
    _run_hooks("after_enqueue", name, spec, args)
    return job_id


def _run_hooks(point: str, name: str, spec: registry.JobSpec | None,
               args: tuple[Any, ...]) -> bool:
    """Run global then job hooks; False when one returned False (a veto)."""
    if not (spec and spec.hooks) and not hooks.any_global():
        return True
    ok = True
    for fn in hooks.global_hooks(point):
        ok = fn(name, *args) is not False and ok
    for fn in (spec.hooks.get(point, []) if spec else []):
        ok = fn(*args) is not False and ok
    return ok


def _put(body: bytes, tube: str, pri: int, delay: int, ttr: int) -> int:
    url = policy.current().beanstalk_url
    for attempt in range(RETRIES + 1):
        try:
            client = _client()
            if _local.using != tube:
                client.use(tube)
                _local.using = tube
            return client.put(body, priority=pri, delay=delay, ttr=ttr)
        except greenstalk.DrainingError:
            raise errors.ServerDraining(f"beanstalkd at {url} is draining "
                                        "(it got SIGUSR1) and refuses new jobs") from None
        except greenstalk.JobTooBigError:
            raise errors.EnqueueError(f"beanstalkd at {url} says the job is too big "
                                      f"({len(body)} bytes)") from None
        except (OSError, AssertionError, greenstalk.UnknownResponseError) as exc:
            reset_connection()
            if attempt == RETRIES:
                raise errors.ServerUnavailable(
                    f"cannot put job on beanstalkd at {url} after {RETRIES + 1} "
                    f"attempts: {type(exc).__name__}: {exc}") from exc
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")
