"""beanstalkd connections: opened after fork, with timeouts, rebuilt on error.

greenstalk has no reconnect and no socket timeout, and any socket error
leaves its ``Client`` unusable (see shared/beanstalkd.md section 3). So a
connection here is cheap to throw away: every error drops the client and
the next use builds a new one, watching the tubes again.
"""
from __future__ import annotations

import logging
import random
import select
import socket
from typing import Iterable
from urllib.parse import urlsplit

import encodings.idna  # noqa: F401  # loaded before fork: a child that dropped
                       # privileges may not be able to read the stdlib any more
import greenstalk

log = logging.getLogger(__name__)

DEFAULT_PORT = 11300
# A reply that takes longer than this means the path or the server is dead.
# Blocking reserves use a shorter server-side timeout, so a live server
# always answers well within it.
REPLY_TIMEOUT = 10.0
# Kernel keepalive: notice a peer that vanished without a FIN within
# KEEPIDLE + KEEPINTVL * KEEPCNT = 10 + 3 * 5 = 25 s even with no traffic.
KEEPALIVE = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}


def parse_url(url: str) -> tuple[str, int]:
    """``beanstalk://HOST[:PORT]`` -> ``(host, port)``; ValueError says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "beanstalk":
        raise ValueError(f"expected beanstalk://HOST:PORT, got {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"expected beanstalk://HOST:PORT, got {url!r}")
    return parts.hostname, port


def _socket(address: tuple[str, int], reply_timeout: float) -> socket.socket:
    sock = socket.create_connection(address, timeout=reply_timeout)
    try:
        # Back to blocking mode with kernel timeouts: Python's own timeout
        # mode costs a poll() before every recv on the job hot path.
        sock.settimeout(None)
        tv = _timeval(reply_timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for name, value in KEEPALIVE.items():
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except BaseException:
        sock.close()
        raise
    return sock


def _timeval(seconds: float) -> bytes:
    import struct

    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))


def open_client(address: tuple[str, int], watch: Iterable[str] = (),
                use: str | None = None,
                reply_timeout: float = REPLY_TIMEOUT) -> greenstalk.Client[bytes]:
    """A new client watching exactly ``watch`` (not ``default``), using ``use``.

    The socket is ours, so it is closed even when the handshake fails:
    greenstalk's constructor leaks its socket if a ``watch`` fails.
    """
    sock = _socket(address, reply_timeout)
    try:
        tubes = list(watch)
        client: greenstalk.Client[bytes] = greenstalk.Client(
            sock, encoding=None, use=use or "default", watch=tubes or "default")
    except BaseException:
        sock.close()
        raise
    return client


def close_quietly(client: greenstalk.Client[bytes] | None) -> None:
    """Close a client that may already be broken."""
    if client is None:
        return
    try:
        client.close()
    except OSError:
        pass


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the connection is unusable and must be rebuilt.

    greenstalk raises built-in ``OSError``s for socket trouble, asserts on a
    truncated reply, and ``UnknownResponseError`` when replies got out of
    step; after any of them the stream cannot be trusted.
    """
    return isinstance(exc, (OSError, AssertionError, greenstalk.UnknownResponseError,
                            ValueError))


class Backoff:
    """Exponential reconnect delays with a cap and full jitter (dramatiq's policy)."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


# -- pipelining on the worker's hot path --------------------------------------
# beanstalkd answers commands on one connection in order, so a worker that
# just finished a job sends "delete" and its next "reserve-with-timeout" in
# one write: one syscall and one server wake-up fewer per job. greenstalk has
# no API for that, so these three use its reader and reply parser directly.


def send_delete_and_reserve(client: greenstalk.Client[bytes], job_id: int,
                            timeout: int) -> None:
    client._sock.sendall(b"delete %d\r\nreserve-with-timeout %d\r\n" % (job_id, timeout))


def read_deleted(client: greenstalk.Client[bytes]) -> None:
    """The reply to the pipelined delete; raises NotFoundError like ``delete``."""
    greenstalk._parse_response(client._reader.readline(), b"DELETED")


def reply_waiting(client: greenstalk.Client[bytes]) -> bool:
    """Whether a reply is already here (in the kernel or in the reader's buffer),
    without waiting for one."""
    sock = client._sock
    if select.select([sock], [], [], 0)[0]:
        return True
    sock.setblocking(False)  # so that peek() returns what is buffered, never waits
    try:
        return bool(client._reader.peek(1))
    except (BlockingIOError, InterruptedError):
        return False
    finally:
        sock.setblocking(True)


def read_reserved(client: greenstalk.Client[bytes]) -> greenstalk.Job[bytes]:
    """The reply to the pipelined reserve; raises TimedOutError like ``reserve``."""
    values = greenstalk._parse_response(client._reader.readline(), b"RESERVED")
    job_id, size = (int(n) for n in values)
    return greenstalk.Job(job_id, client._read_chunk(size))
