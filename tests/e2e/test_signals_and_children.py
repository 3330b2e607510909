"""End to end: signals to the master, graceful and immediate stops, dead children.

Cases C05-C09 (shared/cases/shutdown-and-signals.md), C12-C13
(shared/cases/children-and-restarts.md) and issue 2 behaviours 3, 4, 5 and 6,
each against a real beanstalkd and the real `bbsupervise` command. Every wait
is on an event (a file a job writes, a pid gone, a log line, a title).
"""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from tests.conftest import SupervisorFactory
from tests.support import (  # noqa: I001
    by_slot,
    Beanstalkd,
    Supervisor,
    job_state,
    make_config,
    proc_title,
    put_job,
    queue_tube,
    wait_for,
)

Q = "q"
TUBE = queue_tube(Q)
JOBS = "tests.jobs"


# --------------------------------------------------------------------------
# local helpers


def complete_lines(path: Path) -> list[str]:
    """Lines a job wrote to `path` (only whole lines; none if it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return text.split("\n")[:-1]


def wait_mark(path: Path, word: str, count: int = 1, timeout: float = 10.0) -> list[str]:
    """Wait until `count` lines of `path` start with `word`; return the fields of the last one."""

    def check() -> list[str] | None:
        found = [line.split() for line in complete_lines(path) if line.split()[:1] == [word]]
        return found[count - 1] if len(found) >= count else None

    return wait_for(check, timeout=timeout, message=lambda: f"{count} {word!r} in {path}: {complete_lines(path)}")


def marks(path: Path, word: str) -> list[list[str]]:
    return [line.split() for line in complete_lines(path) if line.split()[:1] == [word]]



def reaped(proc: psutil.Process) -> bool:
    """Gone altogether: neither running nor a zombie (is_running also guards pid reuse)."""
    return not proc.is_running()


def exited(proc: psutil.Process) -> bool:
    """Gone or a zombie: for orphans whose new parent (PID 1 here) may not reap them."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def is_zombie(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def session_processes(sid: int) -> list[psutil.Process]:
    """Every live (non-zombie) process in the session the master led: children,
    grandchildren and orphans all keep the session id of start_new_session."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != sid and os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (OSError, psutil.Error):
            pass
    return found


def titled_bbsupervise(proc: psutil.Process) -> bool:
    try:
        return proc_title(proc).startswith("bbsupervise:")
    except psutil.Error:
        return False


def stop_gracefully(sup: Supervisor, seen: list[psutil.Process], timeout: float = 15.0) -> None:
    """SIGTERM the master; it exits 0 and every process it ever had is reaped."""
    sup.signal(signal.SIGTERM)
    code = sup.wait_exit(timeout=timeout)
    assert code == 0, f"exit code {code}; last lines:\n{sup.tail()}"
    assert_nothing_left(sup, seen)


def assert_nothing_left(sup: Supervisor, seen: list[psutil.Process]) -> None:
    """After the master exited: every pid it had is reaped (no zombie) and its session is empty."""
    left = [p.pid for p in seen if not reaped(p)]
    assert not left, f"children still present (running or zombie): {left}"
    strays = session_processes(sup.pid)
    assert not strays, f"processes left in the master's session: {[(p.pid, p.cmdline()) for p in strays]}"


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1}


def blocked_signals(pid: int) -> set[int]:
    """The signals in /proc/<pid>/status SigBlk (a hex mask, bit n-1 = signal n)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError(f"no SigBlk for pid {pid}")


