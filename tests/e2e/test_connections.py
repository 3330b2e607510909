"""End to end: beanstalkd connections across fork.

Cases C01-C03 (shared/cases/fork-and-connections.md) and issue 2 behaviour 1:
the master holds no beanstalkd socket, each child opens its own connection
after the fork and watches exactly its queue's tube, never `default`.
Checked from both sides: the processes' sockets (psutil, /proc/<pid>/fd) and
beanstalkd's own counters (stats, stats-tube).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import greenstalk
import psutil

from tests.conftest import SupervisorFactory
from tests.support import (  # noqa: I001
    WORKER_TITLE, by_slot,
    Beanstalkd,
    Client,
    Supervisor,
    job_state,
    make_config,
    open_tcp_fds,
    proc_title,
    put_job,
    queue_tube,
    socket_inodes,
    wait_for,
)

JOBS = "tests.jobs"
# The test's own connection uses and watches only this tube, so that it
# never adds to the counts of `default` or of a queue's tube.
PROBE_TUBE = "bbtest-probe"


# --------------------------------------------------------------------------
# local helpers


def probe_client(beanstalkd: Beanstalkd) -> Client[bytes]:
    return beanstalkd.client(use=PROBE_TUBE, watch=PROBE_TUBE)


def tube_stats(client: Client[bytes], tube: str) -> dict[str, Any]:
    """stats-tube on the probe's connection; zeros when the tube does not exist."""
    try:
        return dict(client.stats_tube(tube))
    except greenstalk.NotFoundError:
        return {"current-watching": 0, "current-waiting": 0, "current-jobs-ready": 0}


def watching_by_tube(client: Client[bytes]) -> dict[str, int]:
    """current-watching of every tube, the probe's own watch taken out."""
    counts = {tube: int(tube_stats(client, tube)["current-watching"]) for tube in client.tubes()}
    counts[PROBE_TUBE] = counts.get(PROBE_TUBE, 1) - 1
    return {tube: n for tube, n in counts.items() if n}


def complete_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return text.split("\n")[:-1]


def wait_first_line(path: Path, timeout: float = 10.0) -> list[str]:
    return wait_for(lambda: complete_lines(path)[:1], timeout=timeout, message=f"a line in {path}")[0].split()



def start_pool(
    supervisor_factory: SupervisorFactory, beanstalkd: Beanstalkd, queues: dict[str, int]
) -> tuple[Supervisor, list[psutil.Process]]:
    sup = supervisor_factory(make_config(beanstalkd.url, queues, imports=JOBS))
    return sup, sup.wait_children(sum(queues.values()), timeout=20)


def server_peer_ports(beanstalkd: Beanstalkd) -> set[int]:
    """Remote ports of the connections beanstalkd has accepted (its view of its clients)."""
    return {c[1][1] for c in open_tcp_fds(beanstalkd.pid) if c[1]}


def assert_sockets_sound(sup: Supervisor, children: list[psutil.Process], beanstalkd: Beanstalkd) -> None:
    """The master holds no TCP socket; each child exactly one, to beanstalkd,
    from its own local port; no socket inode is held by two processes."""
    assert open_tcp_fds(sup.pid) == [], f"master holds TCP sockets: {open_tcp_fds(sup.pid)}"
    server = (beanstalkd.host, beanstalkd.port)
    local_ports = []
    for child in children:
        conns = open_tcp_fds(child.pid)
        assert len(conns) == 1 and conns[0][1] == server, f"child {child.pid}: {conns}"
        local_ports.append(conns[0][0][1])
    assert len(set(local_ports)) == len(children), local_ports
    owners: dict[int, int] = {}
    for pid in [sup.pid] + [c.pid for c in children]:
        for inode in socket_inodes(pid):
            assert inode not in owners, f"socket inode {inode} shared by pids {owners[inode]} and {pid}"
            owners[inode] = pid
    # beanstalkd's side: each child's local port is one of its accepted connections
    assert set(local_ports) <= server_peer_ports(beanstalkd)


