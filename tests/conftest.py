"""Fixtures for the whole suite: a private beanstalkd per test and a factory
for bbsupervise masters, both torn down even when the test fails.

The helpers behind them (wait_for, put_job, ...) live in tests/support.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import pytest

from tests.support import REPO_ROOT, Beanstalkd, Supervisor

# Tests import `tests.support` and the master imports `tests.jobs`: both need
# the repo root importable, whatever directory pytest was started from.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "binlog: start the `beanstalkd` fixture with -b <tmp_path>/binlog")


class BeanstalkdFactory(Protocol):
    def __call__(self, binlog: bool | Path = False, port: int | None = None) -> Beanstalkd: ...


class SupervisorFactory(Protocol):
    def __call__(
        self,
        config_text: str,
        tmp_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        use_console_script: bool = False,
    ) -> Supervisor: ...


@pytest.fixture
def beanstalkd_factory(tmp_path: Path) -> Iterator[BeanstalkdFactory]:
    """Start beanstalkd servers; all of them are stopped at teardown.

    `binlog=True` keeps jobs in tmp_path/binlog (a path may be given instead),
    so a server started later with the same binlog and `port=` of a stopped
    one looks to clients like the same server after a restart.
    """
    if shutil.which("beanstalkd") is None:
        if os.environ.get("CI"):
            pytest.fail("beanstalkd is not on PATH (run scripts/install)")
        pytest.skip("beanstalkd is not on PATH (run scripts/install)")
    servers: list[Beanstalkd] = []

    def start(binlog: bool | Path = False, port: int | None = None) -> Beanstalkd:
        binlog_dir = tmp_path / "binlog" if binlog is True else (binlog or None)
        server = Beanstalkd(tmp_path / f"beanstalkd-{len(servers)}", binlog_dir=binlog_dir, port=port)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def beanstalkd(request: pytest.FixtureRequest, beanstalkd_factory: BeanstalkdFactory) -> Beanstalkd:
    """The test's own beanstalkd on 127.0.0.1 and a kernel-chosen port.

    With `@pytest.mark.binlog` (or indirect parametrization with True) it
    keeps a binlog, so jobs survive `.restart()`.
    """
    binlog = bool(getattr(request, "param", False)) or request.node.get_closest_marker("binlog") is not None
    return beanstalkd_factory(binlog=binlog)


@pytest.fixture
def supervisor_factory(tmp_path: Path) -> Iterator[SupervisorFactory]:
    """Start bbsupervise masters from INI text; every one is stopped (and its
    leftover children killed) at teardown.

    Each master gets its own directory for bb.ini and supervisor.log: the
    given tmp_path, else the test's tmp_path for the first one and
    tmp_path/supervisor-<n> for later ones.
    """
    test_dir = tmp_path
    started: list[Supervisor] = []

    def start(
        config_text: str,
        tmp_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        use_console_script: bool = False,
    ) -> Supervisor:
        workdir = tmp_path or (test_dir if not started else test_dir / f"supervisor-{len(started) + 1}")
        sup = Supervisor(config_text, workdir, env=env, use_console_script=use_console_script)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.stop()


@pytest.fixture
def producer(beanstalkd: Beanstalkd) -> Iterator[Beanstalkd]:
    """This process enqueues to the test's beanstalkd; settings restored afterwards."""
    from workers import configure, policy
    from workers.enqueue import reset_connection

    saved = policy.current()
    policy.use(policy.Settings())
    configure(beanstalk_url=beanstalkd.url)
    yield beanstalkd
    reset_connection()
    policy.use(saved)

