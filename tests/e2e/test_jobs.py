"""Job semantics end to end: the wire format, interoperation with Ruby backburner,
outcomes (delete, bury, retry with back-off), workers that die, time-to-run,
hooks that veto, and the producer's one connection (cases C17-C22).

The producer side runs in this process (``workers.enqueue`` against the
test's beanstalkd); the worker side is the real ``bbsupervise`` command.
"""
from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import threading
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

import tests.jobs as jobs
from tests.support import (REPO_ROOT, Beanstalkd, Supervisor, make_config, put_job,
                           queue_tube, wait_for, wait_state)
from workers import EnqueueError, enqueue

if TYPE_CHECKING:
    from tests.conftest import SupervisorFactory

# `workers.enqueue` the attribute is the function; the module is in sys.modules.
enqueue_mod = importlib.import_module("workers.enqueue")

QUEUE = "default-q"
TUBE = queue_tube(QUEUE)


# -- helpers ------------------------------------------------------------------

def pool(supervisor_factory: SupervisorFactory, beanstalkd: Beanstalkd,
         queues: dict[str, Any] | None = None, **keys: Any) -> tuple[Supervisor, list[int]]:
    """Start bbsupervise and wait until its children are idle; returns their pids."""
    env = keys.pop("env", None)
    sup = supervisor_factory(make_config(beanstalkd.url, queues or {QUEUE: 1}, **keys), env=env)
    total = sum(q if isinstance(q, int) else int(q.get("processes", 1))
                for q in (queues or {QUEUE: 1}).values())
    return sup, [c.pid for c in sup.wait_children(total)]




def wait_lines(path: Path, count: int, sup: Supervisor, timeout: float = 10.0) -> list[str]:
    """Wait until the file a job writes has at least ``count`` lines."""
    def enough() -> list[str] | None:
        lines = path.read_text().splitlines() if path.exists() else []
        return lines if len(lines) >= count else None

    return wait_for(enough, timeout=timeout,
                    message=lambda: f"{count} lines in {path.name}; last lines:\n{sup.tail()}")


def peek_body(beanstalkd: Beanstalkd, job_id: int | None) -> bytes:
    assert job_id is not None
    return beanstalkd.client().peek(job_id).body


def job_stats(client: Any, job_id: int | None) -> dict[str, Any]:
    """stats-job of a job that must exist (enqueue returned its id)."""
    assert job_id is not None
    return dict(client.stats_job(job_id))


# -- the wire format we produce ------------------------------------------------

def test_enqueue_puts_backburner_envelope_on_the_queue_tube(producer: Beanstalkd,
                                                            tmp_path: Path) -> None:
    # When a @job function and a @job class are enqueued
    fn_id = jobs.record.enqueue("/x/out", {"n": 1})
    via_api = enqueue(jobs.record, "/x/out", [1, None], pri=100, ttr=60)
    cls_id = jobs.NewsletterJob.enqueue("a@b.c", 1, None, {"k": "v"})  # type: ignore[attr-defined]
    # Then each body is exactly {"class": name, "args": [...]} in UTF-8 JSON
    assert json.loads(peek_body(producer, fn_id)) == \
        {"class": "tests.jobs.record", "args": ["/x/out", {"n": 1}]}
    assert json.loads(peek_body(producer, via_api)) == \
        {"class": "tests.jobs.record", "args": ["/x/out", [1, None]]}
    body = peek_body(producer, cls_id)
    assert body == b'{"class":"NewsletterJob","args":["a@b.c",1,null,{"k":"v"}]}'
    # And it sits on backburner.worker.queue.<queue> with the given settings
    client = producer.client()
    assert job_stats(client, fn_id)["tube"] == "backburner.worker.queue.default-q"
    assert job_stats(client, cls_id)["tube"] == "backburner.worker.queue.newsletter-sender"
    stats = job_stats(client, via_api)
    assert (stats["pri"], stats["ttr"], stats["state"]) == (100, 60, "ready")
    # And the job's defaults apply when the call gives none
    stats = job_stats(client, fn_id)
    assert (stats["pri"], stats["ttr"], stats["delay"]) == (65536, 120, 0)


def test_enqueue_returns_the_beanstalkd_job_id(producer: Beanstalkd) -> None:
    first = jobs.noop.enqueue()
    second = enqueue("tests.jobs.noop")
    assert isinstance(first, int) and second == first + 1
    assert job_stats(producer.client(), second)["id"] == second
    # a priority label resolves to its number before the put
    labelled = jobs.noop.enqueue(pri="low")
    assert job_stats(producer.client(), labelled)["pri"] == 200


