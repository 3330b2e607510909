"""The fixtures themselves work: a private beanstalkd that can be restarted on
its port with its binlog, and a Supervisor handle that sees children and
cleans up the ones a dead master left behind."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from tests.support import Beanstalkd, Supervisor, job_state, put_job, queue_tube, wait_for

# A stand-in master: forks two children titled like idle workers, then waits.
# On TERM it dies alone, so its children are orphans that teardown must kill.
FAKE_MASTER = """
import os, signal, setproctitle
for n in (1, 2):
    if os.fork() == 0:
        setproctitle.setproctitle(f"bbsupervise: worker q #{n} idle")
        signal.pause()
print("master ready", flush=True)
signal.pause()
"""


def test_put_and_reserve(beanstalkd: Beanstalkd) -> None:
    client = beanstalkd.client(watch=queue_tube("selftest"))
    job_id = put_job(client, "selftest", "Echo", [1, "two"])
    job = client.reserve(timeout=5)
    assert (job.id, job.body) == (job_id, b'{"class":"Echo","args":[1,"two"]}')
    assert beanstalkd.stats_tube(queue_tube("selftest"))["current-jobs-reserved"] == 1
    client.delete(job)
    assert job_state(client, job_id) is None
    assert beanstalkd.stats_tube("no-such-tube")["current-jobs-ready"] == 0


@pytest.mark.binlog
def test_job_survives_restart_on_same_port(beanstalkd: Beanstalkd) -> None:
    job_id = put_job(beanstalkd.client(), "selftest", "Echo", [])
    port, old_pid = beanstalkd.port, beanstalkd.pid
    beanstalkd.restart()
    assert (beanstalkd.port, beanstalkd.pid != old_pid) == (port, True)
    state = job_state(beanstalkd.client(), job_id)
    assert state is not None and state["state"] == "ready"


def test_supervisor_handle_kills_orphaned_children(tmp_path: Path) -> None:
    sup = Supervisor("", tmp_path, argv=[sys.executable, "-c", FAKE_MASTER])
    try:
        sup.wait_for_line("master ready")
        children = sup.wait_children(2, timeout=10)
    finally:
        sup.stop()
    assert "master ready" in (tmp_path / "supervisor.log").read_text()

    def gone(proc: psutil.Process) -> bool:
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(lambda: all(gone(c) for c in children), timeout=5, message="orphaned children killed")
