"""A reserve sent together with the last delete is never wasted by a stop.

After a successful job the worker sends ``delete`` and its next
``reserve-with-timeout`` in one write. If a stop arrives in between, a job
that the pipelined reserve already brought is in hand: it must run, since
an unrun reservation would still count as one of the job's attempts
(beanstalkd's ``reserves``), and a job with retries left would be buried
early. These tests drive the worker loop in-process to hit that window
exactly.
"""
from __future__ import annotations

import time
from pathlib import Path

from tests import jobs
from tests.support import Beanstalkd, job_state, put_job
from workers.runner import Runner, WorkerSpec
from workers.scoreboard import CrashTable, StateSlot

QUEUE = "default-q"
TUBE = f"backburner.worker.queue.{QUEUE}"


def runner_for(server: Beanstalkd) -> Runner:
    spec = WorkerSpec(queue=QUEUE, tube=TUBE, index=1, address=(server.host, server.port),
                      reply_timeout=4.0)
    return Runner(spec, StateSlot(), CrashTable(), lambda title: None)


def test_stop_after_a_pipelined_reserve_runs_the_job_it_brought(
        beanstalkd: Beanstalkd, tmp_path: Path) -> None:
    # Given two jobs, and a worker that ran the first one successfully
    client = beanstalkd.client()
    out = tmp_path / "out"
    first = put_job(client, QUEUE, jobs.record.spec.name, [str(out), "first"])
    second = put_job(client, QUEUE, jobs.record.spec.name, [str(out), "second"])
    runner = runner_for(beanstalkd)
    job = runner.reserve()
    assert job is not None and job.id == first
    runner.handle(job)  # its delete went out with the next reserve
    assert runner.pending_reserve

    # When the stop arrives before the worker reads that reserve's reply
    runner.stopping = True
    code = runner.run()

    # Then the second job, already reserved for this worker, ran and was deleted
    assert code == 0
    assert out.read_text().split()[1::2] == ["first", "second"]
    assert job_state(client, second) is None
    assert job_state(client, first) is None


def test_stop_with_a_pipelined_reserve_and_no_job_leaves_at_once(
        beanstalkd: Beanstalkd, tmp_path: Path) -> None:
    # Given a worker that ran the only job, its next reserve still pending
    client = beanstalkd.client()
    out = tmp_path / "out"
    put_job(client, QUEUE, jobs.record.spec.name, [str(out), "only"])
    runner = runner_for(beanstalkd)
    job = runner.reserve()
    assert job is not None
    runner.handle(job)
    assert runner.pending_reserve

    runner.stopping = True
    # When the stop arrives, Then the worker leaves without waiting for the
    # reserve's timeout, and a job put now stays ready for someone else
    started = time.monotonic()
    assert runner.run() == 0
    assert time.monotonic() - started < 1.0
    late = put_job(client, QUEUE, jobs.record.spec.name, [str(out), "late"])
    stats = job_state(client, late)
    assert stats is not None and stats["state"] == "ready" and stats["reserves"] == 0
