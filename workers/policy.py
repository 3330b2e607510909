"""Where a job's settings come from: enqueue call, job, queue, [supervisor], default.

The process-wide :class:`Settings` is set by :func:`configure` (a producer)
or by the master from its config file (inherited by every child through
fork). Resolution is pure, so it is unit-tested without a server.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from supervisor import settings as table
from workers.registry import JobSpec
from workers.wire import tube_name

PER_QUEUE = ("default_priority", "respond_timeout", "max_job_retries", "retry_delay",
             "priority_labels")


def default_retry_delay(retry_delay: int, retries: int) -> float:
    """backburner's back-off: 5, 6, 13, 32, 69 s for retries 0..4 with the defaults."""
    return retry_delay + retries**3


@dataclass(frozen=True)
class Settings:
    """The values the job API needs, from ``configure()`` or a config file."""

    beanstalk_url: str = table.BY_NAME["beanstalk_url"].default
    tube_namespace: str = table.BY_NAME["tube_namespace"].default
    namespace_separator: str = table.BY_NAME["namespace_separator"].default
    primary_queue: str = table.BY_NAME["primary_queue"].default
    values: Mapping[str, Any] = field(
        default_factory=lambda: {k: table.BY_NAME[k].default for k in PER_QUEUE})
    queues: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def for_queue(self, queue: str) -> Mapping[str, Any]:
        return self.queues.get(queue, self.values)

    def tube(self, queue: str) -> str:
        return _tube(queue, self.tube_namespace, self.namespace_separator)


@functools.lru_cache(maxsize=1024)
def _tube(queue: str, namespace: str, separator: str) -> str:
    return tube_name(queue, namespace, separator)


_current = Settings()


def current() -> Settings:
    return _current


def configure(config_file: str | None = None, **values: Any) -> Settings:
    """Set the producer's settings: ``beanstalk_url=...``, the tube naming and
    the job defaults (``default_priority``, ``respond_timeout``, ...), or
    ``config_file=PATH`` to take them, queue sections included, from a config.

    Options that only the supervisor uses (``imports``, ``graceful_timeout``,
    ...) are refused rather than silently ignored.
    """
    base = from_config(_load(config_file)) if config_file is not None else _current
    fields = set(Settings.__dataclass_fields__) - {"values", "queues"}
    unknown = set(values) - fields - set(PER_QUEUE)
    if unknown:
        raise TypeError(f"configure() got unknown options: {', '.join(sorted(unknown))} "
                        f"(it takes: {', '.join(sorted(fields | set(PER_QUEUE)))})")
    if "beanstalk_url" in values:
        table.parse_url(values["beanstalk_url"])
    top = {k: v for k, v in values.items() if k in fields}
    per_queue = {k: v for k, v in values.items() if k in PER_QUEUE}
    use(replace(base, values={**base.values, **per_queue}, **top))
    from workers.enqueue import reset_connection

    reset_connection()
    return _current


def _load(path: str) -> Any:
    from supervisor.config import load

    return load(path)


def from_config(config: Any) -> Settings:
    """Settings from a loaded :class:`supervisor.config.Config`."""
    return Settings(
        beanstalk_url=config["beanstalk_url"],
        tube_namespace=config["tube_namespace"],
        namespace_separator=config["namespace_separator"],
        primary_queue=config["primary_queue"],
        values={k: config[k] for k in PER_QUEUE},
        queues={name: dict(q.values) for name, q in config.queues.items()},
    )


def use(settings_: Settings) -> None:
    """Install ``settings_`` as the process's settings (the master does this)."""
    global _current
    _current = settings_
    _resolved.clear()


def priority(value: int | str, labels: Mapping[str, int]) -> int:
    """An integer priority or a label; an unknown label is an error, not a default."""
    if isinstance(value, str):
        if value not in labels:
            known = ", ".join(f"{k}={v}" for k, v in labels.items())
            raise ValueError(f"unknown priority label {value!r} (known: {known})")
        return labels[value]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**32 - 1:
        raise ValueError(f"priority must be 0..2**32-1 or a label, got {value!r}")
    return value


@dataclass(frozen=True)
class Resolved:
    """A job's effective settings in one queue."""

    queue: str
    tube: str
    pri: int
    ttr: int
    max_job_retries: int
    retry_delay: int
    retry_delay_func: Callable[[int, int], float]


_resolved: dict[tuple[Any, ...], Resolved] = {}


def resolve(spec: JobSpec | None, queue: str | None = None,
            pri: int | str | None = None, ttr: int | None = None,
            settings_: Settings | None = None) -> Resolved:
    """Most specific first: call arguments, the job, its queue, [supervisor], default.

    Cached for the process's settings (enqueue calls this for every job);
    the cache is emptied whenever those settings change.
    """
    if settings_ is not None:
        return _resolve(spec, queue, pri, ttr, settings_)
    key = (spec.name if spec else None, id(spec), queue, pri, ttr)
    found = _resolved.get(key)
    if found is None:
        found = _resolve(spec, queue, pri, ttr, _current)
        if len(_resolved) > 4096:
            _resolved.clear()
        _resolved[key] = found
    return found


def _resolve(spec: JobSpec | None, queue: str | None, pri: int | str | None,
             ttr: int | None, s: Settings) -> Resolved:
    q = queue or (spec.queue if spec else None) or s.primary_queue
    qv = s.for_queue(q)
    labels = qv["priority_labels"]
    chosen_pri = _first(pri, spec.pri if spec else None, qv["default_priority"])
    chosen_ttr = _first(ttr, spec.ttr if spec else None, qv["respond_timeout"])
    if isinstance(chosen_ttr, bool) or not isinstance(chosen_ttr, int) \
            or not 0 <= chosen_ttr <= 2**32 - 1:
        raise ValueError(f"ttr must be an integer 0..2**32-1, got {chosen_ttr!r}")
    return Resolved(
        queue=q, tube=s.tube(q), pri=priority(chosen_pri, labels), ttr=chosen_ttr,
        max_job_retries=_first(spec.max_job_retries if spec else None, qv["max_job_retries"]),
        retry_delay=_first(spec.retry_delay if spec else None, qv["retry_delay"]),
        retry_delay_func=(spec.retry_delay_func if spec and spec.retry_delay_func
                          else default_retry_delay),
    )


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)
