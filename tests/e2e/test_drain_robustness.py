"""A drain finishes even when a job swallowed the worker's SIGTERM."""
from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.support import Beanstalkd, make_config, put_job, wait_for

JOBS = "tests.jobs"


def test_drain_ends_promptly_when_a_job_swallowed_the_term(
        beanstalkd: Beanstalkd, supervisor_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Given one worker busy in a job that installed its own SIGTERM handler
    sup = supervisor_factory(make_config(beanstalkd.url, {"default-q": 1}, imports=JOBS,
                                         graceful_timeout=20))
    sup.wait_children(1, timeout=20)
    trace, release = tmp_path / "trace", tmp_path / "release"
    put_job(beanstalkd.client(), "default-q", f"{JOBS}.swallow_term", [str(trace), str(release)])
    wait_for(lambda: trace.exists() and "start" in trace.read_text(), timeout=10)

    # When the master drains: the job's handler swallows the TERM; then the job ends
    sup.signal(signal.SIGTERM)
    wait_for(lambda: "swallowed" in trace.read_text(), timeout=10)
    release.write_text("go")
    ended = time.monotonic()

    # Then the worker's own handler is back, the master TERMs the idle worker
    # again, and the drain ends within seconds, not at graceful_timeout (20 s)
    assert sup.wait_exit(timeout=10) == 0
    assert time.monotonic() - ended < 5.0
    assert "end" in trace.read_text()
    assert any("replaced the SIGTERM handler; restoring it" in line for line in sup.lines())
