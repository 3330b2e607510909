"""The baseline: a plain Python process doing the least it can with greenstalk.

No supervisor, no decoding, no logging: one connection, ``reserve`` then
``delete``. Run as ``python -m bench.bare MODE HOST PORT TUBE [FIFO]`` (a
process of its own, as a plain worker would be) or called in a child forked
by the bench (the restart baseline). Modes:

* ``drain``: reserve + delete as fast as possible (the throughput ceiling);
* ``stamp``: also write the time ``reserve`` returned to FIFO (latency);
* ``idle``: reserve with the same 5 s server timeout as bbsupervise's
  children, so idle CPU compares like with like.
"""
from __future__ import annotations

import os
import sys
import time

import greenstalk

from workers.runner import RESERVE_TIMEOUT


def serve(mode: str, host: str, port: int, tube: str, fifo: str = "") -> None:
    client: greenstalk.Client[bytes] = greenstalk.Client((host, port), encoding=None,
                                                          watch=tube)
    if mode == "drain":
        while True:
            client.delete(client.reserve())
    elif mode == "stamp":
        fd = os.open(fifo, os.O_WRONLY)
        while True:
            job = client.reserve()
            started = time.monotonic()
            os.write(fd, f"{started!r}\n".encode())
            client.delete(job)
    elif mode == "idle":
        while True:
            try:
                client.delete(client.reserve(RESERVE_TIMEOUT))
            except greenstalk.TimedOutError:
                pass
    else:
        raise ValueError(f"unknown mode {mode!r}")


def argv(mode: str, address: tuple[str, int], tube: str, fifo: str = "") -> list[str]:
    """The command line of a bare worker process."""
    return [sys.executable, "-m", "bench.bare", mode, address[0], str(address[1]), tube,
            fifo]


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4],
          sys.argv[5] if len(sys.argv) > 5 else "")
