"""The bench's own beanstalkd, and how the bench watches and fills it.

beanstalkd is the referee of every measure: ``current-waiting`` of a tube
says how many connections sit in ``reserve`` on it (connected, watching and
idle), ``cmd-delete`` how many jobs were finished, and ``total-connections``
(cumulative) that a new worker has connected. A paused tube
(``pause-tube``) lets the bench fill it and get the workers ready before
the clock starts; ``pause-tube <tube> 0`` starts the race.
"""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import greenstalk
import psutil

from bench.procs import Reaper, wait_for

LOOPBACK = "127.0.0.1"
FILL_BATCH = 500  # pipelined puts per write: the fill is set-up, not measured


class Server:
    """``beanstalkd -l 127.0.0.1 -p 0``: the kernel picks the port, read back with psutil."""

    def __init__(self, reaper: Reaper, workdir: Path) -> None:
        self.proc = reaper.popen(["beanstalkd", "-l", LOOPBACK, "-p", "0"],
                                 log=workdir / "beanstalkd.log")
        self.port = wait_for(self._listening_port, timeout=10, what="beanstalkd to listen")
        self.address = (LOOPBACK, self.port)
        self.url = f"beanstalk://{LOOPBACK}:{self.port}"
        self.version = subprocess.run(["beanstalkd", "-v"], capture_output=True,
                                      text=True).stdout.strip()

    def _listening_port(self) -> int | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"beanstalkd exited with status {self.proc.returncode}")
        for conn in psutil.Process(self.proc.pid).net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                return int(conn.laddr.port)
        return None

    def client(self, **kwargs: Any) -> greenstalk.Client[bytes]:
        return greenstalk.Client(self.address, encoding=None, **kwargs)


class Poller:
    """One long-lived connection for stats, so polling never opens connections."""

    def __init__(self, server: Server) -> None:
        self.client = server.client()

    def tube(self, tube: str) -> dict[str, Any]:
        try:
            return dict(self.client.stats_tube(tube))
        except greenstalk.NotFoundError:  # a tube nobody uses, watches or fills is gone
            return {"current-waiting": 0, "cmd-delete": 0, "current-jobs-ready": 0}

    def waiting(self, tube: str) -> int:
        return int(self.tube(tube)["current-waiting"])

    def deleted(self, tube: str) -> int:
        return int(self.tube(tube)["cmd-delete"])

    def total_connections(self) -> int:
        return int(self.client.stats()["total-connections"])

    def wait_waiting(self, tube: str, count: int, timeout: float = 30.0,
                     interval: float = 0.001) -> None:
        wait_for(lambda: self.waiting(tube) == count, timeout,
                 f"{count} connections waiting in reserve on {tube}", interval)

    def unpause(self, tube: str) -> None:
        self.client.pause_tube(tube, 0)  # 0 becomes 1 ns: unpaused at the next tick

    def close(self) -> None:
        self.client.close()


def fill(address: tuple[str, int], tube: str, body: bytes, count: int,
         pause: int = 0) -> None:
    """Put ``count`` copies of ``body`` on ``tube``, first pausing it for ``pause`` s."""
    put = b"put 65536 0 120 %d\r\n%s\r\n" % (len(body), body)
    with socket.create_connection(address) as sock, sock.makefile("rb") as replies:
        sock.sendall(f"use {tube}\r\n".encode())
        _expect(replies, b"USING")
        if pause:
            sock.sendall(f"pause-tube {tube} {pause}\r\n".encode())
            _expect(replies, b"PAUSED")
        for start in range(0, count, FILL_BATCH):
            n = min(FILL_BATCH, count - start)
            sock.sendall(put * n)
            for _ in range(n):
                _expect(replies, b"INSERTED")


def _expect(replies: Any, status: bytes) -> None:
    line = replies.readline()
    if not line.startswith(status):
        raise RuntimeError(f"beanstalkd replied {line!r}, expected {status.decode()}")
