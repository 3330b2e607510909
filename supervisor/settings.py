"""The option table: every config option is declared here exactly once.

Parsing, validation, ``--help-options`` and ``docs/options.md`` are all
driven by :data:`OPTIONS`, so a default or a help text never exists in two
places (huey repeated its defaults in three; gunicorn's ``Setting`` table is
the model).
"""
from __future__ import annotations

import grp
import pwd
import re
from dataclasses import dataclass
from typing import Any, Callable

U32_MAX = 2**32 - 1


class OptionError(ValueError):
    """A value that does not fit its option; the message says what is wrong."""


def parse_int(lo: int, hi: int = U32_MAX) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise OptionError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise OptionError(f"must be between {lo} and {hi}, got {value}")
        return value

    parse.__doc__ = f"integer {lo}..{hi}"
    return parse


def parse_float(lo: float, hi: float = float("inf")) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise OptionError(f"expected a number, got {text!r}") from None
        if not lo <= value <= hi or value != value:
            raise OptionError(f"must be between {lo} and {hi}, got {value}")
        return value

    parse.__doc__ = f"number >= {lo}"
    return parse


def parse_str(text: str) -> str:
    """string"""
    value = text.strip()
    if not value:
        raise OptionError("must not be empty")
    return value


def parse_list(text: str) -> tuple[str, ...]:
    """comma or newline separated list"""
    return tuple(p.strip() for p in re.split(r"[,\n]", text) if p.strip())


