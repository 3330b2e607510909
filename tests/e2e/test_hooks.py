"""Hooks end to end: per-job hooks on function and class jobs, global hooks,
the config's worker hooks, custom back-off, priority labels and tube names.

The producer side runs in this process (``workers.enqueue`` against the
test's beanstalkd); the worker side is the real ``bbsupervise`` console
script importing tests/hooks_e2e.py, whose jobs and hooks append one JSON
array per call to a file the test names. Tests wait on those files, on log
lines and on beanstalkd's ``stats-job``; never on the clock.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import tests.hooks_e2e as h
from tests.support import (REPO_ROOT, Beanstalkd, Supervisor, make_config, proc_title,
                           queue_tube, wait_for, wait_state)
from workers import configure, enqueue

if TYPE_CHECKING:
    from tests.conftest import SupervisorFactory


QUEUE = h.QUEUE
TUBE = queue_tube(QUEUE)
IMPORTS = "tests.hooks_e2e"
BBSUPERVISE = str(Path(sys.executable).parent / "bbsupervise")
EMPTY_BUT_RESERVED = {"ready": 0, "reserved": 1, "delayed": 0, "buried": 0}


# -- helpers ------------------------------------------------------------------

def pool(supervisor_factory: SupervisorFactory, beanstalkd: Beanstalkd,
         queues: dict[str, Any] | None = None, env: dict[str, str] | None = None,
         **keys: Any) -> tuple[Supervisor, list[int]]:
    """Start the bbsupervise console script; wait until its children are idle."""
    queues = queues or {QUEUE: 1}
    sup = supervisor_factory(make_config(beanstalkd.url, queues, imports=IMPORTS, **keys),
                             env=env, use_console_script=True)
    total = sum(q if isinstance(q, int) else int(q.get("processes", 1)) for q in queues.values())
    return sup, [c.pid for c in sup.wait_children(total)]


def worker_records(path: Path) -> list[list[Any]]:
    """The records written in the worker: the producer's enqueue hooks left out
    (its after_enqueue may run while the worker already has the job)."""
    return [r for r in records(path) if not r[0].endswith("_enqueue")]


def records(path: Path) -> list[list[Any]]:
    """The JSON arrays appended to ``path`` so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_record(path: Path, kind: str, sup: Supervisor, count: int = 1,
                timeout: float = 10.0) -> list[Any]:
    """Wait for the ``count``-th record of ``kind`` in ``path`` and return it."""
    def found() -> list[Any] | None:
        matching = [r for r in records(path) if r[0] == kind]
        return matching[count - 1] if len(matching) >= count else None

    return wait_for(found, timeout=timeout,
                    message=lambda: f"{count}x {kind} in {path.name} (have {records(path)}); "
                                    f"last lines:\n{sup.tail()}")


def job_stats(beanstalkd: Beanstalkd, job_id: int | None) -> dict[str, Any]:
    assert job_id is not None
    return dict(beanstalkd.client().stats_job(job_id))


def sent(beanstalkd: Beanstalkd) -> tuple[int, int, int]:
    """What the server has been asked to do with jobs and tubes so far."""
    stats = beanstalkd.stats()
    return stats["cmd-put"], stats["cmd-use"], stats["total-jobs"]


# -- per-job hooks on a function job ----------------------------------------------

def test_before_enqueue_veto_returns_none_and_puts_nothing(
        producer: Beanstalkd, tmp_path: Path) -> None:
    out = tmp_path / "trace"
    before = sent(producer)
    # When a job whose before_enqueue hook returns False is enqueued
    result = h.traced.enqueue(str(out), "veto")
    # Then enqueue returns None and the server got no put (nor a use)
    assert result is None
    assert sent(producer) == before
    assert producer.stats_tube(TUBE)["total-jobs"] == 0
    # And the hook saw the args; after_enqueue did not run
    assert records(out) == [["before_enqueue", "veto", 0]]


