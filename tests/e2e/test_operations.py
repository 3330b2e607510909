"""End to end: operating the pool (issue 6) and cases C10, C11, C14, C15, C16.

SIGHUP reload, SIGTTIN/SIGTTOU and `scale_queue`, recycling by job count and
by memory, hung-worker kills, the crash-loop brake, the pidfile, SIGUSR1 log
reopening, `bbsupervise status` / `ctl`, `--check` and systemd readiness;
each against a real beanstalkd and the real `bbsupervise` command. Every
wait is on an event: a log line, a file a job writes, beanstalkd's stats, a
reply on the control socket, a datagram.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import SupervisorFactory
from tests.support import (  # noqa: I001
    by_slot,
    REPO_ROOT,
    Beanstalkd,
    Supervisor,
    job_state,
    make_config,
    proc_title,
    put_job,
    queue_tube,
    wait_for,
)

JOBS = "tests.jobs"
# A master or worker line at WARNING or above (the level follows the timestamp).
BAD_LEVEL = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ")


# --------------------------------------------------------------------------
# local helpers


def ops_config(beanstalkd: Beanstalkd, tmp_path: Path, queues: dict[str, Any], **keys: Any) -> str:
    """A config whose control socket and pidfile live in tmp_path (never the /tmp default)."""
    keys.setdefault("control_socket", tmp_path / "ctl.sock")
    keys.setdefault("pidfile", tmp_path / "bb.pid")
    return make_config(beanstalkd.url, queues, imports=JOBS, **keys)


def rewrite(sup: Supervisor, beanstalkd: Beanstalkd, queues: dict[str, Any], **keys: Any) -> None:
    """Replace the running master's config file (same control socket and pidfile)."""
    sup.config_path.write_text(ops_config(beanstalkd, sup.workdir, queues, **keys))



def slot_pids(sup: Supervisor) -> dict[str, int]:
    return {slot: proc.pid for slot, proc in by_slot(sup).items()}


def start_pool(
    supervisor_factory: SupervisorFactory,
    beanstalkd: Beanstalkd,
    tmp_path: Path,
    queues: dict[str, Any],
    **keys: Any,
) -> Supervisor:
    """Start a master and wait until every slot has an idle child."""
    sup = supervisor_factory(ops_config(beanstalkd, tmp_path, queues, **keys))
    total = sum(q if isinstance(q, int) else int(q["processes"]) for q in queues.values())
    sup.wait_children(total, timeout=20)
    return sup


def bad_lines(sup: Supervisor) -> list[str]:
    return [ln for ln in sup.lines() if BAD_LEVEL.search(ln) or "Traceback" in ln]


def matching(sup: Supervisor, pattern: str) -> list[re.Match[str]]:
    regex = re.compile(pattern)
    return [m for m in (regex.search(ln) for ln in sup.lines()) if m]


