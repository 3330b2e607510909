"""Case C23: bad payloads are buried with a reason; nothing they name is imported or run.

A body comes from anyone who can reach beanstalkd. Whatever it holds, the
worker buries it with one log line (job id, tube, why), keeps its priority,
never imports or calls what it names, and goes on serving with the same pid.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from tests.support import (Beanstalkd, Supervisor, job_state, make_config, put_job, queue_tube,
                           wait_for)

QUEUE = "default-q"
TUBE = queue_tube(QUEUE)
MAX_BODY = 65_535  # beanstalkd's default -z

if TYPE_CHECKING:
    from tests.conftest import BeanstalkdFactory, SupervisorFactory


def padded_unregistered(size: int) -> bytes:
    """A JSON body of exactly ``size`` bytes naming a job nobody registered."""
    head, tail = b'{"class":"NoSuchJob","args":["', b'"]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def deepest_list(max_bytes: int) -> bytes:
    depth = max_bytes // 2
    return b"[" * depth + b"]" * depth


def bad_bodies(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (body, the reason the log must give)."""
    owned = tmp_path / "owned"
    return {
        "not-json": (b"not json", "not JSON"),
        "list": (b"[]", "not an object"),
        "empty-object": (b"{}", 'no "class"'),
        "class-int": (b'{"class": 5}', 'no "class"'),
        "unregistered": (b'{"class": "NoSuchJob", "args": []}', "no job registered as 'NoSuchJob'"),
        "os-system": (json.dumps({"class": "os.system", "args": [f"touch {owned}"]}).encode(),
                      "no job registered as 'os.system'"),
        "no-class": (b'{"args": []}', 'no "class"'),
        "args-string": (b'{"class": "tests.jobs.record", "args": "oops"}', "not an array"),
        "bad-utf8": (b'{"class": "tests.jobs.record\xff\xfe", "args": []}', "not UTF-8"),
        "max-size": (padded_unregistered(MAX_BODY), "no job registered as 'NoSuchJob'"),
        "deep-nesting": (deepest_list(MAX_BODY), "nested too deeply"),
        # names a real module that the master did not import (see the canary)
        "unimported-module": (b'{"class": "tests.hookjobs.vetoed", "args": ["x"]}',
                              "no job registered as 'tests.hookjobs.vetoed'"),
    }


def start_pool(supervisor_factory: SupervisorFactory, beanstalkd: Beanstalkd,
               tmp_path: Path) -> tuple[Supervisor, psutil.Process]:
    sup = supervisor_factory(make_config(beanstalkd.url, {QUEUE: 1}),
                             env={"BB_TEST_IMPORT_CANARY": str(tmp_path / "canary")})
    (child,) = sup.wait_children(1)
    return sup, child


def assert_buried_with_reason(sup: Supervisor, beanstalkd: Beanstalkd, job_id: int,
                              reason: str, pri: int) -> None:
    client = beanstalkd.client()
    state = wait_for(lambda: (job_state(client, job_id) or {}).get("state") == "buried"
                     and job_state(client, job_id), timeout=10,
                     message=lambda: f"job {job_id} buried ({reason}); last lines:\n{sup.tail()}")
    assert state["pri"] == pri  # burying keeps the job's own priority
    line = sup.wait_for_line(re.compile(rf"\bid={job_id}\b.*buried"), timeout=5)
    assert f"tube {TUBE}" in line and reason in line, line
    assert len(line) < 400, line  # one line, not the body or a traceback


def test_c23_every_bad_body_is_buried_and_the_child_keeps_serving(
        beanstalkd: Beanstalkd, supervisor_factory: SupervisorFactory, tmp_path: Path) -> None:
    # Given a pool of one child on the queue
    sup, child = start_pool(supervisor_factory, beanstalkd, tmp_path)
    producer = beanstalkd.client(use=TUBE)
    bodies = bad_bodies(tmp_path)

    # When every bad body is put on its tube, then a good job
    ids = {name: producer.put(body, priority=1234) for name, (body, _) in bodies.items()}
    out = tmp_path / "good.out"
    good = put_job(producer, QUEUE, "tests.jobs.record", [str(out), "after"], pri=2000)

    # Then each bad body is buried with a one-line reason naming its id and tube
    for name, (_, reason) in bodies.items():
        assert_buried_with_reason(sup, beanstalkd, ids[name], reason, pri=1234)
    # And nothing named by a payload was imported or executed
    assert not (tmp_path / "owned").exists()
    assert not (tmp_path / "canary").exists()
    # And the same child, never replaced, runs the next good job
    wait_for(lambda: out.exists() and out.read_text(), timeout=10,
             message=lambda: f"good job ran; last lines:\n{sup.tail()}")
    assert out.read_text() == f"{child.pid} after\n"
    wait_for(lambda: job_state(beanstalkd.client(), good) is None, timeout=5,
             message="good job deleted")
    assert [c.pid for c in sup.children()] == [child.pid]
    assert child.is_running()
    stats = beanstalkd.stats_tube(TUBE)
    assert stats["current-jobs-buried"] == len(bodies)
    assert (stats["current-jobs-ready"], stats["current-jobs-reserved"]) == (0, 0)
    assert not any("Traceback" in line for line in sup.lines())


class BigBodyBeanstalkd(Beanstalkd):
    """beanstalkd with ``-z``, so that a body over 65,535 bytes can be put."""

    MAX_JOB_SIZE = 1 << 20

    def start(self) -> None:
        cmd = ["beanstalkd", "-l", self.host, "-p", str(self.port), "-z", str(self.MAX_JOB_SIZE)]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True)
        self.port = wait_for(self._listening_port, timeout=5.0, message=f"{cmd} to listen")


def test_c23_json_nested_100000_levels_is_buried(
        beanstalkd_factory: BeanstalkdFactory, supervisor_factory: SupervisorFactory,
        tmp_path: Path) -> None:
    # Given a server that takes big bodies (100,000 levels need 200,000 bytes)
    server = BigBodyBeanstalkd(tmp_path / "big-beanstalkd")
    try:
        sup, child = start_pool(supervisor_factory, server, tmp_path)
        producer = server.client(use=TUBE)
        # When bodies nested 100,000 levels deep are put, then a good job
        deep_list = b"[" * 100_000 + b"]" * 100_000
        deep_args = b'{"class":"tests.jobs.record","args":[' + deep_list + b"]}"
        deep_ids = [producer.put(deep_list, priority=7), producer.put(deep_args, priority=8)]
        out = tmp_path / "good.out"
        put_job(producer, QUEUE, "tests.jobs.record", [str(out), "after"])
        # Then both are buried with a reason, and the same child serves on
        assert_buried_with_reason(sup, server, deep_ids[0], "nested too deeply", pri=7)
        assert_buried_with_reason(sup, server, deep_ids[1], "nested too deeply", pri=8)
        wait_for(lambda: out.exists() and out.read_text(), timeout=10,
                 message=lambda: f"good job ran; last lines:\n{sup.tail()}")
        assert out.read_text() == f"{child.pid} after\n"
        assert [c.pid for c in sup.children()] == [child.pid]
    finally:
        server.close()
