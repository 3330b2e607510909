"""The job registry: ``@job`` and the name -> job table.

Only code registered here can run in a worker (rule 4): a payload names a
job, and the name is looked up in this table, never imported. The table is
filled by the modules that the config's ``imports`` names, imported by the
master before it forks.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

HOOK_NAMES = ("before_enqueue", "after_enqueue", "before_perform", "around_perform",
              "after_perform", "on_failure", "on_retry", "on_bury")
SETTING_NAMES = ("queue", "pri", "ttr", "max_job_retries", "retry_delay", "retry_delay_func")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class JobSpec:
    """A registered job: its name, its callable and its own settings.

    Settings left ``None`` fall back to the queue section, then to
    ``[supervisor]``, then to the built-in default (see ``resolve``).
    """

    name: str
    perform: Callable[..., Any]
    queue: str | None = None
    pri: int | str | None = None
    ttr: int | None = None
    max_job_retries: int | None = None
    retry_delay: int | None = None
    retry_delay_func: Callable[[int, int], float] | None = None
    hooks: dict[str, list[Callable[..., Any]]] = field(default_factory=dict)

    def add_hook(self, point: str, fn: Callable[..., Any]) -> None:
        if point not in HOOK_NAMES:
            raise ValueError(f"unknown hook {point!r}; expected one of {', '.join(HOOK_NAMES)}")
        self.hooks.setdefault(point, []).append(fn)


_registry: dict[str, JobSpec] = {}


def get(name: str) -> JobSpec | None:
    """The job registered as ``name``, or None."""
    return _registry.get(name)


def names() -> list[str]:
    return sorted(_registry)


def register(spec: JobSpec) -> JobSpec:
    """Add ``spec``; a second, different callable under one name is an error."""
    old = _registry.get(spec.name)
    if old is not None and _origin(old.perform) != _origin(spec.perform):
        raise ValueError(f"job name {spec.name!r} is already registered by "
                         f"{_origin(old.perform)}")
    _registry[spec.name] = spec
    return spec


def _origin(fn: Callable[..., Any]) -> str:
    target = getattr(fn, "__self__", None) or fn
    target = target if inspect.isclass(target) else fn
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


class JobFunction:
    """What ``@job`` returns for a function: still callable in-process, plus ``.enqueue``."""

    def __init__(self, func: Callable[..., Any], spec: JobSpec) -> None:
        functools.update_wrapper(self, func)
        self.func, self.spec = func, spec

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def enqueue(self, *args: Any, **options: Any) -> int | None:
        """Put this job with ``args``; ``options`` as for :func:`workers.enqueue`."""
        from workers.enqueue import enqueue

        return enqueue(self.spec, *args, **options)

    def hook(self, point: str) -> Callable[[F], F]:
        """Decorator adding a per-job hook, e.g. ``@send.hook("on_failure")``."""
        def add(fn: F) -> F:
            self.spec.add_hook(point, fn)
            return fn
        return add

    def __repr__(self) -> str:
        return f"<job {self.spec.name}>"


def _class_method(cls: type, name: str) -> Callable[..., Any] | None:
    """``cls.<name>`` as a plain callable (backburner's class style).

    A staticmethod or classmethod is used as it is; a plain method gets a
    fresh instance per call, so ``def perform(self, *args)`` and
    ``def on_failure(self, exc, *args)`` both work.
    """
    raw = inspect.getattr_static(cls, name, None)
    if raw is None:
        return None
    if isinstance(raw, (staticmethod, classmethod)):
        return getattr(cls, name)  # type: ignore[no-any-return]
    if not callable(raw):
        return None

    def call(*args: Any) -> Any:
        return getattr(cls(), name)(*args)

    call.__qualname__ = f"{cls.__qualname__}.{name}"
    call.__module__ = cls.__module__
    call.__self__ = cls  # type: ignore[attr-defined]  # for _origin
    return call


def _class_spec(cls: type, name: str | None, settings: dict[str, Any]) -> JobSpec:
    for key in SETTING_NAMES:
        if key not in settings and getattr(cls, key, None) is not None:
            settings[key] = getattr(cls, key)
    perform = _class_method(cls, "perform")
    if perform is None:
        raise TypeError(f"job class {cls.__qualname__} has no perform() method")
    spec = JobSpec(name=name or getattr(cls, "name", None) or f"{cls.__module__}.{cls.__qualname__}",
                   perform=perform, **settings)
    for point in HOOK_NAMES:
        fn = _class_method(cls, point)
        if fn is not None:
            spec.add_hook(point, fn)
    return spec


def job(func: Any = None, *, name: str | None = None, **settings: Any) -> Any:
    """Register a function or a class with ``perform`` as a job.

    ``@job``, ``@job(queue="mail", ttr=30)`` or ``@job(name="NewsletterJob")``;
    the registered name defaults to ``module.qualname``. Settings:
    ``queue, pri, ttr, max_job_retries, retry_delay, retry_delay_func``.
    """
    unknown = set(settings) - set(SETTING_NAMES)
    if unknown:
        raise TypeError(f"@job got unknown settings: {', '.join(sorted(unknown))}")
    _check_settings(settings)

    def decorate(target: Any) -> Any:
        if inspect.isclass(target):
            spec = register(_class_spec(target, name, dict(settings)))
            setattr(target, "enqueue", staticmethod(functools.partial(_enqueue_spec, spec)))
            setattr(target, "job_spec", spec)
            return target
        spec = register(JobSpec(name=name or f"{target.__module__}.{target.__qualname__}",
                                perform=target, **settings))
        return JobFunction(target, spec)

    return decorate(func) if func is not None else decorate


def _enqueue_spec(spec: JobSpec, *args: Any, **options: Any) -> int | None:
    from workers.enqueue import enqueue

    return enqueue(spec, *args, **options)


def _check_settings(settings: dict[str, Any]) -> None:
    """Catch a bad setting at import time, where the traceback points at the job."""
    from workers.wire import tube_name

    for key in ("ttr", "max_job_retries", "retry_delay"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 0 <= value <= 2**32 - 1):
            raise ValueError(f"@job {key} must be an integer 0..2**32-1, got {value!r}")
    pri = settings.get("pri")
    if pri is not None and not isinstance(pri, str):
        if not isinstance(pri, int) or isinstance(pri, bool) or not 0 <= pri <= 2**32 - 1:
            raise ValueError(f"@job pri must be 0..2**32-1 or a label, got {pri!r}")
    if settings.get("queue") is not None:
        tube_name(settings["queue"])  # raises TubeNameError for a name beanstalkd rejects
    func = settings.get("retry_delay_func")
    if func is not None and not callable(func):
        raise TypeError("@job retry_delay_func must be callable(retry_delay, retries)")
