"""The master's control socket: ``bbsupervise status`` and ``bbsupervise ctl``.

A Unix stream socket, one JSON request line and one JSON reply line per
connection. The listening socket is non-blocking and sits in the master's
``select`` beside the signal pipe; an accepted connection gets a short
timeout, so a stuck client costs the master at most ``CLIENT_TIMEOUT``.
The socket file is mode 0600: only its owner may steer the pool.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
from typing import Any, Callable

log = logging.getLogger(__name__)

CLIENT_TIMEOUT = 0.5
MAX_REQUEST = 64 * 1024        # what the master reads from a client
MAX_REPLY = 64 * 1024 * 1024   # what a client reads (a status of 1,000s of workers)


def default_path(config_path: str) -> str:
    """Where master and ``ctl`` meet when ``control_socket`` is not set."""
    digest = hashlib.sha1(os.path.realpath(config_path).encode()).hexdigest()[:12]
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"bbsupervise-{digest}.sock")


def socket_path(config: Any) -> str:
    return config["control_socket"] or default_path(config.path)


class SocketInUse(OSError):
    """Another master answers on this control socket."""


class ControlServer:
    """Accepts one request per connection and answers it through ``handle``."""

    def __init__(self, path: str, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.path, self.handle = path, handle
        self._remove_stale()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        except OSError:
            self.sock.close()
            raise
        finally:
            os.umask(old)
        self.sock.listen(16)
        self.sock.setblocking(False)
        os.set_inheritable(self.sock.fileno(), False)

    def _remove_stale(self) -> None:
        """A socket file nobody listens on is left from a crash; one in use is an error."""
        if not os.path.exists(self.path):
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)
            return
        finally:
            probe.close()
        raise SocketInUse(f"control socket {self.path} is in use: is another master running "
                          "with this config?")

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve_ready(self) -> None:
        """Answer every pending connection (called when select says readable)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT)
        try:
            request = json.loads(_read_line(conn))
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            reply = self.handle(request)
        except (OSError, ValueError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        try:
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as exc:
            log.warning("control client went away: %s", exc)

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _read_line(conn: socket.socket, limit: int = MAX_REQUEST) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while not chunks or not chunks[-1].endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ValueError("message too long")
    return b"".join(chunks)


def request(path: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Client side: send one request to the master, return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(payload).encode() + b"\n")
        try:
            reply = json.loads(_read_line(sock, MAX_REPLY) or b"{}")
        except TimeoutError:
            raise TimeoutError(f"no reply from the master within {timeout:g} s; it may "
                               "still carry the request out") from None
    if not isinstance(reply, dict):
        raise ValueError("bad reply from master")
    return reply