def log_time(line: str) -> float:
    """Seconds since the epoch from a log line's `YYYY-mm-dd HH:MM:SS.mmm` prefix."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()


def start_pool(
    supervisor_factory: SupervisorFactory, beanstalkd: Beanstalkd,
    queues: dict[str, int | dict[str, int]], **keys: object
) -> tuple[Supervisor, list[psutil.Process]]:
    sup = supervisor_factory(make_config(beanstalkd.url, queues, imports=JOBS, **keys))
    total = sum(q if isinstance(q, int) else q["processes"] for q in queues.values())
    return sup, sup.wait_children(total, timeout=20)


# --------------------------------------------------------------------------
# shutdown and signals


def test_c05_sigterm_during_3s_job_finishes_it_and_exits_0(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a pool of 2 whose child runs a 3 s job (in a grandchild `sleep`)
    sup, children = start_pool(supervisor_factory, beanstalkd, {Q: 2}, graceful_timeout=30)
    client = beanstalkd.client()
    trace = tmp_path / "trace"
    job_id = put_job(client, Q, f"{JOBS}.sleep_in_grandchild", [str(trace), 3])
    _, worker_pid, grandchild_pid = wait_mark(trace, "start")
    grandchild = psutil.Process(int(grandchild_pid))

    # When the master gets SIGTERM while the job runs
    sup.signal(signal.SIGTERM)
    code = sup.wait_exit(timeout=15)

    # Then the job completed and was deleted, the master exited 0, and no
    # child, grandchild or zombie remains; nothing is reserved
    assert code == 0, sup.tail()
    assert marks(trace, "end") == [["end", worker_pid]]
    assert re.search(rf"job {JOBS}.sleep_in_grandchild id={job_id} completed", "\n".join(sup.lines()))
    assert job_state(client, job_id) is None
    assert beanstalkd.stats_tube(TUBE)["current-jobs-reserved"] == 0
    assert_nothing_left(sup, children + [grandchild])


def test_c06_sigterm_with_8_idle_children_all_gone_within_a_second(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory
) -> None:
    # Given 8 idle children, all waiting in a reserve
    sup, children = start_pool(supervisor_factory, beanstalkd, {Q: 8})
    wait_for(lambda: beanstalkd.stats_tube(TUBE)["current-waiting"] == 8, timeout=10)

    # When the master gets SIGTERM
    started = time.monotonic()
    sup.signal(signal.SIGTERM)

    # Then all 8 are reaped within about a second (none sits in a blocking
    # reserve), the master exits 0, and beanstalkd sees no one waiting
    wait_for(lambda: all(reaped(c) for c in children), timeout=1.5,
             message=lambda: f"children still there after TERM; last lines:\n{sup.tail()}")
    elapsed = time.monotonic() - started
    assert sup.wait_exit(timeout=5) == 0, sup.tail()
    assert elapsed < 1.5
    assert beanstalkd.stats_tube(TUBE)["current-waiting"] == 0
    assert beanstalkd.stats_tube(TUBE)["current-watching"] == 0
    assert_nothing_left(sup, children)


def test_c07_job_ignoring_sigterm_is_killed_after_graceful_timeout_and_job_is_ready(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a job that ignores SIGTERM and blocks for 60 s, graceful_timeout 2 s
    sup, children = start_pool(supervisor_factory, beanstalkd, {Q: 1}, graceful_timeout=2)
    client = beanstalkd.client()
    trace = tmp_path / "trace"
    job_id = put_job(client, Q, f"{JOBS}.ignore_term", [str(trace), 60])
    _, worker_pid = wait_mark(trace, "start")

    # When the master gets SIGTERM
    started = time.monotonic()
    sup.signal(signal.SIGTERM)
    code = sup.wait_exit(timeout=15)
    elapsed = time.monotonic() - started

    # Then the child is killed once graceful_timeout expires (not before, not
    # much after), the master exits 0 (issue 2, behaviour 5) and the job is
    # ready again, never finished
    assert code == 0, sup.tail()
    assert 1.8 <= elapsed < 6, elapsed
    sup.wait_for_line("graceful_timeout expired", timeout=1)
    sup.wait_for_line(re.compile(rf"pid={worker_pid} killed by signal SIGKILL"), timeout=1)
    assert marks(trace, "end") == []
    state = job_state(client, job_id)
    assert state is not None and state["state"] == "ready", state
    assert_nothing_left(sup, children)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_c08_second_stop_signal_during_drain_stops_at_once(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path, second: int
) -> None:
    # Given a draining master (graceful_timeout 30 s) whose child holds a 60 s
    # job running in a grandchild process
    sup, children = start_pool(supervisor_factory, beanstalkd, {Q: 2}, graceful_timeout=30)
    client = beanstalkd.client()
    trace = tmp_path / "trace"
    job_id = put_job(client, Q, f"{JOBS}.sleep_in_grandchild", [str(trace), 60])
    grandchild = psutil.Process(int(wait_mark(trace, "start")[2]))
    sup.signal(signal.SIGTERM)
    sup.wait_for_line("graceful stop")

    # When a second TERM (or INT) arrives
    started = time.monotonic()
    sup.signal(second)
    code = sup.wait_exit(timeout=10)

    # Then everything stops at once: the master exits by itself (not by a
    # signal's default action) within a couple of seconds, the job's
    # grandchild is killed with it, the job was not finished and is ready
    # again, and nothing is left
    assert time.monotonic() - started < 2.5, sup.tail()
    assert code >= 0, f"master died of signal {-code}"
    wait_for(lambda: exited(grandchild), timeout=1, message="the job's grandchild to be killed")
    assert marks(trace, "end") == []
    state = job_state(client, job_id)
    assert state is not None and state["state"] == "ready", state
    assert_nothing_left(sup, children)


def test_c09_kill9_master_idle_children_exit_busy_one_after_its_job(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    """Also issue 2, behaviour 6."""
    # Given 3 children, one busy with a job the test controls, and the number
    # of beanstalkd connections before the pool started
    client = beanstalkd.client()
    baseline = beanstalkd.stats()["current-connections"]
    sup, children = start_pool(supervisor_factory, beanstalkd, {Q: 3})
    trace, release = tmp_path / "trace", tmp_path / "release"
    job_id = put_job(client, Q, f"{JOBS}.block_until", [str(trace), str(release)])
    busy_pid = int(wait_mark(trace, "start")[1])
    busy = next(c for c in children if c.pid == busy_pid)
    idle = [c for c in children if c.pid != busy_pid]

    # When the master is killed with SIGKILL
    os.kill(sup.pid, signal.SIGKILL)
    # (proc.wait, not wait_exit: the children still hold the output pipes open)
    assert sup.proc.wait(timeout=5) == -signal.SIGKILL

    # Then the idle children exit at once, while the busy one keeps its job
    wait_for(lambda: all(exited(c) for c in idle), timeout=1.5,
             message=lambda: f"idle children after master SIGKILL: {[(c.pid, exited(c)) for c in idle]}")
    assert not exited(busy), "the busy child died with its job in hand"
    assert marks(trace, "end") == []

    # ... and exits after finishing (and deleting) it
    release.touch()
    wait_for(lambda: exited(busy), timeout=5, message="busy child to exit after its job")
    assert marks(trace, "end") == [["end", str(busy_pid)]]
    assert job_state(client, job_id) is None

    # none is left with a bbsupervise title, and their connections are closed
    assert not [p.pid for p in session_processes(sup.pid) if titled_bbsupervise(p)]
    wait_for(lambda: beanstalkd.stats()["current-connections"] == baseline, timeout=5,
             message=lambda: f"connections {beanstalkd.stats()['current-connections']} != {baseline}")
    assert beanstalkd.stats_tube(TUBE)["current-watching"] == 0


# --------------------------------------------------------------------------
# dead children and restarts


def test_c12_sigkill_one_busy_child_refills_only_its_slot(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given 3 children on q and 1 on r, one q child busy with a job
    sup, _ = start_pool(supervisor_factory, beanstalkd, {Q: 3, "r": 1})
    before = by_slot(sup)
    client = beanstalkd.client()
    trace = tmp_path / "trace"
    job_id = put_job(client, Q, f"{JOBS}.block_until", [str(trace), str(tmp_path / "never")])
    victim_pid = int(wait_mark(trace, "start")[1])
    victim_slot = next(slot for slot, p in before.items() if p.pid == victim_pid)
    # (q is paused so that the job the kill returns to ready stays there
    # until the test deletes it, instead of blocking another child)
    client.pause_tube(TUBE, 60)

    # When that child is SIGKILLed
    os.kill(victim_pid, signal.SIGKILL)

    # Then the log names the pid, the queue, the signal and the job id
    line = sup.wait_for_line(re.compile(rf"pid={victim_pid} killed by signal SIGKILL"))
    assert f"worker {victim_slot} pid={victim_pid}" in line and f"job id={job_id}" in line, line

    # ... only that slot is refilled: the siblings keep their pids
    def refilled() -> dict[str, psutil.Process] | None:
        now = by_slot(sup)
        return now if set(now) == set(before) and now[victim_slot].pid != victim_pid else None

    after = wait_for(refilled, timeout=5, message=lambda: f"slots {by_slot(sup)}")
    assert {s: p.pid for s, p in after.items() if s != victim_slot} == \
           {s: p.pid for s, p in before.items() if s != victim_slot}
    children = sup.wait_children(4)
    assert job_state(client, job_id)["state"] == "ready"  # type: ignore[index]
    client.delete(job_id)
    client.pause_tube(TUBE, 0)

    # ... and every child, siblings included, keeps working: one job per
    # waiting child, each taken by a different one
    done = tmp_path / "done"
    for queue, count in ((Q, 3), ("r", 1)):
        for _ in range(count):
            put_job(client, queue, f"{JOBS}.sleep_then_record", [str(done), 0.3])
    wait_mark(done, "end", count=4)
    assert {int(pid) for _, pid in marks(done, "end")} == {c.pid for c in children}
    stop_gracefully(sup, list(before.values()) + children)


def test_c13_sigkill_50_children_at_once_all_reaped_and_refilled_within_2s(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory
) -> None:
    # Given 50 idle children
    sup, children = start_pool(supervisor_factory, beanstalkd, {Q: 50})
    old = {c.pid for c in children}

    # When all 50 are SIGKILLed at once
    for child in children:
        os.kill(child.pid, signal.SIGKILL)

    # Then within 2 s no child of the master is a zombie and every slot has a new child
    def refilled() -> bool:
        now = sup.children()
        if any(is_zombie(c) for c in now):
            return False
        slots = by_slot(sup)
        return (len(now) == 50 and set(slots) == {f"{Q} #{i}" for i in range(1, 51)}
                and not old & {p.pid for p in slots.values()})

    wait_for(refilled, timeout=2.0, message=lambda: f"{len(sup.children())} children; {sup.tail(5)}")
    assert all(reaped(c) for c in children)
    new = sup.wait_children(50, timeout=10)
    stop_gracefully(sup, children + new)


# --------------------------------------------------------------------------
# issue 2: titles, restarts, signals


def test_issue2_b3_process_titles_for_master_idle_and_busy_workers(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a pool with 2 children on q and 1 on r
    sup, children = start_pool(supervisor_factory, beanstalkd, {Q: 2, "r": 1})

    # Then the master's title names its config; idle children name queue and slot
    master_title = proc_title(psutil.Process(sup.pid))
    assert master_title.startswith(f"bbsupervise: master [{sup.config_path}] "), master_title
    assert sorted(sup.titles()) == [
        "bbsupervise: worker q #1 idle", "bbsupervise: worker q #2 idle", "bbsupervise: worker r #1 idle"]

    # When a child is busy with a job
    client = beanstalkd.client()
    trace, release = tmp_path / "trace", tmp_path / "release"
    job_id = put_job(client, "r", f"{JOBS}.block_until", [str(trace), str(release)])
    wait_mark(trace, "start")

    # Then its title carries the job name and id
    busy = next(c for c in children if "worker r #1" in proc_title(c))
    title = proc_title(busy)
    assert title.startswith("bbsupervise: worker r #1 "), title
    assert f"{JOBS}.block_until" in title and re.search(rf"\b{job_id}\b", title), title

    # ... and is idle again once the job is done
    release.touch()
    wait_for(lambda: proc_title(busy) == "bbsupervise: worker r #1 idle", timeout=5,
             message=lambda: proc_title(busy))
    stop_gracefully(sup, children)


def test_issue2_b4_dead_child_replaced_and_slot_that_keeps_dying_backs_off(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given one child on q (and a healthy queue r), and a job that os._exit(3)s
    # its worker on each of its 4 allowed attempts (max_job_retries = 3)
    sup, first = start_pool(supervisor_factory, beanstalkd,
                            {Q: {"processes": 1, "max_job_retries": 3}, "r": 1})
    client = beanstalkd.client()
    attempts = tmp_path / "attempts"
    job_id = put_job(client, Q, f"{JOBS}.exit_hard", [str(attempts)])

    # When the job kills worker after worker, until it is buried
    wait_for(lambda: (job_state(client, job_id) or {}).get("state") == "buried", timeout=15,
             message=lambda: f"job {job_id} buried; last lines:\n{sup.tail()}")

    # Then each dead child is logged with its pid, queue and exit status, and replaced
    pids = [int(pid) for _, pid in marks(attempts, "attempt")]
    assert len(pids) == 4 and len(set(pids)) == 4, pids
    lines = sup.lines()
    deaths = []
    for pid in pids:
        found = [ln for ln in lines if re.search(rf"worker {Q} #1 pid={pid} exited with status 3\b", ln)]
        assert len(found) == 1, f"no death line for pid {pid}:\n{sup.tail()}"
        deaths.append(found[0])
    spawns = [ln for ln in lines if f"spawned worker {Q} #1 pid=" in ln]
    assert len(spawns) == 5, spawns  # the first child and 4 replacements

    # ... and the slot is restarted with a growing delay, announced in the log
    delays = [float(m.group(1)) for ln in lines
              if (m := re.search(rf"worker {Q} #1 keeps dying: restarting in ([\d.]+) s", ln))]
    assert len(delays) == 3, f"back-off lines: {delays}\n{sup.tail()}"
    assert all(a < b for a, b in zip(delays, delays[1:])), delays
    gaps = [log_time(spawn) - log_time(death) for death, spawn in zip(deaths, spawns[1:])]
    assert gaps[0] < 0.5, gaps  # a single failure is replaced at once
    for gap, delay in zip(gaps[1:], delays):
        assert gap >= delay - 0.06, (gaps, delays)  # the log rounds to 0.1 s
    stop_gracefully(sup, first + sup.wait_children(2))


def test_issue2_b5_children_in_own_process_group_and_ctrl_c_drains_like_term(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given 3 children, one busy with a job the test controls
    sup, children = start_pool(supervisor_factory, beanstalkd, {Q: 3}, graceful_timeout=30)
    client = beanstalkd.client()
    trace, release = tmp_path / "trace", tmp_path / "release"
    job_id = put_job(client, Q, f"{JOBS}.block_until", [str(trace), str(release)])
    busy_pid = int(wait_mark(trace, "start")[1])
    busy = next(c for c in children if c.pid == busy_pid)

    # Then every child leads its own process group, apart from the master's,
    # and neither the master nor a child is left with a stop signal blocked
    # (they are blocked only around fork)
    master_pgid = os.getpgid(sup.pid)
    for child in children:
        assert os.getpgid(child.pid) == child.pid != master_pgid
    for pid in [sup.pid] + [c.pid for c in children]:
        assert not blocked_signals(pid) & STOP_SIGNALS, (pid, blocked_signals(pid))

    # When a terminal's Ctrl-C hits the master's process group (SIGINT)
    os.killpg(master_pgid, signal.SIGINT)

    # Then it drains like TERM: idle children leave at once, the busy one keeps going
    wait_for(lambda: all(reaped(c) for c in children if c is not busy), timeout=1.5,
             message=lambda: sup.tail())
    assert busy.is_running() and not is_zombie(busy)
    assert marks(trace, "end") == []

    # ... finishes and deletes its job, and the master exits 0
    release.touch()
    assert sup.wait_exit(timeout=10) == 0, sup.tail()
    assert marks(trace, "end") == [["end", str(busy_pid)]]
    assert job_state(client, job_id) is None
    assert_nothing_left(sup, children)


def test_issue2_b5_sigquit_stops_at_once(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given 2 children, one busy with a 60 s job in a grandchild, graceful_timeout 30 s
    sup, children = start_pool(supervisor_factory, beanstalkd, {Q: 2}, graceful_timeout=30)
    client = beanstalkd.client()
    trace = tmp_path / "trace"
    job_id = put_job(client, Q, f"{JOBS}.sleep_in_grandchild", [str(trace), 60])
    grandchild = psutil.Process(int(wait_mark(trace, "start")[2]))

    # When the master gets SIGQUIT
    started = time.monotonic()
    sup.signal(signal.SIGQUIT)
    code = sup.wait_exit(timeout=10)

    # Then it stops at once, by itself (not QUIT's default core dump), the
    # job's grandchild killed too, the job unfinished and ready again, nothing left
    assert time.monotonic() - started < 2.5, sup.tail()
    assert code >= 0, f"master died of signal {-code}"
    wait_for(lambda: exited(grandchild), timeout=1, message="the job's grandchild to be killed")
    assert marks(trace, "end") == []
    assert job_state(client, job_id)["state"] == "ready"  # type: ignore[index]
    assert_nothing_left(sup, children)


def test_issue2_b5_hup_usr1_usr2_ttin_ttou_do_not_kill_the_master(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory
) -> None:
    """Also case C11."""
    # Given a running pool of 2
    sup, children = start_pool(supervisor_factory, beanstalkd, {Q: 2})
    seen = list(children)

    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):
        # When the master gets the signal
        spawned = sum("spawned worker" in ln for ln in sup.lines())
        sup.signal(sig)

        # Then it is still alive and serving: slot #1's child, stopped after
        # the signal was sent, is replaced, which the master can only do once
        # it has taken the (already pending) signal without dying or stopping
        # (TTIN/TTOU may change the count; slot #1 is wanted either way)
        victim = wait_for(lambda: by_slot(sup).get(f"{Q} #1"), timeout=5, message=lambda: str(sup.titles()))
        os.kill(victim.pid, signal.SIGTERM)
        sup.wait_for_line("spawned worker", count=spawned + 1, timeout=5)
        assert sup.proc.poll() is None, f"master died on {sig.name}"
        assert psutil.Process(sup.pid).status() != psutil.STATUS_STOPPED, sig.name
        seen += sup.children()

    # ... and none of these signals killed a worker either (only slot #1's
    # children, which the test stopped, and maybe a TTOU surplus, ever left)
    deaths = [ln for ln in sup.lines() if "killed by signal" in ln or " ERROR " in ln]
    assert not deaths, deaths
    stop_gracefully(sup, seen)