# -- interoperation with a Ruby producer ---------------------------------------

def test_ruby_backburner_body_runs_the_job_registered_under_its_class_name(
        beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    # Given a pool whose children work in tmp_path/cwd (NewsletterJob writes to
    # its first arg, a relative path here, as a Ruby producer would send it)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    sup, (child,) = pool(supervisor_factory, beanstalkd, {"newsletter-sender": 1},
                         imports="tests.jobs, tests.hookjobs",
                         post_fork="tests.hookjobs:chdir_to_env",
                         env={"BB_TEST_CWD": str(cwd)})
    # When Ruby backburner's body is put on the queue's tube
    client = beanstalkd.client(use="backburner.worker.queue.newsletter-sender")
    job_id = client.put(b'{"class":"NewsletterJob","args":["a@b.c",1,null,{"k":"v"}]}',
                        priority=65536, ttr=120)
    # Then NewsletterJob.perform("a@b.c", 1, None, {"k": "v"}) ran and the job is deleted
    out = wait_lines(cwd / "a@b.c", 1, sup)
    assert json.loads(out[0]) == [1, None, {"k": "v"}]
    wait_state(sup, beanstalkd, job_id, None)
    sup.wait_for_line(re.compile(rf"job NewsletterJob id={job_id} completed in [\d.]+ ms"))


# -- outcomes -------------------------------------------------------------------