class SocketSampler(threading.Thread):
    """Looks at a process's TCP sockets every few ms until `stop` is set;
    `found` keeps every non-empty sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.samples = 0
        self.found: list[list[tuple[Any, Any]]] = []

    def run(self) -> None:
        while not self.stop.wait(0.003):  # sampling period, not a synchronisation
            try:
                conns = open_tcp_fds(self.pid)
            except psutil.Error:
                continue
            self.samples += 1
            if conns:
                self.found.append(conns)


def stop_gracefully(sup: Supervisor, seen: list[psutil.Process]) -> None:
    """SIGTERM the master; it exits 0 and has reaped every child (no zombie left)."""
    sup.signal(signal.SIGTERM)
    code = sup.wait_exit(timeout=15)
    assert code == 0, f"exit code {code}; last lines:\n{sup.tail()}"
    left = [p.pid for p in seen if p.is_running()]
    assert not left, f"children still present (running or zombie): {left}"


# --------------------------------------------------------------------------
# cases


def test_c01_two_queues_each_job_reserved_at_once_by_its_own_queues_child(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given two queues a and b with one child each
    sup, children = start_pool(supervisor_factory, beanstalkd, {"a": 1, "b": 1})
    slots = by_slot(sup)
    probe = probe_client(beanstalkd)

    # When a job goes on b, then 3 s later one on a
    put_at = time.monotonic()
    put_job(probe, "b", f"{JOBS}.record", [str(tmp_path / "b"), "b"])
    b_pid, _ = wait_first_line(tmp_path / "b")
    b_latency = time.monotonic() - put_at
    time.sleep(3)  # sync-ok: the case's idle gap between the two jobs, not a wait for an event
    put_at = time.monotonic()
    put_job(probe, "a", f"{JOBS}.record", [str(tmp_path / "a"), "a"])
    a_pid, _ = wait_first_line(tmp_path / "a")
    a_latency = time.monotonic() - put_at

    # Then each is taken at once (not after a reserve timeout), by its own queue's child
    assert (int(a_pid), int(b_pid)) == (slots["a #1"].pid, slots["b #1"].pid)
    assert b_latency < 0.5 and a_latency < 0.5, (b_latency, a_latency)

    # ... each tube has exactly one watcher, and no other tube (`default`
    # included) has any: each child's one connection watches exactly its tube
    assert watching_by_tube(probe) == {queue_tube("a"): 1, queue_tube("b"): 1}
    assert_sockets_sound(sup, children, beanstalkd)
    stop_gracefully(sup, children)


def test_c02_master_never_holds_a_socket_across_100_child_recycles(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory
) -> None:
    # Given a pool of 10 idle children, and the master's TCP sockets sampled
    # every few ms from its start to the end of the test
    sup = supervisor_factory(make_config(beanstalkd.url, {"q": 10}, imports=JOBS))
    sampler = SocketSampler(sup.pid)
    sampler.start()
    children = sup.wait_children(10, timeout=20)
    probe = probe_client(beanstalkd)
    assert_sockets_sound(sup, children, beanstalkd)
    seen = list(children)
    try:
        recycle_100_times(sup, children, beanstalkd, seen)
    finally:
        sampler.stop.set()
        sampler.join(timeout=5)

    # ... and no sample, from the master's start on, ever showed it a TCP socket
    assert sampler.samples > 50, sampler.samples
    assert sampler.found == [], sampler.found[:3]

    # ... after 100 recycles each child still has one connection, and beanstalkd
    # sees exactly 10 of them plus the probe and the stats connection
    assert sum("exited with status 0" in ln for ln in sup.lines()) == 100
    assert not [ln for ln in sup.lines() if "keeps dying" in ln]
    assert watching_by_tube(probe) == {queue_tube("q"): 10}
    wait_for(lambda: beanstalkd.stats()["current-connections"] == 12, timeout=5,
             message=lambda: f"connections: {beanstalkd.stats()['current-connections']}")
    stop_gracefully(sup, seen)


def recycle_100_times(sup: Supervisor, children: list[psutil.Process], beanstalkd: Beanstalkd,
                      seen: list[psutil.Process]) -> None:
    """C02's When/Then: 10 rounds of SIGTERM to each of the 10 children."""
    # When every child is recycled 10 times (SIGTERM: it exits 0 and is replaced)
    for _ in range(10):
        old = {c.pid for c in children}
        for child in children:
            os.kill(child.pid, signal.SIGTERM)

        def replaced() -> list[psutil.Process] | None:
            now = sup.children()
            if len(now) != 10 or old & {c.pid for c in now}:
                return None
            try:
                return now if all(proc_title(c).endswith(" idle") for c in now) else None
            except psutil.Error:
                return None

        children = wait_for(replaced, timeout=10, message=lambda: f"{sup.titles()}\n{sup.tail(10)}")
        seen += children
        # Then at every turn the master holds no socket and no child shares one
        assert_sockets_sound(sup, children, beanstalkd)


