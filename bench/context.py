"""What every measure works with: the plan, the server, masters and bare workers.

A :class:`Master` is a real ``bbsupervise`` command started from an INI file
(the default config unless a measure says otherwise), its stderr going to a
file as in production. Bare workers are ``python -m bench.bare`` processes.
Both are "ready" when beanstalkd counts all of them waiting in ``reserve``
on their tube.
"""
from __future__ import annotations

import itertools
import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import bare
from bench.procs import Reaper, wait_exit, wait_for
from bench.report import Results
from bench.server import Poller, Server
from workers.wire import tube_name

_TITLE_INDEX = re.compile(r" #(\d+) ")


@dataclass(frozen=True)
class Plan:
    runs: int = 3
    jobs: int = 20_000           # drained per drain run, and put per enqueue run
    latency_samples: int = 500
    restarts: int = 20
    idle_seconds: float = 10.0
    warm_jobs: int = 200         # run by every worker before memory is read
    children: int = 8            # memory, idle cost and stop measures
    busy_seconds: float = 1.0


class Context:
    def __init__(self, plan: Plan, workdir: Path, reaper: Reaper) -> None:
        self.plan, self.workdir, self.reaper = plan, workdir, reaper
        self.results = Results()
        self.server = Server(reaper, workdir)
        self.poller = Poller(self.server)
        self._names = itertools.count(1)

    def name(self, prefix: str) -> str:
        """A fresh queue or tube name, so no run sees another run's counters."""
        return f"{prefix}-{next(self._names)}"

    def bare(self, mode: str, tube: str, count: int,
             fifo: str = "") -> list[subprocess.Popen[bytes]]:
        """``count`` bare worker processes on ``tube`` (see :mod:`bench.bare`)."""
        log = self.workdir / f"{tube}.log"
        return [self.reaper.popen(bare.argv(mode, self.server.address, tube, fifo), log)
                for _ in range(count)]

    def stop_all(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            self.reaper.stop(proc, signal.SIGKILL)


def bbsupervise_argv() -> list[str]:
    script = Path(sys.executable).parent / "bbsupervise"
    return [str(script)] if script.exists() else [sys.executable, "-m", "supervisor"]


class Master:
    """One ``bbsupervise`` with a single queue of ``processes`` children."""

    def __init__(self, ctx: Context, queue: str, processes: int,
                 log_level: str | None = None, log_to_null: bool = False) -> None:
        self.ctx, self.queue, self.processes = ctx, queue, processes
        self.tube = tube_name(queue)
        workdir = ctx.workdir / queue
        workdir.mkdir(parents=True, exist_ok=True)
        lines = ["[supervisor]", f"beanstalk_url = {ctx.server.url}", "imports = bench.jobs"]
        if log_level is not None:
            lines.append(f"log_level = {log_level}")
        lines += ["", f"[queue:{queue}]", f"processes = {processes}", ""]
        config = workdir / "bb.ini"
        config.write_text("\n".join(lines), encoding="utf-8")
        self.log_path = None if log_to_null else workdir / "bbsupervise.log"
        self.proc = ctx.reaper.popen(bbsupervise_argv() + ["-c", str(config)], self.log_path)
        self.seen: set[int] = set()  # every child pid observed, killed if it outlives us

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, n: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(log not kept)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def children(self) -> list[psutil.Process]:
        try:
            found = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        self.ctx.reaper.remember(found)
        self.seen.update(p.pid for p in found)
        return found

    def wait_ready(self, timeout: float = 30.0) -> list[psutil.Process]:
        """Wait until every child is connected and waiting in reserve; return them."""
        def ready() -> list[psutil.Process] | None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bbsupervise exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            if self.ctx.poller.waiting(self.tube) != self.processes:
                return None
            children = self.children()
            return children if len(children) == self.processes else None

        try:
            return wait_for(ready, timeout, f"{self.processes} idle children", 0.005)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log:\n{self.tail()}") from None

    def slot_of(self, child: psutil.Process) -> int:
        """The slot index in a child's title, ``bbsupervise: worker QUEUE #3 idle``."""
        match = _TITLE_INDEX.search(" ".join(child.cmdline()) + " ")
        return int(match.group(1)) if match else 0

    def terminate(self) -> float:
        """SIGTERM the master; seconds until it exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        wait_exit(self.proc, 60)
        elapsed = time.monotonic() - started
        self.stop()
        return elapsed

    def stop(self) -> None:
        self.ctx.reaper.stop(self.proc)
        self.ctx.reaper.kill_strays(self.seen)


class Stamps:
    """Read job start times from a FIFO that jobs and bare workers write to."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        # O_RDWR: the FIFO always has a reader and a writer, so neither side's
        # open() blocks and a writer closing it never gives us EOF.
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.buffer = b""

    def read(self, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError(f"no job start written to {self.path} in {timeout:g} s")
            self.buffer += os.read(self.fd, 4096)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return float(line)

    def close(self) -> None:
        os.close(self.fd)