def log_time(line: str) -> float:
    """Seconds since the epoch from a log line's `YYYY-mm-dd HH:MM:SS.mmm` prefix."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()


def file_lines(path: Path) -> list[str]:
    """Whole lines of `path` (none if it does not exist)."""
    try:
        return path.read_text(encoding="utf-8").split("\n")[:-1]
    except FileNotFoundError:
        return []


def wait_mark(path: Path, word: str, count: int = 1, timeout: float = 10.0) -> list[str]:
    """Wait until `count` lines of `path` start with `word`; return the fields of the last one."""

    def check() -> list[str] | None:
        found = [ln.split() for ln in file_lines(path) if ln.split()[:1] == [word]]
        return found[count - 1] if len(found) >= count else None

    return wait_for(check, timeout=timeout, message=lambda: f"{count} {word!r} in {path}: {file_lines(path)}")


def gone(pid: int) -> bool:
    """The process is gone or a zombie (an orphan whose new parent may not reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cli(*args: str | Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `bbsupervise ARGS` (as `python -m supervisor`) and capture its output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status(sup: Supervisor) -> dict[str, Any]:
    """`bbsupervise status --json` of the running master."""
    done = cli("status", "-c", sup.config_path, "--json")
    assert done.returncode == 0, f"status exit {done.returncode}: {done.stderr}\n{sup.tail()}"
    return dict(json.loads(done.stdout))


def ask(sock_path: Path, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One request on the master's control socket (the same wire `ctl` uses); for polling loops."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return dict(json.loads(data))


def wanted(sup: Supervisor, queue: str) -> int:
    """The master's own process count for `queue`."""
    return int(ask(sup.workdir / "ctl.sock", {"cmd": "status"})["queues"][queue]["processes"])


def stop_and_check(sup: Supervisor, expected: int = 0) -> None:
    sup.signal(signal.SIGTERM)
    code = sup.wait_exit(timeout=15)
    assert code == expected, f"exit code {code}; last lines:\n{sup.tail()}"


def sigblk(pid: int) -> int:
    """The blocked-signal mask of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigBlk in /proc/{pid}/status")


# --------------------------------------------------------------------------
# 1. SIGHUP reload


def test_hup_process_count_change_starts_or_drains_only_the_difference(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given queues a (2) and b (2)
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"a": 2, "b": 2})
    before = slot_pids(sup)

    # When the file says a = 3 and the master gets SIGHUP
    rewrite(sup, beanstalkd, {"a": 3, "b": 2})
    sup.signal(signal.SIGHUP)

    # Then one child is added to a; every other child keeps its pid
    sup.wait_for_line("queue a: 2 -> 3 processes", timeout=5)
    sup.wait_children(5, timeout=10)
    grown = slot_pids(sup)
    assert {k: grown[k] for k in before} == before
    assert set(grown) == set(before) | {"a #3"}

    # When the file says a = 1
    rewrite(sup, beanstalkd, {"a": 1, "b": 2})
    sup.signal(signal.SIGHUP)

    # Then exactly the surplus children of a drain (exit 0, one line each) and the rest stay
    sup.wait_for_line("queue a: 3 -> 1 processes", timeout=5)
    sup.wait_children(3, timeout=10)
    assert slot_pids(sup) == {k: before[k] for k in ("a #1", "b #1", "b #2")}
    for slot in ("a #2", "a #3"):
        pid = grown[slot]
        sup.wait_for_line(f"worker {slot} pid={pid} exited with status 0 (surplus)", timeout=5)
        assert len(matching(sup, rf"pid={pid} exited")) == 1
    assert len(matching(sup, r"spawned worker")) == 5, sup.tail()
    assert bad_lines(sup) == []
    stop_and_check(sup)


def test_hup_job_setting_change_replaces_that_queues_children_one_at_a_time(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given queues a (3) and b (2)
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"a": 3, "b": 2})
    before = slot_pids(sup)

    # When a's max_job_retries changes and the master gets SIGHUP
    rewrite(sup, beanstalkd, {"a": {"processes": 3, "max_job_retries": 4}, "b": 2})
    sup.signal(signal.SIGHUP)

    # Then every child of a is replaced, and b is untouched
    sup.wait_for_line("queue a: settings changed, replacing its workers", timeout=5)
    for slot in ("a #1", "a #2", "a #3"):
        sup.wait_for_line(f"worker {slot} pid={before[slot]} exited with status 0 (reload)", timeout=15)
    sup.wait_children(5, timeout=10)
    after = slot_pids(sup)
    assert {k: after[k] for k in ("b #1", "b #2")} == {k: before[k] for k in ("b #1", "b #2")}
    assert not {after[k] for k in ("a #1", "a #2", "a #3")} & set(before.values())

    # And one at a time: each old child is stopped only after the previous
    # slot's replacement has connected (order of lines on the shared pipe; a
    # child may log "connected" before the master logs "spawned", so only
    # exit -> connected is causal)
    def rolled() -> list[tuple[str, int]]:
        events = []
        for line in sup.lines():
            if m := re.search(r"worker a #\d pid=(\d+) exited with status 0 \(reload\)", line):
                events.append(("exit", int(m.group(1))))
            elif m := re.search(r"\[(\d+)\] a: connected to", line):
                events.append(("connected", int(m.group(1))))
        return events[events.index(("exit", before["a #1"])) :]

    events = wait_for(lambda: len(rolled()) >= 6 and rolled(), timeout=5, message=lambda: str(rolled()))
    kinds = [kind for kind, _ in events]
    assert {pid for kind, pid in events if kind == "connected"} == {after[k] for k in ("a #1", "a #2", "a #3")}
    assert kinds == ["exit", "connected"] * 3, events
    assert bad_lines(sup) == []
    stop_and_check(sup)


def test_hup_with_an_invalid_file_is_rejected_and_the_old_config_stays(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a running pool of 2
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 2})
    before = slot_pids(sup)
    good_text = sup.config_path.read_text()

    # When the file gets a bad value, then a broken section header, each followed by SIGHUP
    sup.config_path.write_text(good_text.replace("processes = 2", "processes = many"))
    sup.signal(signal.SIGHUP)
    line = sup.wait_for_line("reload rejected", timeout=5)
    # Then one clear line names the file, section and key, and nothing changes
    assert "keeping the running config" in line and str(sup.config_path) in line, line
    assert "[queue:q] processes" in line, line

    sup.config_path.write_text(good_text.replace("[queue:q]", "[queue:q"))
    sup.signal(signal.SIGHUP)
    line = sup.wait_for_line("reload rejected", timeout=5, count=2)
    assert str(sup.config_path) in line and "Traceback" not in sup.tail(), line

    assert sup.proc.poll() is None
    assert slot_pids(sup) == before
    assert wanted(sup, "q") == 2

    # And the master still reloads a good file afterwards
    rewrite(sup, beanstalkd, {"q": 3})
    sup.signal(signal.SIGHUP)
    sup.wait_for_line("queue q: 2 -> 3 processes", timeout=5)
    sup.wait_children(3, timeout=10)
    assert {k: v for k, v in slot_pids(sup).items() if k in before} == before
    stop_and_check(sup)


def test_hup_with_changed_imports_warns_that_job_modules_load_only_at_start(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a running pool
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 1})
    before = slot_pids(sup)

    # When `imports` changes and the master gets SIGHUP
    sup.config_path.write_text(sup.config_path.read_text().replace("imports = tests.jobs", "imports = tests.jobs, tests.crashy"))
    sup.signal(signal.SIGHUP)

    # Then it says a restart is needed, and keeps running the same children
    line = sup.wait_for_line("`imports` changed", timeout=5)
    assert "restart" in line, line
    sup.wait_for_line("reloaded", timeout=5)
    assert slot_pids(sup) == before
    stop_and_check(sup)


# --------------------------------------------------------------------------
# 2. SIGTTIN / SIGTTOU


def test_ttin_ttou_add_and_remove_one_child_of_the_only_queue(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given one queue with one child
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 1})
    first = slot_pids(sup)["q #1"]

    # When TTIN, then Then a second child joins
    sup.signal(signal.SIGTTIN)
    sup.wait_for_line("scale: queue q: 1 -> 2 processes", timeout=5)
    sup.wait_children(2, timeout=10)

    # When TTOU, Then the extra child drains and the first one stays
    sup.signal(signal.SIGTTOU)
    sup.wait_for_line("scale: queue q: 2 -> 1 processes", timeout=5)
    sup.wait_children(1, timeout=10)
    assert slot_pids(sup) == {"q #1": first}
    assert bad_lines(sup) == []
    stop_and_check(sup)


def test_ttin_with_several_queues_scales_the_scale_queue_only(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given queues a and b, and scale_queue = b
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"a": 1, "b": 1}, scale_queue="b")
    before = slot_pids(sup)

    # When TTIN twice, then TTOU once
    sup.signal(signal.SIGTTIN)
    sup.wait_for_line("scale: queue b: 1 -> 2 processes", timeout=5)
    sup.signal(signal.SIGTTIN)
    sup.wait_for_line("scale: queue b: 2 -> 3 processes", timeout=5)
    sup.signal(signal.SIGTTOU)
    sup.wait_for_line("scale: queue b: 3 -> 2 processes", timeout=5)

    # Then b has 2 children, a is untouched
    sup.wait_children(3, timeout=10)
    after = slot_pids(sup)
    assert after["a #1"] == before["a #1"] and after["b #1"] == before["b #1"]
    assert set(after) == {"a #1", "b #1", "b #2"}
    assert wanted(sup, "a") == 1 and wanted(sup, "b") == 2
    stop_and_check(sup)


def test_ttin_with_several_queues_and_no_scale_queue_is_refused_and_harmless(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given queues a and b and no scale_queue
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"a": 1, "b": 1})
    before = slot_pids(sup)

    # When TTIN
    sup.signal(signal.SIGTTIN)

    # Then a warning says why, the master lives on and nothing changes
    line = sup.wait_for_line("scale refused", timeout=5)
    assert "scale_queue" in line, line
    assert sup.proc.poll() is None
    assert wanted(sup, "a") == 1 and wanted(sup, "b") == 1
    assert slot_pids(sup) == before
    stop_and_check(sup)


def _scale_chain(sup: Supervisor) -> list[tuple[int, int]]:
    return [(int(m.group(1)), int(m.group(2))) for m in matching(sup, r"scale: queue q: (\d+) -> (\d+) processes")]


def settle(sup: Supervisor, count: int) -> int:
    """Wait until the master has handled every signal sent so far; return its count for q.

    A SIGUSR1 sent after them is the marker: the kernel has delivered the earlier
    signals by the time it delivers this one, the master dispatches a batch in
    one go, and it answers the control socket only after a batch. (Asking at once
    is not enough: it answers connections queued while it serves, before
    dispatching the signals that came meanwhile.)
    """
    sup.signal(signal.SIGUSR1)
    sup.wait_for_line("log files reopened", count=count, timeout=10)
    return wanted(sup, "q")


def test_burst_of_50_ttin_then_50_ttou_keeps_master_alive_and_count_right(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given one queue with one child
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 1})

    # When 50 TTIN arrive in a burst (the kernel may merge some: a pending
    # signal is not queued twice)
    for _ in range(50):
        sup.signal(signal.SIGTTIN)

    # Then the master lives, every applied signal is one logged +1 step, and
    # the children match its count
    up = settle(sup, count=1)
    assert 2 <= up <= 51, up
    assert _scale_chain(sup) == [(n, n + 1) for n in range(1, up)]
    sup.wait_children(up, timeout=60)
    assert sup.proc.poll() is None

    # When 50 TTOU arrive in a burst
    for _ in range(50):
        sup.signal(signal.SIGTTOU)

    # Then the count goes down by the logged -1 steps (never below 0) and the children follow
    down = settle(sup, count=2)
    chain = _scale_chain(sup)
    assert len(chain) > up - 1 and chain[-1][1] == down, chain
    assert chain[up - 1 :] == [(a, max(0, a - 1)) for a, _ in chain[up - 1 :]], chain
    assert all(a == b_prev for (a, _), (_, b_prev) in zip(chain[1:], chain[:-1])), chain
    sup.wait_children(down, timeout=30)
    assert sup.proc.poll() is None
    assert bad_lines(sup) == []
    stop_and_check(sup)


# --------------------------------------------------------------------------
# 3. recycling


def test_max_jobs_per_child_recycles_and_logs_a_recycle_not_a_crash(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given queue q with max_jobs_per_child = 2 (per queue) and queue r without
    sup = start_pool(
        supervisor_factory, beanstalkd, tmp_path, {"q": {"processes": 1, "max_jobs_per_child": 2}, "r": 1}
    )
    r_pid = slot_pids(sup)["r #1"]
    client = beanstalkd.client()
    trace_q, trace_r = tmp_path / "q.trace", tmp_path / "r.trace"

    # When 8 jobs run on q and 4 on r
    for i in range(8):
        put_job(client, "q", "tests.jobs.record", [str(trace_q), i])
    for i in range(4):
        put_job(client, "r", "tests.jobs.record", [str(trace_r), i])
    wait_for(lambda: len(file_lines(trace_q)) == 8 and len(file_lines(trace_r)) == 4, timeout=20)

    # Then q's children were replaced every 2 or 3 jobs (jitter), each logged as a recycle
    sup.wait_for_line("recycled after", count=2, timeout=5)
    q_pids = [line.split()[0] for line in file_lines(trace_q)]
    per_pid = {pid: q_pids.count(pid) for pid in q_pids}
    assert len(per_pid) >= 3 and max(per_pid.values()) <= 3, per_pid
    recycled = matching(sup, r"worker q #1 pid=(\d+) recycled after (\d+) jobs \(max_jobs_per_child\)")
    assert len(recycled) >= 2
    assert all(int(m.group(2)) in (2, 3) for m in recycled)
    # And r (no limit) kept its child; nothing counted as a crash
    assert {line.split()[0] for line in file_lines(trace_r)} == {str(r_pid)}
    assert bad_lines(sup) == []
    assert not matching(sup, r"keeps dying|is failing")
    stop_and_check(sup)


def test_max_memory_per_child_lets_the_job_finish_then_recycles_the_child(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a child with max_memory_per_child = 60 MiB (idle RSS is ~20 MiB)
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": {"processes": 1, "max_memory_per_child": 60}})
    trace, release = tmp_path / "trace", tmp_path / "release"
    client = beanstalkd.client()

    # When its job grows it by 100 MiB and keeps running
    job_id = put_job(client, "q", "tests.jobs.allocate_then_wait", [str(trace), 100, str(release)])
    pid = int(wait_mark(trace, "allocated")[1])

    # Then the master logs a recycle (not a crash) but leaves the job running
    line = sup.wait_for_line(f"worker q #1 pid={pid} recycling: RSS", timeout=5)
    assert "exceeds max_memory_per_child 60 MiB" in line, line
    assert psutil.Process(pid).is_running()
    assert job_state(client, job_id)["state"] == "reserved"  # type: ignore[index]

    # When the job ends
    release.touch()

    # Then it is deleted, the child exits 0 and its slot gets a fresh child
    wait_mark(trace, "end")
    wait_for(lambda: job_state(client, job_id) is None, timeout=5)
    sup.wait_for_line(f"worker q #1 pid={pid} exited with status 0 (memory)", timeout=5)
    children = sup.wait_children(1, timeout=10)
    assert children[0].pid != pid
    assert [ln for ln in bad_lines(sup) if "recycling: RSS" not in ln] == []
    assert not matching(sup, r"keeps dying|is failing")
    stop_and_check(sup)


# --------------------------------------------------------------------------
# 4. hung workers


@pytest.mark.parametrize(
    "deaf_after",
    [
        pytest.param(0.0, id="alarm-blocked-from-start"),
        pytest.param(1.0, id="alarm-blocked-after-ttr-probe"),
    ],
)
def test_hung_job_is_killed_with_its_process_group_before_its_ttr_runs_out(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path, deaf_after: float
) -> None:
    # Given two children (so another one could take the job) and a job with
    # TTR 3 that blocks SIGALRM (its own TTR-1 deadline cannot fire) and runs `sleep 60`
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"h": 2}, graceful_timeout=1)
    trace, release = tmp_path / "trace", tmp_path / "release"
    client = beanstalkd.client()
    job_id = put_job(
        client, "h", "tests.jobs.hang_deaf_to_alarm", [str(trace), str(release), deaf_after], ttr=3
    )
    _, pid, sleeper = wait_mark(trace, "start", timeout=5)

    # When it overruns
    # Then the master kills its whole process group inside the TTR
    line = sup.wait_for_line(re.compile(rf"worker h #\d pid={pid} hung: job id={job_id} ran"), timeout=5)
    assert "past its TTR-1 deadline" in line, line
    wait_for(lambda: gone(int(pid)) and gone(int(sleeper)), timeout=5, message="hung child and its sleep to die")

    # And no other worker got it while the hung one ran: beanstalkd never
    # timed the reservation out, so the job came back only when the killed
    # child's socket closed. It ends buried (max_job_retries 0).
    # (Not asserted: that it runs only once. The master records the killed
    # attempt when it reaps the child, after beanstalkd has already handed the
    # job to the idle sibling in about half the runs; that sibling then runs it
    # again and is killed too: a product race, reported.)
    wait_for(lambda: (job_state(client, job_id) or {}).get("state") == "buried", timeout=10, message=sup.tail)
    stats = job_state(client, job_id)
    assert stats is not None and stats["timeouts"] == 0, stats
    starts = [ln.split() for ln in file_lines(trace) if ln.startswith("start")]
    assert starts[0][1] == pid and all(s[1] != pid for s in starts[1:]), starts

    # And the slot is refilled; a deliberate kill is not counted as a crash
    children = sup.wait_children(2, timeout=10)
    assert int(pid) not in {c.pid for c in children}
    assert not matching(sup, r"keeps dying|is failing")
    stop_and_check(sup)


def test_idle_child_whose_heartbeat_stops_is_replaced(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given two idle children (socket_timeout 2: a silent idle child is hung after ~8 s)
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 2}, socket_timeout=2)
    before = slot_pids(sup)

    # When one of them is frozen (SIGSTOP: its heartbeat stops)
    os.kill(before["q #1"], signal.SIGSTOP)

    # Then the master kills it and refills the slot; the sibling is untouched
    line = sup.wait_for_line(f"worker q #1 pid={before['q #1']} hung: no heartbeat", timeout=15)
    assert "while idle" in line, line
    wait_for(lambda: gone(before["q #1"]), timeout=5)
    sup.wait_children(2, timeout=10)
    after = slot_pids(sup)
    assert after["q #2"] == before["q #2"] and after["q #1"] != before["q #1"]
    stop_and_check(sup)


# --------------------------------------------------------------------------
# 5. crash-loop brake (C14, C15) and a clean exit during a drain (C16)


def spawn_lines(sup: Supervisor, slot: str) -> list[str]:
    return [ln for ln in sup.lines() if f"spawned worker {slot} pid=" in ln]


def test_c14_queue_crashing_at_every_start_backs_off_and_is_marked_failing_once(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given queue crashy (2 children) whose workers die right after the fork, and queue good
    sup = supervisor_factory(
        ops_config(beanstalkd, tmp_path, {"crashy": 2, "good": 1}, post_fork="tests.crashy:crash_at_start")
    )
    good = wait_for(lambda: by_slot(sup).get("good #1"), timeout=10, message=sup.tail)
    master = psutil.Process(sup.pid)
    cpu_before, wall_before = sum(master.cpu_times()[:2]), time.monotonic()

    # Then one clear line says the queue is failing
    line = sup.wait_for_line("queue crashy is failing", timeout=15)
    assert "back off" in line, line

    # And the spawn interval grows: logged delays double (with jitter) ...
    sup.wait_for_line("spawned worker crashy #1 pid=", count=7, timeout=15)
    delays = [float(m.group(1)) for m in matching(sup, r"worker crashy #1 keeps dying: restarting in ([\d.]+) s")]
    assert all(b > a for a, b in zip(delays, delays[1:])), delays
    # ... and so do the real intervals between forks of one slot
    spawns = [log_time(ln) for ln in spawn_lines(sup, "crashy #1")]
    gaps = [b - a for a, b in zip(spawns, spawns[1:])]
    assert gaps[-1] >= 1.0 and gaps[-1] > max(gaps[:3]), gaps

    # And forks stay bounded and the master's CPU low
    elapsed = time.monotonic() - wall_before
    forks = len(spawn_lines(sup, "crashy #1")) + len(spawn_lines(sup, "crashy #2"))
    assert forks <= 30, f"{forks} forks in {elapsed:.1f} s"
    cpu = sum(master.cpu_times()[:2]) - cpu_before
    assert cpu < 0.5 * elapsed, f"master used {cpu:.2f} s CPU in {elapsed:.2f} s"

    # And the other queue is not affected: same child, and it runs jobs
    assert len(matching(sup, r"queue crashy is failing")) == 1
    assert by_slot(sup)["good #1"].pid == good.pid
    trace = tmp_path / "trace"
    put_job(beanstalkd.client(), "good", "tests.jobs.record", [str(trace), "ok"])
    wait_for(lambda: file_lines(trace) == [f"{good.pid} ok"], timeout=5)

    # And the failing state is visible in the master's title and in status
    assert "failing: crashy" in proc_title(master), proc_title(master)
    assert status(sup)["master"]["failing"] == ["crashy"]
    assert "FAILING queues: crashy" in cli("status", "-c", sup.config_path).stdout
    assert sup.proc.poll() is None
    stop_and_check(sup)


def test_c14_master_exits_nonzero_when_every_queue_is_failing(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given two queues whose workers all die at start
    sup = supervisor_factory(
        ops_config(beanstalkd, tmp_path, {"crashy-a": 1, "crashy-b": 1}, post_fork="tests.crashy:crash_at_start")
    )

    # Then the master gives up, says why, and exits non-zero (within the 30 s budget)
    code = sup.wait_exit(timeout=30)
    assert code == 1, f"exit code {code}; last lines:\n{sup.tail()}"
    assert matching(sup, r"every queue is failing \(crashy-a, crashy-b\): stopping")
    assert len(matching(sup, r"queue crashy-a is failing")) == 1
    assert len(matching(sup, r"queue crashy-b is failing")) == 1
    assert not (tmp_path / "bb.pid").exists() and not (tmp_path / "ctl.sock").exists()


def test_c15_child_crashing_2s_after_each_start_still_trips_the_brake(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given queue late whose workers die 2 s after they start, and queue good
    sup = supervisor_factory(
        ops_config(beanstalkd, tmp_path, {"late": 1, "good": 1}, post_fork="tests.crashy:crash_after_2s")
    )
    good = wait_for(lambda: by_slot(sup).get("good #1"), timeout=10, message=sup.tail)

    # Then failures are counted over a window: the queue is marked failing (about 11 s)
    sup.wait_for_line("queue late is failing", timeout=25)
    # And each of those lives really lasted about 2 s (not crashes at once)
    spawned = [log_time(ln) for ln in spawn_lines(sup, "late #1")]
    died = [log_time(ln) for ln in sup.lines() if re.search(r"worker late #1 pid=\d+ exited with status 1", ln)]
    assert len(died) >= 5
    assert all(d - s >= 1.8 for s, d in zip(spawned, died)), list(zip(spawned, died))
    assert by_slot(sup)["good #1"].pid == good.pid
    assert sup.proc.poll() is None
    stop_and_check(sup)


def test_c16_child_finishing_during_a_drain_is_a_clean_exit(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a busy child and an idle one
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 2}, graceful_timeout=20)
    trace, release = tmp_path / "trace", tmp_path / "release"
    client = beanstalkd.client()
    job_id = put_job(client, "q", "tests.jobs.block_until", [str(trace), str(release)])
    pid = int(wait_mark(trace, "start")[1])
    spawned = len(matching(sup, r"spawned worker"))

    # When the master drains and the job then finishes
    sup.signal(signal.SIGTERM)
    sup.wait_for_line("graceful stop", timeout=5)
    # (status still answers during the drain and shows the busy child draining)
    report = ask(tmp_path / "ctl.sock", {"cmd": "status"})
    assert report["master"]["state"] == "draining"
    assert [(c["pid"], c["state"], c["job_id"]) for c in report["children"]] == [(pid, "draining", job_id)]
    release.touch()

    # Then the child's exit 0 is a clean exit: logged at INFO, not respawned, no error
    code = sup.wait_exit(timeout=15)
    assert code == 0, sup.tail()
    assert matching(sup, rf"INFO .*worker q #\d pid={pid} exited with status 0 \(drain\)")
    assert len(matching(sup, r"spawned worker")) == spawned
    assert bad_lines(sup) == []
    assert job_state(client, job_id) is None


# --------------------------------------------------------------------------
# 6. pidfile, log reopening, privileges


def test_pidfile_written_refused_for_a_live_master_and_removed_on_exit(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a running master with a pidfile
    pidfile = tmp_path / "bb.pid"
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 1}, pidfile=pidfile)
    assert pidfile.read_text().strip() == str(sup.pid)

    # When a second master is started with the same pidfile (its own control socket)
    second_dir = tmp_path / "second"
    second = supervisor_factory(
        ops_config(beanstalkd, second_dir, {"q": 1}, pidfile=pidfile), tmp_path=second_dir
    )

    # Then it refuses, naming the pidfile and the live pid, exits non-zero and forks nothing
    assert second.wait_exit(timeout=15) != 0
    assert any(f"pidfile {pidfile} names a running bbsupervise (pid {sup.pid})" in ln for ln in second.lines()), (
        second.tail()
    )
    assert not any("spawned worker" in ln for ln in second.lines())
    assert pidfile.read_text().strip() == str(sup.pid)

    # When the first master stops, Then its pidfile is removed
    stop_and_check(sup)
    assert not pidfile.exists()


def test_stale_pidfile_of_a_dead_process_is_replaced(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a pidfile left by a process that is gone
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "bb.pid"
    pidfile.write_text(f"{dead.pid}\n")

    # When a master starts, Then it takes the pidfile over
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 1}, pidfile=pidfile)
    assert pidfile.read_text().strip() == str(sup.pid)
    stop_and_check(sup)
    assert not pidfile.exists()


def test_usr1_reopens_the_log_file_in_master_and_children(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a pool logging to a file
    log_file, rotated = tmp_path / "bb.log", tmp_path / "bb.log.1"
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 1}, log_file=log_file)
    child = slot_pids(sup)["q #1"]
    wait_for(lambda: f"[{child}] q: connected to" in log_file.read_text(), timeout=5)

    # When the file is rotated (renamed) and the master gets SIGUSR1
    log_file.rename(rotated)
    sup.signal(signal.SIGUSR1)

    # Then the master writes to a new file at the old path
    wait_for(lambda: log_file.exists() and "log files reopened" in log_file.read_text(), timeout=5)

    # And so does the child: its next job's line lands in the new file only
    client = beanstalkd.client()
    job_id = put_job(client, "q", "tests.jobs.record", [str(tmp_path / "trace"), 1])
    done = f"[{child}] q: job tests.jobs.record id={job_id} completed"
    wait_for(lambda: done in log_file.read_text(), timeout=10, message=lambda: log_file.read_text())
    old = rotated.read_text()
    assert done not in old and "log files reopened" not in old
    assert f"[{sup.pid}] master: spawned worker q #1" in old
    stop_and_check(sup)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_children_drop_privileges_to_user_and_group(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given user = nobody (master runs as root)
    nobody = pwd.getpwnam("nobody")
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 2}, user="nobody")

    # Then every child runs as nobody, connected and idle; the master stays root
    for child in sup.children():
        assert child.uids().real == child.uids().effective == nobody.pw_uid
        assert child.gids().effective == nobody.pw_gid
    assert psutil.Process(sup.pid).uids().real == 0
    stop_and_check(sup)


# --------------------------------------------------------------------------
# 7. bbsupervise status


def test_status_shows_master_children_and_tube_counts(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given queues a (2), b (1) and c (0, so its job stays ready)
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"a": 2, "b": 1, "c": 0})
    client = beanstalkd.client()
    trace, release = tmp_path / "trace", tmp_path / "release"
    # a: one child busy; b: one job done and one buried, one delayed; c: one ready
    busy_id = put_job(client, "a", "tests.jobs.block_until", [str(trace), str(release)])
    busy_pid = int(wait_mark(trace, "start")[1])
    put_job(client, "b", "tests.jobs.noop")
    put_job(client, "b", "no.such.Job")
    put_job(client, "b", "tests.jobs.noop", delay=300)
    put_job(client, "c", "tests.jobs.noop")
    wait_for(lambda: beanstalkd.stats_tube(queue_tube("b"))["current-jobs-buried"] == 1, timeout=5)

    # When `bbsupervise status --json` runs
    report = wait_for(
        lambda: (r := status(sup))["children"][2]["jobs_done"] == 2 and r, timeout=10, message=sup.tail
    )

    # Then the master and every child are there with queue, slot, pid, state, jobs, RSS, uptime
    master = report["master"]
    assert master["pid"] == sup.pid and master["state"] == "running" and master["failing"] == []
    assert master["rss"] > 0 and master["uptime"] > 0
    children = report["children"]
    assert [(c["queue"], c["slot"]) for c in children] == [("a", 1), ("a", 2), ("b", 1)]
    assert {c["pid"] for c in children} == {p.pid for p in sup.children()}
    for child in children:
        assert child["rss"] > 0 and child["uptime"] > 0
        if child["pid"] == busy_pid:
            assert child["state"] == "busy" and child["job_id"] == busy_id, child
            assert 0 <= child["busy_seconds"] < 60, child
        else:
            assert child["state"] == "idle" and child["job_id"] is None, child
    assert children[2]["jobs_done"] == 2
    # And per tube the ready, reserved, delayed and buried counts
    assert report["tubes"] == {
        "a": {"ready": 0, "reserved": 1, "delayed": 0, "buried": 0},
        "b": {"ready": 0, "reserved": 0, "delayed": 1, "buried": 1},
        "c": {"ready": 1, "reserved": 0, "delayed": 0, "buried": 0},
    }

    # And the text form shows the same for a human
    text = cli("status", "-c", sup.config_path)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert f"master pid {sup.pid} running" in out, out
    assert re.search(rf"^a\s+\d+\s+{busy_pid}\s+busy job {busy_id} \d+\.\ds\s+0\s+[\d.]+\s+\d\d:\d\d:\d\d$", out, re.M), out
    assert re.search(rf"^b\s+1\s+{children[2]['pid']}\s+idle\s+2\s", out, re.M), out
    assert re.search(r"^c\s+1\s+0\s+0\s+0$", out, re.M), out
    assert re.search(r"^b\s+0\s+0\s+1\s+1$", out, re.M), out
    release.touch()
    stop_and_check(sup)


def test_status_and_ctl_without_a_master_exit_1_with_a_clear_message(tmp_path: Path) -> None:
    # Given a config whose master is not running
    config = tmp_path / "bb.ini"
    config.write_text(
        make_config("beanstalk://127.0.0.1:1", {"q": 1}, control_socket=tmp_path / "ctl.sock",
                    pidfile=tmp_path / "bb.pid")
    )
    for args in (["status", "-c", config], ["ctl", "-c", config, "stop"]):
        # When status or ctl runs, Then it says so and exits 1
        done = cli(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "no bbsupervise master is running" in done.stderr and "Traceback" not in done.stderr


# --------------------------------------------------------------------------
# 8. bbsupervise ctl


def test_ctl_scale_reload_and_stop(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given queues a and b (no scale_queue)
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"a": 1, "b": 1})
    sock = tmp_path / "ctl.sock"
    assert sock.is_socket() and sock.stat().st_mode & 0o777 == 0o600
    b_pid = slot_pids(sup)["b #1"]

    def ctl(*words: str) -> subprocess.CompletedProcess[str]:
        return cli("ctl", "-c", sup.config_path, *words)

    # When scale a +2, -1, then 1: Then each is answered and the pool follows
    for words, answer, total in (
        (("scale", "a", "+2"), "queue a: 1 -> 3 processes", 4),
        (("scale", "a", "-1"), "queue a: 3 -> 2 processes", 3),
        (("scale", "a", "1"), "queue a: 2 -> 1 processes", 2),
    ):
        done = ctl(*words)
        assert (done.returncode, done.stdout.strip()) == (0, answer), done.stderr
        sup.wait_children(total, timeout=10)

    # When a request is refused, Then ctl exits 2 saying why and the master lives on
    for words, why in (
        (("scale", "+1"), "several queues and no scale_queue"),
        (("scale", "nope", "+1"), "no queue named 'nope'"),
        (("scale", "a", "lots"), "bad scale 'lots'"),
        (("frobnicate",), "expected: reload | stop | scale"),
    ):
        done = ctl(*words)
        assert done.returncode == 2 and why in done.stderr, (words, done.stdout, done.stderr)
    assert sup.proc.poll() is None and slot_pids(sup)["b #1"] == b_pid

    # When the file changes and `ctl reload` runs, Then the master reloads it
    rewrite(sup, beanstalkd, {"a": 1, "b": 2})
    done = ctl("reload")
    assert done.returncode == 0 and "reload" in done.stdout, done.stderr
    sup.wait_for_line("queue b: 1 -> 2 processes", timeout=5)
    sup.wait_children(3, timeout=10)
    assert slot_pids(sup)["b #1"] == b_pid

    # When `ctl stop` runs, Then the master drains and exits 0, removing its socket
    done = ctl("stop")
    assert done.returncode == 0 and "graceful stop" in done.stdout, done.stderr
    assert sup.wait_exit(timeout=15) == 0, sup.tail()
    assert not sock.exists()
    assert [ln for ln in bad_lines(sup) if "scale refused" not in ln] == []


# --------------------------------------------------------------------------
# 9. --check and systemd


@pytest.mark.parametrize(
    ("graceful", "stop", "warns"),
    [(30, 20, True), (30, 30, True), (10, 45, False)],
)
def test_check_warns_when_graceful_timeout_does_not_fit_stop_timeout(
    beanstalkd: Beanstalkd, tmp_path: Path, graceful: int, stop: int, warns: bool
) -> None:
    # Given a config declaring the service manager's stop timeout
    config = tmp_path / "bb.ini"
    config.write_text(ops_config(beanstalkd, tmp_path, {"q": 1}, graceful_timeout=graceful, stop_timeout=stop))

    # When --check runs
    done = cli("-c", config, "--check")

    # Then it passes, with a warning exactly when graceful_timeout >= stop_timeout
    assert done.returncode == 0, done.stderr
    warning = f"warning: graceful_timeout ({graceful} s) does not fit in stop_timeout ({stop} s)"
    assert (warning in done.stderr) is warns, done.stderr


def test_shipped_systemd_unit_is_type_notify_and_outlasts_graceful_timeout() -> None:
    unit = (REPO_ROOT / "conf" / "bbsupervise.service").read_text()
    keys = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.lstrip().startswith("#")
    )
    assert keys["Type"] == "notify"
    assert keys["ExecReload"].endswith("kill -HUP $MAINPID")
    default_graceful = 30.0
    assert float(keys["TimeoutStopSec"]) > default_graceful


def test_systemd_notify_ready_is_sent_once_all_children_are_connected(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a NOTIFY_SOCKET the test listens on
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(20)

        # When a master with 3 children starts under it
        sup = supervisor_factory(ops_config(beanstalkd, tmp_path, {"q": 3}), env={"NOTIFY_SOCKET": str(path)})

        # Then the first message is READY=1, and by then all 3 children are connected and watching
        assert listener.recv(4096) == b"READY=1"
        assert beanstalkd.stats_tube(queue_tube("q"))["current-watching"] == 3
        sup.wait_children(3, timeout=5)

        # And a graceful stop says STOPPING=1
        sup.signal(signal.SIGTERM)
        assert listener.recv(4096) == b"STOPPING=1"
        assert sup.wait_exit(timeout=15) == 0


# --------------------------------------------------------------------------
# C10, C11


def test_c10_children_have_no_handled_signal_blocked_and_a_direct_term_drains_that_child(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given 3 ready children
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 3})
    before = slot_pids(sup)

    # Then none has TERM, INT, HUP, QUIT or USR1 blocked
    for pid in before.values():
        mask = sigblk(pid)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1):
            assert not mask & (1 << (sig - 1)), f"child {pid} blocks {sig.name} (SigBlk {mask:#x})"

    # When an idle child gets `kill -TERM`, Then it exits 0 at once and its slot is refilled
    os.kill(before["q #1"], signal.SIGTERM)
    sup.wait_for_line(f"worker q #1 pid={before['q #1']} exited with status 0", timeout=5)

    # When a busy child gets `kill -TERM`, Then it finishes its job first, then exits 0
    client = beanstalkd.client()
    trace, release = tmp_path / "trace", tmp_path / "release"
    job_id = put_job(client, "q", "tests.jobs.block_until", [str(trace), str(release)])
    busy = int(wait_mark(trace, "start")[1])
    os.kill(busy, signal.SIGTERM)
    assert job_state(client, job_id)["state"] == "reserved"  # type: ignore[index]
    assert not gone(busy)
    release.touch()
    wait_mark(trace, "end")
    wait_for(lambda: job_state(client, job_id) is None, timeout=5)
    sup.wait_for_line(re.compile(rf"worker q #\d pid={busy} exited with status 0"), timeout=5)

    # And only those slots got new children
    sup.wait_children(3, timeout=10)
    after = slot_pids(sup)
    assert {k for k in after if after[k] == before[k]} == set(before) - {"q #1"} - {
        k for k, v in before.items() if v == busy
    }
    assert bad_lines(sup) == []
    stop_and_check(sup)


def test_c11_hup_usr1_usr2_ttin_ttou_never_kill_the_master(
    beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path
) -> None:
    # Given a pool of 1
    sup = start_pool(supervisor_factory, beanstalkd, tmp_path, {"q": 1})

    # When each signal arrives, Then the master does what it documents (if
    # anything), lives on, and still answers on its control socket (a request
    # made after the signal is sent is answered after it is handled)
    for sig, line in (
        (signal.SIGHUP, "reloaded"),
        (signal.SIGUSR1, "log files reopened"),
        (signal.SIGUSR2, None),
        (signal.SIGTTIN, "scale: queue q: 1 -> 2 processes"),
        (signal.SIGTTOU, "scale: queue q: 2 -> 1 processes"),
    ):
        sup.signal(sig)
        if line:
            sup.wait_for_line(line, timeout=5)
        assert ask(tmp_path / "ctl.sock", {"cmd": "status"})["ok"], sig.name
        assert sup.proc.poll() is None, sig.name
        assert psutil.Process(sup.pid).status() != psutil.STATUS_STOPPED, sig.name

    # And a mixed burst of all of them leaves it running and answering
    for _ in range(10):
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):
            sup.signal(sig)
    def consistent() -> bool:
        # re-read the count each time: a reply may predate the last signals
        count, titles = wanted(sup, "q"), sup.titles()
        return len(titles) == count and all(t.endswith(" idle") for t in titles)

    wait_for(consistent, timeout=30, message=sup.tail)
    assert sup.proc.poll() is None
    stop_and_check(sup)
