"""A loopback TCP proxy that a test can use to break the path to beanstalkd.

Workers are pointed at the proxy instead of the server; the test then
decides what the network does:

* ``cut()``: every current connection is closed abruptly (SO_LINGER 0, so
  both peers get an RST), as when a NAT or firewall drops its state. New
  connections are still accepted and forwarded.
* ``stall()``: nothing is forwarded any more, but every socket stays open,
  as when a path silently drops packets. The kernel keeps accepting new
  connections, so a client's connect() still succeeds; only replies never
  come. This is the case that needs socket timeouts to detect.
* ``resume()``: forward again, including what queued up during the stall.
* ``close()``: stop the thread and close every socket (the fixture does it).

All socket work happens on one background thread with ``select``; the
methods above hand it a command and wait until it is done, so after
``cut()`` returns every connection that existed is already closed.
"""
from __future__ import annotations

import queue
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
COMMAND_TIMEOUT = 5.0


def _abort(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN: the peer sees ECONNRESET, not EOF."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Proxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<upstream_port>, on a daemon thread."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = (LOOPBACK, upstream_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0  # connections accepted so far (written by the thread only)
        self._peer: dict[socket.socket, socket.socket] = {}  # both directions of each pair
        self._downstream: set[socket.socket] = set()  # the accepted (client) side of each pair
        self._stalled = False
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._closed = False
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"proxy:{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"beanstalk://{LOOPBACK}:{self.port}"

    def active(self) -> int:
        """How many client connections are open through the proxy right now."""
        with self._lock:
            return len(self._downstream)

    # -- commands (run on the proxy thread) -------------------------------
    def cut(self) -> None:
        """Close every current connection abruptly (RST to both peers)."""
        self._call(self._cut_all)

    def stall(self) -> None:
        """Stop forwarding; keep every socket open."""
        self._call(lambda: setattr(self, "_stalled", True))

    def resume(self) -> None:
        """Forward again after a stall."""
        self._call(lambda: setattr(self, "_stalled", False))

    def close(self) -> None:
        """Stop the thread and close every socket; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._call(self._cut_all)
            self._call(lambda: None, stop=True)
            self._thread.join(timeout=COMMAND_TIMEOUT)
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _call(self, fn: Callable[[], None], stop: bool = False) -> None:
        done = threading.Event()
        self._commands.put((self._stop if stop else fn, done))
        self._wake_w.send(b"x")
        if not done.wait(COMMAND_TIMEOUT):
            raise AssertionError(f"proxy thread did not answer within {COMMAND_TIMEOUT} s")

    def _stop(self) -> None:
        self._running = False

    # -- the loop ----------------------------------------------------------
    def _run(self) -> None:
        while self._running:
            readable: list[Any] = [self.listener, self._wake_r]
            if not self._stalled:
                readable += list(self._peer)
            ready, _, _ = select.select(readable, [], [], 1.0)
            for sock in ready:
                if sock is self._wake_r:
                    self._run_commands()
                elif sock is self.listener:
                    self._accept()
                elif sock in self._peer and not self._stalled:
                    self._forward(sock)

    def _run_commands(self) -> None:
        try:
            self._wake_r.recv(4096)
        except OSError:
            pass
        while True:
            try:
                fn, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            finally:
                done.set()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        self.accepted += 1
        try:
            server = socket.create_connection(self.upstream, timeout=2.0)
            server.settimeout(None)
        except OSError:
            _abort(client)  # upstream down: the client sees the connection reset
            return
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._peer[client], self._peer[server] = server, client
            self._downstream.add(client)

    def _forward(self, sock: socket.socket) -> None:
        other = self._peer[sock]
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        self._drop(sock, abort=False)  # EOF or error: pass the close on to the other side

    def _drop(self, sock: socket.socket, abort: bool) -> None:
        with self._lock:
            other = self._peer.pop(sock, None)
            if other is not None:
                self._peer.pop(other, None)
            self._downstream.discard(sock)
            self._downstream.discard(other)  # type: ignore[arg-type]
        for s in (sock, other):
            if s is None:
                continue
            if abort:
                _abort(s)
            else:
                s.close()

    def _cut_all(self) -> None:
        for sock in list(self._downstream):
            self._drop(sock, abort=True)


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[int], Proxy]]:
    """Start proxies to a beanstalkd port: ``proxy = tcp_proxy(server.port)``.

    Every proxy started is closed at teardown, even when the test fails.
    """
    proxies: list[Proxy] = []

    def start(upstream_port: int) -> Proxy:
        proxy = Proxy(upstream_port)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()