def test_c03_sigkill_child_mid_job_returns_job_to_ready_within_1s_not_after_ttr(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given one child busy with a 30 s job whose TTR is 120 s
    sup, children = start_pool(supervisor_factory, beanstalkd, {"q": 1})
    probe = probe_client(beanstalkd)
    trace = tmp_path / "trace"
    job_id = put_job(probe, "q", f"{JOBS}.sleep_then_record", [str(trace), 30], ttr=120)
    _, pid = wait_first_line(trace)
    assert int(pid) == children[0].pid
    # (the tube is paused so that the refilled child cannot take the job
    # again: its `ready` state stays observable)
    probe.pause_tube(queue_tube("q"), 60)

    # When the child is SIGKILLed
    killed_at = time.monotonic()
    os.kill(children[0].pid, signal.SIGKILL)

    # Then the job is ready again within 1 s, released by the closed socket,
    # not by a TTR timeout
    state = wait_for(lambda: (s := job_state(probe, job_id)) and s["state"] == "ready" and s,
                     timeout=5, interval=0.005, message=lambda: str(job_state(probe, job_id)))
    assert time.monotonic() - killed_at < 1.0
    assert (state["timeouts"], state["reserves"]) == (0, 1), state
    sup.wait_for_line(re.compile(rf"pid={pid} killed by signal SIGKILL while busy with job id={job_id}"))

    # ... and the slot is refilled by a new child with its own connection
    new = sup.wait_children(1)
    assert new[0].pid != children[0].pid and proc_title(new[0]) == "bbsupervise: worker q #1 idle"
    assert_sockets_sound(sup, new, beanstalkd)
    probe.delete(job_id)
    stop_gracefully(sup, children + new)


def test_issue2_b1_master_holds_no_socket_children_watch_only_their_tube(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory
) -> None:
    # Given a probe connection and two queues: a with 2 children, b with 1
    probe = probe_client(beanstalkd)
    baseline = beanstalkd.stats()["current-connections"]  # the probe and this query
    sup, children = start_pool(supervisor_factory, beanstalkd, {"a": 2, "b": 1})

    # Then the master holds no beanstalkd (or any TCP) socket; each child has
    # exactly one connection of its own, which beanstalkd accepted
    assert_sockets_sound(sup, children, beanstalkd)
    wait_for(lambda: beanstalkd.stats()["current-connections"] == baseline + 3, timeout=5,
             message=lambda: f"connections {beanstalkd.stats()['current-connections']}, baseline {baseline}")

    # ... and watches exactly its queue's tube: `default` has no watcher
    assert watching_by_tube(probe) == {queue_tube("a"): 2, queue_tube("b"): 1}
    assert tube_stats(probe, "default")["current-watching"] == 0
    for child in children:
        queue = WORKER_TITLE.match(proc_title(child)).group(1)  # type: ignore[union-attr]
        sup.wait_for_line(f"[{child.pid}] {queue}: connected to 127.0.0.1:{beanstalkd.port}, "
                          f"watching {queue_tube(queue)}", timeout=1)
    stop_gracefully(sup, children)
