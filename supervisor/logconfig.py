"""Logging to stderr, one line per event, cheap enough for the job hot path.

Every line carries time, level, pid and queue. The stdlib machinery is
kept (handlers, levels, ``log.info("...%s", x)``), but the costly parts are
switched off or cached: no caller lookup (``logging._srcfile``), no thread
or process-name lookups, and the timestamp prefix is formatted once per
second. The per-job INFO line goes through :func:`info_line`, which skips
the LogRecord altogether (a LogRecord plus ``Handler.emit`` cost about
20 us a job, as much as the bare reserve+delete round trips): it formats
the same line and hands it to the root handler's file descriptor with one
``write``.
"""
from __future__ import annotations

import logging
import os
import sys
import time

_context = {"pid": os.getpid(), "queue": "master", "tag": f"[{os.getpid()}] master"}
_stamp_cache = [-1, ""]
# The per-job fast path: the fd of the root handler, or -1 (use logging).
_fast = {"fd": -1, "info": True}


def _stamp(created: float) -> str:
    """``2026-12-03 13:22:09.123``; the seconds part is formatted once per second."""
    second = int(created)
    if second != _stamp_cache[0]:
        _stamp_cache[0] = second
        _stamp_cache[1] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
    return f"{_stamp_cache[1]}.{int((created - second) * 1000):03d}"


class FastFormatter(logging.Formatter):
    """``2026-12-03 13:22:09.123 INFO [1234] queue: message``."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg if not record.args else record.msg % record.args
        line = f"{_stamp(record.created)} {record.levelname} {_context['tag']}: {msg}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def info_enabled() -> bool:
    return bool(_fast["info"])


def info_line(text: str) -> None:
    """One INFO line with no LogRecord: for the per-job line on the hot path."""
    fd = _fast["fd"]
    if fd < 0:
        logging.getLogger("workers.runner").info("%s", text)
        return
    data = f"{_stamp(time.time())} INFO {_context['tag']}: {text}\n".encode()
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # like logging.raiseExceptions=False: a log write never kills a worker


def _refresh_fast_path() -> None:
    root = logging.getLogger()
    _fast["info"] = root.isEnabledFor(logging.INFO)
    _fast["fd"] = -1
    if len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, FastFormatter):
        stream = getattr(root.handlers[0], "stream", None)
        try:
            _fast["fd"] = stream.fileno() if stream is not None else -1
        except (OSError, ValueError, AttributeError):
            _fast["fd"] = -1


def setup(level: str, log_file: str | None = None) -> None:
    """Configure the root logger once, in the master, before any fork."""
    logging._srcfile = None  # skip the frame walk per record
    logging.raiseExceptions = False  # a log that cannot be written never kills or floods
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    setattr(logging, "logAsyncioTasks", False)  # 3.12+: skip the asyncio task lookup
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FastFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _refresh_fast_path()


def set_context(queue: str) -> None:
    """After a fork: the pid and queue that every line of this process shows."""
    _context["pid"] = os.getpid()
    _context["queue"] = queue
    _context["tag"] = f"[{os.getpid()}] {queue}"


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
    _refresh_fast_path()


def reopen() -> None:
    """SIGUSR1: reopen log files after rotation (stderr is left alone)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
            finally:
                handler.release()
    _refresh_fast_path()
