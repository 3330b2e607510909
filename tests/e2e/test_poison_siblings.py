"""A job that kills its worker is counted even when idle siblings grab it first.

beanstalkd makes the job ready the moment the dead worker's socket closes,
long before the master reaps the worker; an idle sibling reserves it within
microseconds. The in-flight mark the dead worker left makes that sibling
check the job's attempts before running it.
"""
from __future__ import annotations

from pathlib import Path

from tests.support import Beanstalkd, job_state, make_config, put_job, wait_for

JOBS = "tests.jobs"


def test_poison_job_with_idle_siblings_runs_exactly_max_retries_plus_one_times(
        beanstalkd: Beanstalkd, supervisor_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Given 8 idle workers and max_job_retries = 1
    sup = supervisor_factory(make_config(
        beanstalkd.url, {"default-q": {"processes": 8, "max_job_retries": 1}}, imports=JOBS))
    sup.wait_children(8, timeout=20)
    trace = tmp_path / "attempts"
    client = beanstalkd.client()

    # When jobs that kill their worker are put, a dozen of them
    ids = [put_job(client, "default-q", f"{JOBS}.exit_hard", [f"{trace}.{n}"]) for n in range(12)]

    # Then each ends buried after exactly 2 attempts, never more
    for n, job_id in enumerate(ids):
        wait_for(lambda: (job_state(client, job_id) or {}).get("state") == "buried", timeout=20,
                 message=lambda: f"job {job_id}: {job_state(client, job_id)}\n{sup.tail()}")
        attempts = Path(f"{trace}.{n}").read_text().splitlines()
        assert len(attempts) == 2, (job_id, attempts)
