"""Every process the bench starts, remembered by pid and stopped by pid.

One :class:`Reaper` owns them all: subprocesses (beanstalkd, bbsupervise
masters, bare workers), children forked from the bench itself, and the
workers of each master as they are seen. ``close()`` runs on every way out
(normal end, exception, Ctrl-C, SIGTERM): TERM, a bounded wait, then KILL,
always by pid, never by name.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 10.0

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.001) -> T:
    """Poll ``predicate`` until it is truthy and return it; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        if interval:
            time.sleep(interval)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Reap ``proc`` the moment it exits (``Popen.wait(timeout)`` polls in up to 50 ms steps)."""
    fd = os.pidfd_open(proc.pid)
    try:
        if not select.select([fd], [], [], timeout)[0]:
            raise TimeoutError(f"pid {proc.pid} still running after {timeout:g} s")
    finally:
        os.close(fd)
    proc.wait()


def bench_env() -> dict[str, str]:
    """The environment of every process started: the repo root importable (bench.jobs)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


class Reaper:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.forked: set[int] = set()
        self.descendants: dict[int, psutil.Process] = {}
        self.started: dict[int, float] = {}  # pid -> create time, of every process seen

    def _note(self, pid: int) -> None:
        try:
            self.started.setdefault(pid, psutil.Process(pid).create_time())
        except psutil.NoSuchProcess:
            pass

    def popen(self, argv: list[str], log: Path | None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session, output to ``log`` (or /dev/null)."""
        out = open(log, "ab") if log is not None else open(os.devnull, "wb")
        with out:
            proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=bench_env(),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        self.procs.append(proc)
        self._note(proc.pid)
        return proc

    def fork(self, target: Callable[[], None]) -> int:
        """Fork a child of the bench that runs ``target`` and never returns here."""
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                target()
            except BaseException:  # noqa: BLE001 - process boundary
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        self.forked.add(pid)
        self._note(pid)
        return pid

    def kill_forked(self, pid: int) -> None:
        """SIGKILL a forked child and reap it."""
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        self.forked.discard(pid)

    def remember(self, procs: Iterable[psutil.Process]) -> None:
        for proc in procs:
            if proc.pid not in self.descendants:
                self.descendants[proc.pid] = proc
                self._note(proc.pid)

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Signal, wait up to STOP_TIMEOUT, then KILL; reaps ``proc``."""
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        if proc in self.procs:
            self.procs.remove(proc)

    def kill_strays(self, pids: Iterable[int] | None = None) -> None:
        """KILL the remembered workers (all, or those of ``pids``) still running."""
        for pid in list(self.descendants if pids is None else pids):
            proc = self.descendants.pop(pid, None)
            try:
                if proc is not None and proc.is_running():  # a reused pid is left alone
                    proc.kill()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                pass

    def close(self) -> None:
        for pid in list(self.forked):
            self.kill_forked(pid)
        for proc in reversed(list(self.procs)):  # masters and workers before beanstalkd
            try:
                self.stop(proc)
            except Exception as exc:  # noqa: BLE001 - keep cleaning up the rest
                print(f"bench: could not stop pid {proc.pid}: {exc}", file=sys.stderr)
        self.kill_strays()