def test_success_deletes_and_logs_one_info_line(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    out = tmp_path / "out"
    # When two jobs are enqueued
    ids = [jobs.record.enqueue(str(out), n) for n in (1, 2)]
    # Then both ran in the child, are deleted, and each has one INFO line
    assert wait_lines(out, 2, sup) == [f"{child} 1", f"{child} 2"]
    for job_id in ids:
        wait_state(sup, producer, job_id, None)
        line = sup.wait_for_line(f"id={job_id} ")
        assert re.search(rf" INFO \[{child}\] {QUEUE}: job tests\.jobs\.record id={job_id} "
                         rf"completed in \d+(\.\d+)? ms$", line), line
    assert sum(f"id={ids[0]} " in line for line in sup.lines()) == 1


def test_exception_buries_keeping_the_priority(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    # When a job that raises is enqueued with priority 500 (and no retries)
    job_id = jobs.fail.enqueue("kaput", pri=500)
    # Then it is buried, still with priority 500, and the log says why
    stats = wait_state(sup, producer, job_id, "buried")
    assert (stats["pri"], stats["reserves"], stats["releases"]) == (500, 1, 0)
    line = sup.wait_for_line(f"id={job_id} failed")
    assert "job tests.jobs.fail" in line and "burying" in line
    assert "ValueError: kaput" in line
    # And the child lives on
    assert [c.pid for c in sup.children()] == [child]


def test_c17_retries_with_backoff_then_buries_keeping_priority(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    # Given max_job_retries = 2 and retry_delay = 1 for the queue
    sup, (child,) = pool(supervisor_factory, producer,
                         {QUEUE: {"processes": 1, "max_job_retries": 2, "retry_delay": 1}})
    attempts = tmp_path / "attempts"
    # When a job that always raises is enqueued with priority 500
    job_id = jobs.fail_and_record.enqueue(str(attempts), pri=500)
    # Then it is buried after three attempts, still with priority 500
    stats = wait_state(sup, producer, job_id, "buried", timeout=15)
    assert (stats["pri"], stats["reserves"], stats["releases"], stats["buries"]) == (500, 3, 2, 1)
    times = [float(line.split()[1]) for line in attempts.read_text().splitlines()]
    assert len(times) == 3
    # And the delays between attempts follow retry_delay + retries**3: 1 s, then 2 s
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 1.0 <= gaps[0] < 2.5, gaps
    assert 2.0 <= gaps[1] < 3.5, gaps
    # And the log tells each step
    sup.wait_for_line(f"id={job_id} failed: attempt 1 of 3, retrying in 1 s")
    sup.wait_for_line(f"id={job_id} failed: attempt 2 of 3, retrying in 2 s")
    line = sup.wait_for_line(f"id={job_id} failed: attempt 3 of 3, burying")
    assert "ValueError: fail_and_record always fails" in line


def kill_from_outside(sup: Supervisor, attempts: Path, count: int) -> None:
    """SIGKILL the child that holds the job, ``count`` times."""
    for n in range(1, count + 1):
        pid = int(wait_lines(attempts, n, sup)[-1].split()[1])
        assert pid in [c.pid for c in sup.children()]
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["os._exit", "os.abort", "SIGKILL", pytest.param(
    "os._exit(0)")])
def test_c18_job_that_kills_its_worker_ends_buried_after_three_attempts(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path,
        how: str) -> None:
    # Given max_job_retries = 2
    sup, _ = pool(supervisor_factory, producer, {QUEUE: {"processes": 1, "max_job_retries": 2}})
    attempts = tmp_path / "attempts"
    # When a job kills the worker that runs it, every time
    if how == "os._exit":
        job_id = jobs.exit_hard.enqueue(str(attempts), pri=300)
    elif how == "os._exit(0)":
        job_id = jobs.exit_zero.enqueue(str(attempts), pri=300)
    elif how == "os.abort":
        job_id = jobs.abort_hard.enqueue(str(attempts), pri=300)
    else:
        job_id = jobs.block_until.enqueue(str(attempts), str(tmp_path / "never"), 60, pri=300)
        kill_from_outside(sup, attempts, 3)
    # Then it is buried after three attempts (not retried forever), priority kept
    stats = wait_state(sup, producer, job_id, "buried", timeout=6)
    assert stats["pri"] == 300
    lines = attempts.read_text().splitlines()
    assert len(lines) == 3, lines
    assert len({line.split()[1] for line in lines}) == 3  # three different workers
    sup.wait_for_line(re.compile(rf"id={job_id} failed: attempt 3 of 3 killed its worker or lost its reservation, burying"))
    # And the replacement worker goes on serving
    out = tmp_path / "out"
    jobs.record.enqueue(str(out), "next")
    (line,) = wait_lines(out, 1, sup)
    assert line.endswith(" next")
    assert len(attempts.read_text().splitlines()) == 3


def test_c19_job_past_ttr_minus_1_is_stopped_and_the_worker_serves_on(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    trace = tmp_path / "trace"
    # When a job with TTR 3 sleeps 10 s
    put_at = time.monotonic()
    job_id = jobs.sleep_then_record.enqueue(str(trace), 10, ttr=3)
    # Then the child stops it after about 2 s (TTR - 1) and buries it (no retries)
    stats = wait_state(sup, producer, job_id, "buried", timeout=8)
    elapsed = time.monotonic() - put_at
    assert 1.9 <= elapsed < 5.0, elapsed
    # before beanstalkd's own TTR ran out
    assert (stats["timeouts"], stats["reserves"]) == (0, 1)
    line = sup.wait_for_line(f"id={job_id} failed")
    assert "burying: timed out after 2 s (TTR 3 s)" in line, line
    assert trace.read_text() == f"start {child}\n"  # never reached its end
    # And the same child serves the next job
    out = tmp_path / "out"
    jobs.record.enqueue(str(out), "next")
    assert wait_lines(out, 1, sup) == [f"{child} next"]
    assert [c.pid for c in sup.children()] == [child]


@pytest.mark.parametrize("retries, command", [(0, "bury"), (1, "release")])
def test_c19_release_or_bury_after_the_ttr_is_logged_not_raised(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path,
        retries: int, command: str) -> None:
    sup, (child,) = pool(supervisor_factory, producer,
                         {QUEUE: {"processes": 1, "max_job_retries": retries, "retry_delay": 0}})
    out = tmp_path / "out"
    # When a job outlives its TTR of 1 s (no deadline can be kept), then fails
    job_id = jobs.late_failure.enqueue(str(out), 1.5, ttr=1)
    # Then the late command gets NOT_FOUND, which is logged as a lost reservation
    line = sup.wait_for_line(re.compile(rf"id={job_id}: reservation lost.*cannot {command}"),
                             timeout=10)
    assert "WARNING" in line
    # And the same worker carries on. The failed attempt still counts: with a
    # retry left the job, ready again, runs and succeeds; with none it is
    # buried at its next reservation instead of running a second time.
    if retries:
        assert wait_lines(out, 1, sup) == [f"second {child}"]
        wait_state(sup, producer, job_id, None)
    else:
        wait_state(sup, producer, job_id, "buried")
        assert not out.exists()
    assert [c.pid for c in sup.children()] == [child]
    assert not any("Traceback" in line for line in sup.lines())


@pytest.mark.parametrize("ttr", [0, 1])
def test_c20_ttr_0_or_1_runs_the_job_without_a_deadline(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path,
        ttr: int) -> None:
    # Given jobs enqueued with TTR 0 or 1 before any worker runs
    out, slow = tmp_path / "out", tmp_path / "slow"
    quick_id = jobs.record.enqueue(str(out), "quick", ttr=ttr)
    slow_id = jobs.sleep_then_record.enqueue(str(slow), 1.5, ttr=ttr)
    # beanstalkd stores TTR 0 as 1 s
    assert job_stats(producer.client(), quick_id)["ttr"] == 1
    # When a single worker serves them
    sup, (child,) = pool(supervisor_factory, producer)
    # Then a quick job completes and is deleted
    wait_state(sup, producer, quick_id, None)
    # And a slow one runs to its end (no deadline can be kept within 1 s);
    # beanstalkd made it ready after 1 s and nobody took it, so the delete works
    assert wait_lines(slow, 2, sup) == [f"start {child}", f"end {child}"]
    wait_state(sup, producer, slow_id, None)
    # And the worker never crashed
    jobs.record.enqueue(str(out), "after")
    assert wait_lines(out, 2, sup) == [f"{child} quick", f"{child} after"]
    assert [c.pid for c in sup.children()] == [child]
    assert not any("Traceback" in line for line in sup.lines())


def hooks_pool(supervisor_factory: SupervisorFactory, beanstalkd: Beanstalkd,
               **queue: Any) -> tuple[Supervisor, int]:
    sup, (child,) = pool(supervisor_factory, beanstalkd, {QUEUE: {"processes": 1, **queue}},
                         imports="tests.jobs, tests.hookjobs")
    return sup, child


def test_c21_vetoed_job_is_buried_not_left_reserved(
        beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, child = hooks_pool(supervisor_factory, beanstalkd)
    out = tmp_path / "out"
    # When a job whose before_perform hook vetoes it is put (TTR 60 s)
    client = beanstalkd.client()
    job_id = put_job(client, QUEUE, "tests.hookjobs.vetoed", [str(out)], pri=42, ttr=60)
    # Then it is buried at once (long before its TTR), keeping its priority
    put_at = time.monotonic()
    stats = wait_state(sup, beanstalkd, job_id, "buried", timeout=10)
    assert time.monotonic() - put_at < 10
    assert (stats["pri"], stats["timeouts"]) == (42, 0)
    line = sup.wait_for_line(f"id={job_id} failed")
    assert "veto" in line and "burying" in line, line
    # And the hook ran, the job's body did not
    assert (tmp_path / "out.veto").read_text() == f"vetoed {child}\n"
    assert not out.exists()


def test_c21_vetoed_job_with_retries_left_is_released(
        beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, child = hooks_pool(supervisor_factory, beanstalkd, max_job_retries=1, retry_delay=30)
    client = beanstalkd.client()
    job_id = put_job(client, QUEUE, "tests.hookjobs.vetoed", [str(tmp_path / "out")], ttr=60)
    # Then it is released with the back-off delay, not held until its TTR
    stats = wait_state(sup, beanstalkd, job_id, "delayed", timeout=10)
    assert (stats["releases"], stats["timeouts"], stats["delay"]) == (1, 0, 30)
    assert not (tmp_path / "out").exists()


def test_c21_hook_that_raises_fails_the_job_not_the_worker(
        beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, child = hooks_pool(supervisor_factory, beanstalkd)
    client = beanstalkd.client()
    job_id = put_job(client, QUEUE, "tests.hookjobs.hook_raises", [str(tmp_path / "x")])
    wait_state(sup, beanstalkd, job_id, "buried")
    line = sup.wait_for_line(f"id={job_id} failed")
    assert "RuntimeError: before_perform hook exploded" in line, line
    assert not (tmp_path / "x").exists()
    # And the worker serves on
    out = tmp_path / "out"
    put_job(client, QUEUE, "tests.jobs.record", [str(out), "next"])
    assert wait_lines(out, 1, sup) == [f"{child} next"]


# -- the producer ---------------------------------------------------------------

def beanstalkd_connections(port: int) -> list[Any]:
    return [c for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port]


def test_c22_fifty_thousand_enqueues_reuse_one_connection(producer: Beanstalkd) -> None:
    # Given the count of connections the server has accepted so far
    before = producer.stats()["total-connections"]
    # When a producer enqueues 50,000 jobs in a loop
    for n in range(50_000):
        jobs.noop.enqueue()
    # Then all of them went over one connection: the server accepted just one
    # more, besides the stats call below; this process holds one socket to it
    after = producer.stats()["total-connections"]
    assert after - before == 2, (before, after)
    assert len(beanstalkd_connections(producer.port)) == 1
    assert producer.stats_tube(TUBE)["total-jobs"] == 50_000


def test_enqueue_by_name_with_queue_from_a_producer_without_the_code(
        beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, beanstalkd)
    out = tmp_path / "out"
    # Given a producer process that never imports the job's module
    script = (
        "import sys\n"
        "from workers import configure, enqueue\n"
        f"configure(beanstalk_url={beanstalkd.url!r})\n"
        f"print(enqueue('tests.jobs.record', {str(out)!r}, 'by-name', queue={QUEUE!r}))\n"
        "print('tests.jobs' in sys.modules)\n"
    )
    # When it enqueues by name, with queue=
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    job_id, imported = result.stdout.split()
    assert imported == "False"
    # Then the worker runs the job registered under that name
    assert wait_lines(out, 1, sup) == [f"{child} by-name"]
    wait_state(sup, beanstalkd, int(job_id), None)


def test_enqueue_by_name(producer: Beanstalkd) -> None:
    client = producer.client()
    # a registered name needs no queue=
    job_id = enqueue("tests.jobs.record", "/x", 1)
    assert job_stats(client, job_id)["tube"] == TUBE
    # any name with queue= goes to that queue's tube, in backburner's shape
    job_id = enqueue("ReportJob", 7, queue="reports")
    assert job_stats(client, job_id)["tube"] == "backburner.worker.queue.reports"
    assert json.loads(peek_body(producer, job_id)) == {"class": "ReportJob", "args": [7]}
    # queue= also overrides a registered job's own queue
    job_id = enqueue(jobs.record, "/x", 2, queue="other")
    assert job_stats(client, job_id)["tube"] == "backburner.worker.queue.other"
    # an unknown name without queue= is an error, not a guess
    with pytest.raises(ValueError, match="queue="):
        enqueue("NoSuchJobAnywhere", 1)


def test_enqueue_delay_as_seconds_timedelta_or_aware_datetime(producer: Beanstalkd) -> None:
    client = producer.client()
    by_int = jobs.noop.enqueue(delay=30)
    by_delta = jobs.noop.enqueue(delay=dt.timedelta(seconds=30))
    by_minutes = jobs.noop.enqueue(delay=dt.timedelta(minutes=2))
    at = dt.datetime.now(dt.timezone(dt.timedelta(hours=5))) + dt.timedelta(seconds=30)
    by_datetime = jobs.noop.enqueue(delay=at)
    past = jobs.noop.enqueue(delay=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    for job_id, delay in ((by_int, 30), (by_delta, 30), (by_minutes, 120)):
        stats = job_stats(client, job_id)
        assert (stats["state"], stats["delay"]) == ("delayed", delay)
    stats = job_stats(client, by_datetime)
    assert stats["state"] == "delayed" and 29 <= stats["delay"] <= 30
    assert job_stats(client, past)["state"] == "ready"
    # a naive datetime is ambiguous: an error, not a guess
    with pytest.raises(ValueError, match="timezone-aware"):
        jobs.noop.enqueue(delay=dt.datetime.now())
    with pytest.raises(ValueError):
        jobs.noop.enqueue(delay=-1)


def test_enqueued_delay_is_honoured_by_the_worker(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    out = tmp_path / "out"
    put_at = time.monotonic()
    job_id = jobs.record.enqueue(str(out), "later", delay=dt.timedelta(seconds=1))
    assert wait_lines(out, 1, sup) == [f"{child} later"]
    assert time.monotonic() - put_at >= 1.0
    wait_state(sup, producer, job_id, None)


def test_body_over_65535_bytes_is_a_clear_error_before_sending(producer: Beanstalkd) -> None:
    head = len(b'{"class":"tests.jobs.noop","args":["')
    tail = len(b'"]}')
    # Given a body of exactly 65,535 bytes: beanstalkd's limit, accepted
    fits = enqueue("tests.jobs.noop", "x" * (65_535 - head - tail))
    assert job_stats(producer.client(), fits)["state"] == "ready"
    total_before = producer.stats_tube(TUBE)["total-jobs"]
    # When one byte more is enqueued
    with pytest.raises(EnqueueError) as info:
        enqueue("tests.jobs.noop", "x" * (65_536 - head - tail))
    # Then the error names the job and the sizes, and nothing reached the server
    message = str(info.value)
    assert "tests.jobs.noop" in message and "65536" in message and "65535" in message
    assert producer.stats_tube(TUBE)["total-jobs"] == total_before


def test_body_over_the_limit_is_refused_without_connecting(producer: Beanstalkd) -> None:
    enqueue_mod.reset_connection()
    before = producer.stats()["total-connections"]
    with pytest.raises(EnqueueError):
        jobs.record.enqueue("/x", "y" * 70_000)
    assert producer.stats()["total-connections"] == before + 1  # only the stats calls


def test_plain_call_runs_in_process(producer: Beanstalkd, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # When jobs are called like functions
    assert jobs.record(str(out), "local") is None
    jobs.NewsletterJob.perform(str(out), "a@b.c", 1)
    # Then they ran here and now, and nothing was enqueued
    assert out.read_text().splitlines() == [f"{os.getpid()} local", '["a@b.c", 1]']
    assert producer.stats()["total-jobs"] == 0
    with pytest.raises(ValueError, match="boom"):
        jobs.fail()


def test_c19_poison_job_failing_after_its_ttr_still_ends_buried(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    # Given max_job_retries = 1
    sup, (child,) = pool(supervisor_factory, producer,
                         {QUEUE: {"processes": 1, "max_job_retries": 1, "retry_delay": 0}})
    attempts = tmp_path / "attempts"
    # When a job always fails, each time after its TTR of 1 s has run out
    job_id = jobs.slow_poison.enqueue(str(attempts), 1.5, ttr=1)
    # Then its two attempts are used up and it ends buried, not retried forever
    stats = wait_state(sup, producer, job_id, "buried", timeout=7)
    assert stats["reserves"] >= 2
    assert len(attempts.read_text().splitlines()) == 2


def test_c19_failure_after_the_ttr_still_logs_the_exception(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    out = tmp_path / "out"
    # When a job fails only after its TTR of 1 s ran out
    job_id = jobs.late_failure.enqueue(str(out), 1.5, ttr=1)
    # Then the log still says which job failed and why, as for any failure
    sup.wait_for_line(re.compile(rf"id={job_id}: reservation lost"), timeout=10)
    # (max_job_retries is 0: the next reservation buries it, the attempt counted)
    wait_state(sup, producer, job_id, "buried")
    failure = [line for line in sup.lines() if f"id={job_id}" in line
               and "RuntimeError: failed after its TTR expired" in line]
    assert failure and "job tests.jobs.late_failure" in failure[0], sup.tail()


def test_enqueue_keeps_one_connection_per_thread_and_a_new_one_after_fork(
        producer: Beanstalkd) -> None:
    # Given a producer that has enqueued once (its connection is open)
    jobs.noop.enqueue()
    before = producer.stats()["total-connections"]

    # When two threads enqueue 100 jobs each
    def put_many() -> None:
        for _ in range(100):
            jobs.noop.enqueue()

    threads = [threading.Thread(target=put_many) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Then each thread opened exactly one connection of its own (+1 for stats)
    assert producer.stats()["total-connections"] - before == 3

    # When a forked child enqueues, Then it opens its own connection rather
    # than using the parent's socket, and the parent's keeps working
    before = producer.stats()["total-connections"]
    pid = os.fork()
    if pid == 0:  # the child: enqueue once, report by exit status
        try:
            jobs.noop.enqueue()
            os._exit(0)
        except BaseException:  # noqa: BLE001 - any failure is the test's answer
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    jobs.noop.enqueue()
    assert producer.stats()["total-connections"] - before == 2  # child's + stats
    assert producer.stats_tube(TUBE)["total-jobs"] == 1 + 200 + 2


def test_debug_level_logs_the_start_of_each_job(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    # Given a pool at log_level = debug
    sup, _ = pool(supervisor_factory, producer, log_level="debug")
    # When a job runs
    job_id = jobs.record.enqueue(str(tmp_path / "out"), 1)
    # Then its start is logged at DEBUG before its INFO completion line
    started = sup.wait_for_line(f"job tests.jobs.record id={job_id} started")
    done = sup.wait_for_line(f"job tests.jobs.record id={job_id} completed in")
    assert " DEBUG " in started and " INFO " in done
    lines = sup.lines()
    assert lines.index(started) < lines.index(done)
