"""Global hooks: run for every job, around the job's own hooks.

Hook points have backburner's meaning. A global hook gets the job name
first, then what the per-job hook gets::

    from workers import hooks

    @hooks.register("on_failure")
    def report(name, exc, *args): ...

    @hooks.register("on_error")          # (exc, job_name, args, job_id)
    def to_sentry(exc, name, args, job_id): ...
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from workers.registry import HOOK_NAMES

POINTS = HOOK_NAMES + ("on_error",)
F = TypeVar("F", bound=Callable[..., Any])

_global: dict[str, list[Callable[..., Any]]] = {}


def register(point: str) -> Callable[[F], F]:
    """Decorator: add ``fn`` as a global hook at ``point``."""
    if point not in POINTS:
        raise ValueError(f"unknown hook {point!r}; expected one of {', '.join(POINTS)}")

    def add(fn: F) -> F:
        _global.setdefault(point, []).append(fn)
        return fn

    return add


def global_hooks(point: str) -> list[Callable[..., Any]]:
    return _global.get(point, [])


def any_global() -> bool:
    return any(_global.values())


def clear() -> None:
    """Forget every global hook (for tests)."""
    _global.clear()