def test_after_enqueue_runs_after_the_put_with_the_args(
        producer: Beanstalkd, tmp_path: Path) -> None:
    out = tmp_path / "trace"
    # When a job with enqueue hooks is enqueued
    job_id = h.traced.enqueue(str(out), {"k": [1, None]})
    # Then before_enqueue saw an empty tube, after_enqueue the job on it, both with the args
    assert records(out) == [["before_enqueue", {"k": [1, None]}, 0],
                            ["after_enqueue", {"k": [1, None]}, 1]]
    assert job_stats(producer, job_id)["state"] == "ready"


def test_before_around_after_perform_run_in_order_with_the_args(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    out = tmp_path / "trace"
    # When a job with before/around/after_perform hooks runs
    job_id = h.traced.enqueue(str(out), "v1")
    wait_state(sup, producer, job_id, None)
    # Then, in the worker: before_perform, around_perform wrapping the job
    # (proceed() ran it), after_perform; each with the job's args
    assert worker_records(out) == [
        ["before_perform", child, "v1"], ["around_enter", "v1"], ["perform", child, "v1"],
        ["around_exit", "v1"], ["after_perform", "v1"]]
    sup.wait_for_line(re.compile(rf"job tests\.hooks_e2e\.traced id={job_id} completed"))


def test_after_perform_that_raises_fails_the_attempt_and_keeps_the_job(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    out = tmp_path / "trace"
    # When the job succeeds but its after_perform hook raises (no retries left)
    job_id = h.after_perform_raises.enqueue(str(out))
    # Then the job is not deleted: the attempt failed and the job is buried
    stats = wait_state(sup, producer, job_id, "buried")
    assert (stats["reserves"], stats["buries"]) == (1, 1)
    assert records(out) == [["perform", child], ["after_perform"]]
    line = sup.wait_for_line(f"id={job_id} failed")
    assert "burying" in line and "RuntimeError: after_perform hook exploded" in line, line
    assert not any(f"id={job_id} completed" in line for line in sup.lines())


def test_on_failure_gets_the_exception_and_the_args(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    out = tmp_path / "trace"
    # When a job raises
    job_id = h.fails.enqueue(str(out), "x1")
    wait_state(sup, producer, job_id, "buried")
    # Then on_failure got the exception first, then the job's args
    assert wait_record(out, "on_failure", sup) == \
        ["on_failure", "ValueError", "fails with x1", str(out), "x1"]


def test_on_retry_gets_attempt_delay_and_args_before_the_release(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer,
                         {QUEUE: {"processes": 1, "max_job_retries": 1, "retry_delay": 30}})
    out = tmp_path / "trace"
    # When a job with a retry left fails
    job_id = h.fails.enqueue(str(out), "r1")
    # Then it is released with the back-off delay
    stats = wait_state(sup, producer, job_id, "delayed")
    assert (stats["releases"], stats["delay"]) == (1, 30)
    # And on_retry got (attempt, delay, *args) while the job was still reserved
    assert wait_record(out, "on_retry", sup) == \
        ["on_retry", 1, 30, str(out), "r1", EMPTY_BUT_RESERVED]
    sup.wait_for_line(f"id={job_id} failed: attempt 1 of 2, retrying in 30 s")


def test_on_bury_gets_the_args_before_the_bury(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    out = tmp_path / "trace"
    # When a job with no retries fails
    job_id = h.fails.enqueue(str(out), "b1")
    wait_state(sup, producer, job_id, "buried")
    # Then on_bury got the args while the job was still reserved, not yet buried
    assert wait_record(out, "on_bury", sup) == ["on_bury", str(out), "b1", EMPTY_BUT_RESERVED]
    assert not any(r[0] == "on_retry" for r in records(out))


# -- per-job hooks and settings on a class job ---------------------------------------

def test_class_job_enqueue_hooks_veto_and_follow_the_put(
        producer: Beanstalkd, tmp_path: Path) -> None:
    out = tmp_path / "trace"
    # When a class job is enqueued once with a vetoed value, once with a good one
    vetoed = h.ClassHooked.enqueue(str(out), "veto")  # type: ignore[attr-defined]
    job_id = h.ClassHooked.enqueue(str(out), "ok")  # type: ignore[attr-defined]
    # Then the veto put nothing, and the class's after_enqueue saw the job on the tube
    assert vetoed is None and job_id is not None
    assert records(out) == [["before_enqueue", "ClassHooked", "veto"],
                            ["before_enqueue", "ClassHooked", "ok"],
                            ["after_enqueue", "ClassHooked", "ok", 1]]
    assert producer.stats_tube(TUBE)["total-jobs"] == 1
    assert json.loads(producer.client().peek(job_id).body)["class"] == "HooksE2E::ClassHooked"


def test_class_job_hook_methods_wrap_perform_in_order(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    out = tmp_path / "trace"
    # When a class job with before/around/after_perform class methods runs
    job_id = h.ClassHooked.enqueue(str(out), "c1")  # type: ignore[attr-defined]
    wait_state(sup, producer, job_id, None)
    # Then they ran in order around perform, each with the args
    assert worker_records(out) == [
        ["before_perform", "ClassHooked", "c1"], ["around_enter", "ClassHooked", "c1"],
        ["perform", child, "c1"], ["around_exit", "ClassHooked", "c1"],
        ["after_perform", "ClassHooked", "c1"]]


def test_class_job_hooks_as_documented_methods_with_self_get_their_args(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    out = tmp_path / "trace"
    # Given a class job whose hooks are `def before_perform(self, path)` and
    # `def on_failure(self, exc, path)`, as in docs/jobs.md
    # When it runs and fails
    job_id = h.DocStyle.enqueue(str(out))  # type: ignore[attr-defined]
    wait_state(sup, producer, job_id, "buried")
    wait_for(lambda: any(r[0] == "on_failure" for r in records(out))
             or any("on_failure hook failed" in line for line in sup.lines()),
             message=sup.tail)
    # Then both hooks ran with the args, and the failure is the job's own
    assert records(out) == [["before_perform", str(out)], ["perform", child],
                            ["on_failure", "ValueError", str(out)]], sup.tail()
    assert "ValueError: doc style fails" in sup.wait_for_line(f"id={job_id} failed")


def test_class_attributes_set_tube_priority_and_ttr_on_enqueue(producer: Beanstalkd) -> None:
    # When a class job with queue, pri and ttr attributes is enqueued
    job_id = h.ClassAttrs.enqueue("/x", 0)  # type: ignore[attr-defined]
    # Then the put used them
    stats = job_stats(producer, job_id)
    assert (stats["tube"], stats["pri"], stats["ttr"]) == \
        ("backburner.worker.queue.hooks-cls", 321, 2)
    # And the enqueue call still wins over the class
    stats = job_stats(producer, h.ClassAttrs.enqueue("/x", 0, pri=5, ttr=9))  # type: ignore[attr-defined]
    assert (stats["pri"], stats["ttr"]) == (5, 9)


def test_class_attributes_drive_the_deadline_retries_and_backoff_in_the_worker(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    # Given a queue section that says no retries and a 30 s delay, which the
    # class's own max_job_retries = 1, retry_delay = 1 (and ttr = 2) override
    sup, (child,) = pool(supervisor_factory, producer,
                         {h.CLASS_QUEUE: {"processes": 1, "max_job_retries": 0,
                                          "retry_delay": 30}})
    out = tmp_path / "trace"
    # When the job outlives ttr - 1 every time
    job_id = h.ClassAttrs.enqueue(str(out), 10)  # type: ignore[attr-defined]
    # Then it was stopped after 1 s, retried once after 1 s, then buried, priority kept
    stats = wait_state(sup, producer, job_id, "buried", timeout=15)
    assert (stats["pri"], stats["reserves"], stats["releases"], stats["buries"],
            stats["timeouts"]) == (321, 2, 1, 1, 0)
    sup.wait_for_line(f"id={job_id} failed: attempt 1 of 2, retrying in 1 s: "
                      "timed out after 1 s (TTR 2 s)")
    sup.wait_for_line(f"id={job_id} failed: attempt 2 of 2, burying")
    # And the class's on_retry, on_bury and on_failure methods ran at each step
    wait_record(out, "on_failure", sup, count=2)
    assert [r[0] for r in records(out)] == ["perform", "on_retry", "on_failure",
                                            "perform", "on_bury", "on_failure"]
    assert wait_record(out, "on_retry", sup) == ["on_retry", 1, 1, EMPTY_BUT_RESERVED]
    assert wait_record(out, "on_failure", sup)[1] == "JobTimeout"


# -- global hooks ------------------------------------------------------------------

def test_global_perform_hooks_get_the_job_name_first(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    glog, out = tmp_path / "global", tmp_path / "trace"
    # Given global hooks registered by a module the master imports
    sup, (child,) = pool(supervisor_factory, producer, env={h.GLOBAL_LOG_ENV: str(glog)})
    # When a job runs
    job_id = h.traced.enqueue(str(out), "g1")
    wait_state(sup, producer, job_id, None)
    # Then every global hook got the job name, then the job's args
    name = "tests.hooks_e2e.traced"
    assert records(glog) == [[point, name, str(out), "g1"] for point in
                             ("before_perform", "around_enter", "around_exit", "after_perform")]
    # And the job's own hooks ran as well
    assert [r[0] for r in worker_records(out)] == ["before_perform", "around_enter", "perform",
                                                "around_exit", "after_perform"]


def test_global_on_error_gets_exc_job_name_args_and_job_id(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    glog, out = tmp_path / "global", tmp_path / "trace"
    sup, (child,) = pool(supervisor_factory, producer, env={h.GLOBAL_LOG_ENV: str(glog)})
    # When a job fails for good
    job_id = h.fails.enqueue(str(out), "e1")
    wait_state(sup, producer, job_id, "buried")
    # Then on_error got (exc, job_name, args, job_id)
    name = "tests.hooks_e2e.fails"
    assert wait_record(glog, "on_error", sup) == \
        ["on_error", "ValueError", "fails with e1", name, [str(out), "e1"], job_id]
    # And the global failure-path hooks got the job name first
    assert wait_record(glog, "on_bury", sup) == ["on_bury", name, str(out), "e1"]
    assert wait_record(glog, "on_failure", sup) == ["on_failure", name, "ValueError", str(out), "e1"]


def test_global_enqueue_hooks_in_a_producer_get_the_job_name_and_may_veto(
        beanstalkd: Beanstalkd, tmp_path: Path) -> None:
    glog = tmp_path / "global"
    # Given a producer process that imports the module registering global hooks
    script = (
        "import json\n"
        "import tests.hooks_e2e as h\n"
        "from workers import configure\n"
        f"configure(beanstalk_url={beanstalkd.url!r})\n"
        "print(json.dumps([h.plain.enqueue('p1'), h.plain.enqueue('global-veto')]))\n"
    )
    # When it enqueues one job, then one that the global before_enqueue vetoes
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, timeout=30,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT),
                                   **{h.GLOBAL_LOG_ENV: str(glog)}),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    job_id, vetoed = json.loads(done.stdout)
    # Then the first was put and the second was not
    assert isinstance(job_id, int) and vetoed is None
    assert beanstalkd.stats_tube(TUBE)["total-jobs"] == 1
    # And the global hooks got the job name first
    name = "tests.hooks_e2e.plain"
    assert records(glog) == [["before_enqueue", name, "p1"], ["after_enqueue", name, "p1"],
                             ["before_enqueue", name, "global-veto"]]


# -- hooks that raise on a failure path -----------------------------------------------

def test_on_failure_hook_that_raises_is_logged_and_the_outcome_stands(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer)
    out = tmp_path / "trace"
    # When a failing job's on_failure hook raises
    job_id = h.fails_hooks_raise.enqueue(str(out))
    # Then the hook's error is logged with the job
    line = sup.wait_for_line(f"id={job_id}: on_failure hook failed")
    assert "job tests.hooks_e2e.fails_hooks_raise" in line
    assert "RuntimeError: on_failure hook exploded" in line, line
    # And the job stays buried, once
    stats = wait_state(sup, producer, job_id, "buried")
    assert (stats["reserves"], stats["buries"], stats["releases"]) == (1, 1, 0)
    assert "ValueError: the job failed" in sup.wait_for_line(f"id={job_id} failed")
    # And the same worker serves the next job
    h.plain.enqueue(str(tmp_path / "next"))
    assert wait_record(tmp_path / "next", "perform", sup) == ["perform", child]
    assert [c.pid for c in sup.children()] == [child]


def test_on_retry_hook_that_raises_still_releases_the_job(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    sup, (child,) = pool(supervisor_factory, producer,
                         {QUEUE: {"processes": 1, "max_job_retries": 1, "retry_delay": 30}})
    out = tmp_path / "trace"
    # When a failing job's on_retry hook raises, before the release
    job_id = h.fails_hooks_raise.enqueue(str(out))
    # Then the job is still released with its back-off, and the error logged
    stats = wait_state(sup, producer, job_id, "delayed")
    assert (stats["releases"], stats["delay"]) == (1, 30)
    line = sup.wait_for_line(f"id={job_id}: on_retry hook failed")
    assert "RuntimeError: on_retry hook exploded" in line, line
    sup.wait_for_line(f"id={job_id} failed: attempt 1 of 2, retrying in 30 s")
    assert [c.pid for c in sup.children()] == [child]


# -- worker hooks from the config ---------------------------------------------------

def worker_titles(sup: Supervisor) -> dict[int, str]:
    return {c.pid: proc_title(c) for c in sup.children()}


def test_post_fork_runs_in_each_child_after_the_fork_before_it_connects(
        beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    wlog = tmp_path / "worker-hooks"
    # Given a post_fork hook in [supervisor] and two queues
    sup, pids = pool(supervisor_factory, beanstalkd, {QUEUE: 2, "other-q": 1},
                     post_fork="tests.hooks_e2e:record_post_fork",
                     env={h.WORKER_LOG_ENV: str(wlog)})
    # Then it ran once in every child (forked by the master) with its queue and
    # index, while the child held no connection to beanstalkd
    recs = records(wlog)
    assert sorted(r[1] for r in recs) == sorted(pids)
    assert {r[2] for r in recs} == {sup.pid}
    assert sorted((r[3], r[4]) for r in recs) == [(QUEUE, 1), (QUEUE, 2), ("other-q", 1)]
    assert [r[5] for r in recs] == [0, 0, 0]
    titles = worker_titles(sup)
    for _, pid, _, queue, index, _ in recs:
        assert f"worker {queue} #{index}" in titles[pid], titles


def test_worker_exit_runs_in_each_child_when_it_exits_on_drain(
        beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    wlog = tmp_path / "worker-hooks"
    sup, pids = pool(supervisor_factory, beanstalkd, {QUEUE: 2},
                     worker_exit="tests.hooks_e2e:record_worker_exit",
                     env={h.WORKER_LOG_ENV: str(wlog)})
    assert records(wlog) == []
    # When the master is told to drain
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(timeout=15) == 0
    # Then worker_exit ran once in each child, with its queue and index
    recs = records(wlog)
    assert {r[0] for r in recs} == {"worker_exit"}
    assert sorted(r[1] for r in recs) == sorted(pids)
    assert sorted((r[2], r[3]) for r in recs) == [(QUEUE, 1), (QUEUE, 2)]


def test_post_fork_in_a_queue_section_is_used_by_that_queue_only(
        beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    wlog = tmp_path / "worker-hooks"
    # Given post_fork in [supervisor] and another one in [queue:special-q]
    sup, pids = pool(supervisor_factory, beanstalkd,
                     {QUEUE: 1, "special-q": {"processes": 1,
                                              "post_fork": "tests.hooks_e2e:record_post_fork_override"}},
                     post_fork="tests.hooks_e2e:record_post_fork",
                     env={h.WORKER_LOG_ENV: str(wlog)})
    # Then special-q's child ran only its own hook, the other child only the global one
    by_kind = {(r[0], r[3], r[4]) for r in records(wlog)}
    assert by_kind == {("post_fork", QUEUE, 1), ("post_fork_override", "special-q", 1)}
    assert sorted(r[1] for r in records(wlog)) == sorted(pids)


# -- custom back-off --------------------------------------------------------------

def test_retry_delay_func_sets_the_release_delay(
        producer: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    # Given a queue with retry_delay 5, and a job with retry_delay 3 and
    # retry_delay_func = retry_delay * 10 + retries + 7
    sup, (child,) = pool(supervisor_factory, producer,
                         {QUEUE: {"processes": 1, "retry_delay": 5}})
    # When the job fails for the first time
    job_id = h.custom_backoff.enqueue(str(tmp_path / "trace"))
    # Then it is released with the delay its function gave: 3 * 10 + 0 + 7
    stats = wait_state(sup, producer, job_id, "delayed")
    assert (stats["releases"], stats["delay"]) == (1, 37)
    sup.wait_for_line(f"id={job_id} failed: attempt 1 of 3, retrying in 37 s")


# -- priority labels ---------------------------------------------------------------

def test_priority_label_high_puts_priority_zero(producer: Beanstalkd) -> None:
    # When a job is enqueued with pri="high", by object and by name
    by_job = h.plain.enqueue("/x", pri="high")
    by_name = enqueue("tests.hooks_e2e.plain", "/x", pri="high")
    # Then beanstalkd holds it at priority 0
    assert job_stats(producer, by_job)["pri"] == 0
    assert job_stats(producer, by_name)["pri"] == 0


def test_priority_labels_of_a_queue_section_apply_to_that_queue_only(
        producer: Beanstalkd, tmp_path: Path) -> None:
    # Given a config whose [queue:labelled-q] has its own labels
    cfg = tmp_path / "bb.ini"
    cfg.write_text(make_config(producer.url, {QUEUE: 1, "labelled-q": {
        "processes": 1, "priority_labels": "high=7, urgent=3"}}, imports=IMPORTS))
    configure(config_file=str(cfg))
    # When jobs are enqueued with labels on each queue
    high_there = h.plain.enqueue("/x", pri="high", queue="labelled-q")
    urgent_there = h.plain.enqueue("/x", pri="urgent", queue="labelled-q")
    high_here = h.plain.enqueue("/x", pri="high")
    # Then labelled-q's labels apply there, the defaults elsewhere
    assert job_stats(producer, high_there)["pri"] == 7
    assert job_stats(producer, urgent_there)["pri"] == 3
    assert job_stats(producer, high_here)["pri"] == 0
    with pytest.raises(ValueError, match="unknown priority label 'urgent'"):
        h.plain.enqueue("/x", pri="urgent")


def test_unknown_priority_label_raises_before_anything_is_sent(producer: Beanstalkd) -> None:
    before = sent(producer)
    # When a job is enqueued with a label nobody defined
    with pytest.raises(ValueError, match="unknown priority label 'hihg'"):
        h.plain.enqueue("/x", pri="hihg")
    # Then the server was asked nothing
    assert sent(producer) == before


# -- tube names beanstalkd would reject ----------------------------------------------

def test_enqueue_to_a_queue_name_beanstalkd_rejects_fails_before_sending(
        producer: Beanstalkd) -> None:
    before = sent(producer)
    # When a job is enqueued to queue "bad:name", by object and by name
    with pytest.raises(ValueError) as by_job:
        h.plain.enqueue("/x", queue="bad:name")
    with pytest.raises(ValueError) as by_name:
        enqueue("SomeRubyJob", 1, queue="bad:name")
    # Then the error says what is wrong with the name, and nothing was sent
    for info in (by_job, by_name):
        assert "bad:name" in str(info.value) and "':'" in str(info.value), info.value
    assert sent(producer) == before


def test_check_refuses_a_queue_section_with_a_name_beanstalkd_rejects(
        beanstalkd: Beanstalkd, tmp_path: Path) -> None:
    # Given a config with a [queue:bad:name] section
    cfg = tmp_path / "bb.ini"
    cfg.write_text(make_config(beanstalkd.url, {"bad:name": 1}, imports=IMPORTS))
    # When it is checked
    done = subprocess.run([BBSUPERVISE, "-c", str(cfg), "--check"], cwd=REPO_ROOT, timeout=30,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                          capture_output=True, text=True)
    # Then bbsupervise exits 2 with one line naming the file, the section and the problem
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert str(cfg) in done.stderr and "[queue:bad:name]" in done.stderr, done.stderr
    assert "':'" in done.stderr and "Traceback" not in done.stderr, done.stderr