def parse_url(text: str) -> str:
    """beanstalk://HOST:PORT"""
    from workers.connection import parse_url as check

    value = text.strip()
    try:
        check(value)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    return value


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def parse_log_level(text: str) -> str:
    """one of debug, info, warning, error, critical"""
    value = text.strip().lower()
    if value not in LOG_LEVELS:
        raise OptionError(f"must be one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return value


def parse_labels(text: str) -> dict[str, int]:
    """``name=N`` pairs, comma or newline separated"""
    labels: dict[str, int] = {}
    for item in parse_list(text):
        name, sep, number = item.partition("=")
        if not sep or not name.strip():
            raise OptionError(f"expected name=N, got {item!r}")
        labels[name.strip()] = parse_int(0)(number)
    return labels


def parse_path(text: str) -> str:
    """file path"""
    value = text.strip()
    if not value:
        raise OptionError("must not be empty")
    return value


def parse_memory(text: str) -> int:
    """size in MiB (0 = no limit)"""
    return parse_int(0, 1 << 30)(text.strip().removesuffix("MiB").removesuffix("M"))


def _existing(kind: str, lookup: Callable[[str], Any]) -> Callable[[str], str]:
    """A parser accepting only names ``lookup`` knows (pwd.getpwnam, grp.getgrnam)."""
    def parse(text: str) -> str:
        value = parse_str(text)
        try:
            lookup(value)
        except KeyError:
            raise OptionError(f"no such {kind} {value!r} on this machine") from None
        return value

    parse.__doc__ = f"an existing {kind} name"
    return parse


parse_user = _existing("user", pwd.getpwnam)
parse_group = _existing("group", grp.getgrnam)


def parse_hook(text: str) -> str:
    """``module:function``, imported by the master at start"""
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
        raise OptionError(f"expected module:function, got {text!r}")
    return value


GLOBAL = "supervisor"
QUEUE = "queue"


@dataclass(frozen=True)
class Option:
    """One config option: where it may appear, how it parses, what it means."""

    name: str
    scopes: tuple[str, ...]
    parse: Callable[[str], Any]
    default: Any
    help: str

    @property
    def type_doc(self) -> str:
        return (self.parse.__doc__ or "").strip().splitlines()[0]


OPTIONS: tuple[Option, ...] = (
    Option("beanstalk_url", (GLOBAL,), parse_url, "beanstalk://127.0.0.1:11300",
           "Address of the beanstalkd server."),
    Option("imports", (GLOBAL,), parse_list, (),
           "Modules that define jobs with @job; imported by the master before it forks, "
           "so children start warm. Only jobs registered by these imports can run."),
    Option("tube_namespace", (GLOBAL,), parse_str, "backburner.worker.queue",
           "Prefix of every tube name (Ruby backburner's default)."),
    Option("namespace_separator", (GLOBAL,), parse_str, ".",
           "Put between the namespace and the queue name to form the tube name."),
    Option("graceful_timeout", (GLOBAL,), parse_float(0.0), 30.0,
           "Seconds a draining child may take to finish its job before it is killed."),
    Option("socket_timeout", (GLOBAL,), parse_float(2.0, 3600.0), 10.0,
           "Seconds without a reply from beanstalkd after which a connection counts as "
           "dead and is rebuilt. Idle children reserve with half this timeout, so a "
           "server or network path that stops answering is noticed within this time."),
    Option("log_level", (GLOBAL,), parse_log_level, "info",
           "Level of the log on stderr; `info` prints one line per finished job."),
    Option("log_file", (GLOBAL,), parse_path, None,
           "Write the log to this file instead of stderr; SIGUSR1 reopens it (log rotation)."),
    Option("pidfile", (GLOBAL,), parse_path, None,
           "Write the master's pid here (atomically); refused if it names a live "
           "bbsupervise; removed on exit."),
    Option("control_socket", (GLOBAL,), parse_path, None,
           "Unix socket for `bbsupervise status` and `ctl`; default: derived from the "
           "config path under $XDG_RUNTIME_DIR or /tmp."),
    Option("user", (GLOBAL,), parse_user, None,
           "Children drop privileges to this user after the fork (master runs as root)."),
    Option("group", (GLOBAL,), parse_group, None,
           "Children drop privileges to this group after the fork."),
    Option("scale_queue", (GLOBAL,), parse_str, None,
           "Queue that SIGTTIN/SIGTTOU scale when there are several queues."),
    Option("stop_timeout", (GLOBAL,), parse_float(0.0), None,
           "The stop timeout your service manager allows (e.g. systemd TimeoutStopSec); "
           "`--check` warns when graceful_timeout does not fit in it."),
    Option("max_jobs_per_child", (GLOBAL, QUEUE), parse_int(0), 0,
           "Replace a child after about this many jobs (with up to 10% jitter, so children "
           "do not recycle at once); 0 = never."),
    Option("max_memory_per_child", (GLOBAL, QUEUE), parse_memory, 0,
           "Replace a child, after its current job, once its RSS exceeds this many MiB; "
           "0 = no limit. The master checks every second."),
    Option("processes", (QUEUE,), parse_int(0, 1024), 1,
           "Number of worker processes for this queue."),
    Option("default_priority", (GLOBAL, QUEUE), parse_int(0), 65536,
           "Priority of jobs that name none (0 is most urgent)."),
    Option("respond_timeout", (GLOBAL, QUEUE), parse_int(0), 120,
           "Time-to-run (TTR) in seconds of jobs that name none. The worker stops a job "
           "after TTR - 1 s, before beanstalkd hands it to another worker."),
    Option("max_job_retries", (GLOBAL, QUEUE), parse_int(0, 10_000), 0,
           "How many times a failed job is retried before it is buried."),
    Option("retry_delay", (GLOBAL, QUEUE), parse_int(0), 5,
           "Base delay in seconds before a failed job is retried "
           "(the delay is retry_delay + retries_so_far**3)."),
    Option("priority_labels", (GLOBAL, QUEUE), parse_labels,
           {"high": 0, "medium": 100, "low": 200},
           "Names usable as priorities, e.g. `high=0, medium=100, low=200`."),
    Option("primary_queue", (GLOBAL,), parse_str, "backburner-jobs",
           "Queue of jobs that name none."),
    Option("post_fork", (GLOBAL, QUEUE), parse_hook, None,
           "Hook `module:function(queue, index)` run in each child after the fork, "
           "before it connects (reopen database connections here)."),
    Option("worker_exit", (GLOBAL, QUEUE), parse_hook, None,
           "Hook `module:function(queue, index)` run in each child before it exits."),
    Option("on_reconnect", (GLOBAL, QUEUE), parse_hook, None,
           "Hook `module:function(queue, index)` run in a child after each reconnect."),
)

BY_NAME: dict[str, Option] = {opt.name: opt for opt in OPTIONS}


def defaults(scope: str) -> dict[str, Any]:
    """Built-in defaults of every option allowed in ``scope``."""
    return {o.name: o.default for o in OPTIONS if scope in o.scopes}


def render_markdown() -> str:
    """The reference table of options, for ``docs/options.md`` and ``--help-options``."""
    rows = ["| option | section | type | default | meaning |", "|---|---|---|---|---|"]
    for o in OPTIONS:
        where = " and ".join("[supervisor]" if s == GLOBAL else "[queue:NAME]" for s in o.scopes)
        default = o.default
        if isinstance(default, dict):
            default = ", ".join(f"{k}={v}" for k, v in default.items())
        elif isinstance(default, tuple):
            default = ", ".join(default) or "(none)"
        elif default is None:
            default = "(none)"
        rows.append(f"| `{o.name}` | {where} | {o.type_doc} | `{default}` | {o.help} |")
    return "\n".join(rows) + "\n"
