"""Logging to stderr, one line per event, cheap enough for the job hot path.

Every line carries time, level, pid and queue. The stdlib machinery is
kept (handlers, levels, ``log.info("...%s", x)``), but the costly parts are
switched off or cached: no caller lookup (``logging._srcfile``), no thread
or process-name lookups, and the timestamp prefix is formatted once per
second. That keeps one INFO line per job at a few microseconds.
"""
from __future__ import annotations

import logging
import os
import sys
import time

_context = {"pid": os.getpid(), "queue": "master"}


class FastFormatter(logging.Formatter):
    """``2026-12-03 13:22:09.123 INFO [1234] queue: message``."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        msg = record.msg if not record.args else record.msg % record.args
        line = (f"{self._prefix}.{int((created - second) * 1000):03d} {record.levelname} "
                f"[{_context['pid']}] {_context['queue']}: {msg}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(level: str, log_file: str | None = None) -> None:
    """Configure the root logger once, in the master, before any fork."""
    logging._srcfile = None  # skip the frame walk per record
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


def set_context(queue: str) -> None:
    """After a fork: the pid and queue that every line of this process shows."""
    _context["pid"] = os.getpid()
    _context["queue"] = queue


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())


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
