"""Shared memory between the master and its children: no I/O, no locks.

Each child has a :class:`StateSlot` (an anonymous shared mapping made by the
master before the fork) where it writes what it is doing: one
``pack_into`` per state change, cheap enough for the job hot path. The
master reads it to name the job a dead child held, to spot hung workers and
for ``status``. :class:`CrashTable` is shared by all: the master records
the ids of jobs whose worker died with them, and every worker marks the
job it runs in flight, so that the next worker to reserve a job whose last
holder failed without counting it checks that attempt (beanstalkd counts
it in ``reserves`` only; see shared/beanstalkd.md section 1).
"""
from __future__ import annotations

import enum
import mmap
import struct
import time
from dataclasses import dataclass


class WorkerState(enum.IntEnum):
    STARTING = 0
    CONNECTING = 1
    IDLE = 2
    BUSY = 3
    DRAINING = 4


# state, job id, job started (monotonic), job deadline (monotonic, 0 = none),
# jobs done, heartbeat (monotonic). CLOCK_MONOTONIC is one clock for every
# process on the host, so the master can compare these with its own time.
_SLOT = struct.Struct("=Q Q d d Q d")


@dataclass(frozen=True)
class Snapshot:
    state: WorkerState
    job_id: int
    job_started: float
    deadline: float
    jobs_done: int
    heartbeat: float


class StateSlot:
    """One child's state, written by the child and read by the master."""

    def __init__(self) -> None:
        self._mm = mmap.mmap(-1, _SLOT.size)  # MAP_SHARED | MAP_ANONYMOUS
        self._pack = _SLOT.pack_into
        self.jobs_done = 0
        self.set(WorkerState.STARTING)

    def set(self, state: WorkerState, job_id: int = 0, started: float = 0.0,
            deadline: float = 0.0) -> None:
        now = time.monotonic()
        self._pack(self._mm, 0, state, job_id, started or now, deadline,
                   self.jobs_done, now)

    def busy(self, job_id: int, started: float, deadline: float = 0.0) -> None:
        self._pack(self._mm, 0, WorkerState.BUSY, job_id, started, deadline,
                   self.jobs_done, started)

    def set_deadline(self, job_id: int, started: float, deadline: float) -> None:
        self._pack(self._mm, 0, WorkerState.BUSY, job_id, started, deadline,
                   self.jobs_done, time.monotonic())

    def idle(self, now: float) -> None:
        self._pack(self._mm, 0, WorkerState.IDLE, 0, now, 0.0, self.jobs_done, now)

    def read(self) -> Snapshot:
        state, job_id, started, deadline, done, beat = _SLOT.unpack_from(self._mm, 0)
        return Snapshot(WorkerState(state), job_id, started, deadline, done, beat)

    def close(self) -> None:
        self._mm.close()


class CrashTable:
    """Ids of jobs that were in hand when their worker died (a ring, master-written).

    The first 8 bytes are a generation counter; a child re-reads the ids only
    when it changed, so the per-job cost is one 8-byte read.
    """

    CAPACITY = 512
    BUCKETS = 16384  # in-flight marks, by job id modulo this (ids are sequential)
    _HEAD = struct.Struct("=Q")
    _MARK = struct.Struct("=Q")

    def __init__(self) -> None:
        self._ring_size = 8 + 8 * self.CAPACITY
        self._mm = mmap.mmap(-1, self._ring_size + 8 * self.BUCKETS)
        self._seen_generation = 0
        self._ids: frozenset[int] = frozenset()

    # The in-flight marks close the race the ring cannot: when a worker dies
    # holding job N, beanstalkd makes N ready at once and an idle sibling
    # may reserve it before the master has even reaped the dead worker. A
    # worker marks N when it starts it and unmarks it when it is done with
    # it; finding its own job already marked means the last holder never
    # finished. One 8-byte read and write per job; a rare collision only
    # loses a mark (the ring still catches the crash when the master reaps).

    def claim(self, job_id: int) -> bool:
        """Mark ``job_id`` in flight; True if it already was (its holder never finished)."""
        offset = self._ring_size + 8 * (job_id % self.BUCKETS)
        (held,) = self._MARK.unpack_from(self._mm, offset)
        self._MARK.pack_into(self._mm, offset, job_id)
        return bool(held == job_id)

    def unclaim(self, job_id: int) -> None:
        offset = self._ring_size + 8 * (job_id % self.BUCKETS)
        (held,) = self._MARK.unpack_from(self._mm, offset)
        if held == job_id:
            self._MARK.pack_into(self._mm, offset, 0)

    def add(self, job_id: int) -> None:
        """Master side: remember that ``job_id`` lost its worker."""
        (generation,) = self._HEAD.unpack_from(self._mm, 0)
        struct.pack_into("=Q", self._mm, 8 + 8 * (generation % self.CAPACITY), job_id)
        self._HEAD.pack_into(self._mm, 0, generation + 1)

    def __contains__(self, job_id: int) -> bool:
        (generation,) = self._HEAD.unpack_from(self._mm, 0)
        if generation != self._seen_generation:
            count = min(generation, self.CAPACITY)
            self._ids = frozenset(struct.unpack_from(f"={count}Q", self._mm, 8))
            self._seen_generation = generation
        return job_id in self._ids
