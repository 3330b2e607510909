"""Pure policy of the pool: restart back-off (supervisor/backoff.py) and the
desired pool with scaling and reload diffs (supervisor/pool.py). No process,
no server: failures are recorded at chosen `now` values.
"""
from __future__ import annotations

import os
import random
import signal
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from supervisor import backoff
from supervisor.backoff import (
    BASE_DELAY,
    FAILING_AFTER,
    FAILURE_WINDOW,
    MAX_DELAY,
    RestartPolicy,
    describe_status,
    is_clean,
)
from supervisor.config import Config, load
from supervisor.pool import WORKER_GLOBALS, Pool, Slot, max_jobs_with_jitter

# -- exit classification ---------------------------------------------------


def exited(code: int) -> int:
    """A wait status as os.waitpid returns it for a normal exit."""
    return code << 8


@pytest.mark.parametrize(
    ("status", "text", "clean"),
    [
        (exited(0), "exited with status 0", True),
        (exited(1), "exited with status 1", False),
        (exited(75), "exited with status 75", False),
        (signal.SIGKILL, "killed by signal SIGKILL", False),
        (signal.SIGSEGV | 0x80, "killed by signal SIGSEGV (core dumped)", False),
        (signal.SIGTERM, "killed by signal SIGTERM", False),
    ],
)
def test_exit_status_is_described_and_classified(status: int, text: str, clean: bool) -> None:
    assert describe_status(status) == text
    assert is_clean(status) is clean


def test_real_wait_statuses_round_trip() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert describe_status(status) == "exited with status 3" and not is_clean(status)


# -- restart back-off ------------------------------------------------------


def failures_at(times: list[float]) -> RestartPolicy:
    policy = RestartPolicy()
    for now in times:
        policy.record_failure(now)
    return policy


def test_a_single_failure_restarts_at_once() -> None:
    assert failures_at([100.0]).delay(100.0) == 0.0


def test_delays_grow_exponentially_with_jitter_then_cap() -> None:
    random.seed(1)
    policy = RestartPolicy()
    now = 1000.0
    policy.record_failure(now)
    previous = 0.0
    for count in range(2, 16):
        now += 0.5  # all within the window
        policy.record_failure(now)
        delay = policy.delay(now)
        nominal = min(MAX_DELAY, BASE_DELAY * 2 ** (count - 2))
        # jitter takes up to 20% off, never adds
        assert nominal * 0.8 <= delay <= nominal, (count, delay)
        if nominal < MAX_DELAY:
            assert delay > previous, (count, delay, previous)  # 0.8 * 2d > d
        previous = delay
    assert policy.delay(now) <= MAX_DELAY
    assert policy.delay(now) >= MAX_DELAY * 0.8


def test_jitter_spreads_restarts_of_slots_that_failed_together() -> None:
    random.seed(2)
    delays = {failures_at([0.0, 0.1, 0.2, 0.3]).delay(0.3) for _ in range(20)}
    assert len(delays) > 1


def test_failing_after_k_failures_inside_the_window() -> None:
    policy = RestartPolicy()
    for i in range(FAILING_AFTER - 1):
        policy.record_failure(float(i))
        assert not policy.failing(float(i))
    policy.record_failure(float(FAILING_AFTER))
    assert policy.failing(float(FAILING_AFTER))


def test_failures_2s_apart_are_counted_like_immediate_ones() -> None:
    """C15: a child that dies 2 s after each start still trips the brake."""
    times = [2.0 * i for i in range(1, FAILING_AFTER + 1)]
    assert failures_at(times).failing(times[-1])


def test_failures_older_than_the_window_are_forgotten() -> None:
    policy = failures_at([0.0, 1.0, 2.0, 3.0, 4.0])
    assert policy.failing(4.0)
    # Then: past the window they no longer count, and the delay falls back
    later = 4.0 + FAILURE_WINDOW + 0.1
    assert not policy.failing(later)
    assert policy.delay(later) == 0.0
    assert len(policy.failures) == 0


def test_failures_spread_wider_than_the_window_never_trip() -> None:
    step = FAILURE_WINDOW / (FAILING_AFTER - 1) + 0.1
    policy = RestartPolicy()
    for i in range(FAILING_AFTER * 3):
        now = i * step
        policy.record_failure(now)
        assert not policy.failing(now), i


def test_window_only_drops_old_failures() -> None:
    policy = failures_at([0.0, 30.0, 59.0, 61.0])
    assert policy.delay(61.0) > 0  # 0.0 is dropped (61 s old), three remain
    assert list(policy.failures) == [30.0, 59.0, 61.0]


def test_backoff_constants_are_sane() -> None:
    assert 0 < BASE_DELAY < MAX_DELAY
    assert FAILING_AFTER >= 2
    assert backoff.FAILURE_WINDOW > MAX_DELAY  # failures spaced by the cap still count


# -- max_jobs jitter -------------------------------------------------------


def test_max_jobs_jitter_is_zero_for_no_limit_and_adds_up_to_10_percent() -> None:
    random.seed(3)
    assert max_jobs_with_jitter(0) == 0
    draws = [max_jobs_with_jitter(100) for _ in range(200)]
    assert min(draws) >= 100 and max(draws) <= 110
    assert len(set(draws)) > 3
    small = {max_jobs_with_jitter(2) for _ in range(100)}
    assert small == {2, 3}


# -- the pool: scaling -----------------------------------------------------

Write = Callable[[str], Config]


@pytest.fixture
def config(tmp_path: Path) -> Write:
    """Load INI text (dedented) as a Config; each call writes a new file version."""

    def write(text: str) -> Config:
        path = tmp_path / "bb.ini"
        path.write_text(textwrap.dedent(text))
        return load(str(path))

    return write


TWO_QUEUES = """
    [supervisor]
    {extra}

    [queue:a]
    processes = 2
    {a}

    [queue:b]
    processes = 1
    {b}
"""


def two(config: Write, extra: str = "", a: str = "", b: str = "") -> Config:
    return config(TWO_QUEUES.format(extra=extra, a=a, b=b))


def test_wanted_slots_are_numbered_from_1_per_queue(config: Write) -> None:
    pool = Pool(two(config))
    assert pool.wanted() == [Slot("a", 1), Slot("a", 2), Slot("b", 1)]
    assert pool.total() == 3
    assert str(Slot("a", 2)) == "a #2"


@pytest.mark.parametrize(
    ("change", "count", "text"),
    [
        ("+1", 3, "queue a: 2 -> 3 processes"),
        ("+3", 5, "queue a: 2 -> 5 processes"),
        ("-1", 1, "queue a: 2 -> 1 processes"),
        ("-5", 0, "queue a: 2 -> 0 processes"),
        ("7", 7, "queue a: 2 -> 7 processes"),
        ("0", 0, "queue a: 2 -> 0 processes"),
        ("+5000", 1024, "queue a: 2 -> 1024 processes"),
        (" +1 ", 3, "queue a: 2 -> 3 processes"),
    ],
)
def test_scale_plus_minus_or_absolute_is_clamped(config: Write, change: str, count: int, text: str) -> None:
    pool = Pool(two(config))
    assert pool.scale("a", change) == text
    assert pool.counts == {"a": count, "b": 1}


@pytest.mark.parametrize("change", ["", "lots", "+", "1.5", "++1"])
def test_scale_rejects_a_bad_change(config: Write, change: str) -> None:
    pool = Pool(two(config))
    with pytest.raises(ValueError, match="bad scale"):
        pool.scale("a", change)
    assert pool.counts == {"a": 2, "b": 1}


def test_scale_target_is_the_only_queue(config: Write) -> None:
    pool = Pool(config("[queue:solo]\nprocesses = 1\n"))
    assert pool.scale(None, "+1") == "queue solo: 1 -> 2 processes"


def test_scale_target_with_several_queues_is_scale_queue(config: Write) -> None:
    pool = Pool(two(config, extra="scale_queue = b"))
    assert pool.scale(None, "+1") == "queue b: 1 -> 2 processes"
    assert pool.scale("a", "+1") == "queue a: 2 -> 3 processes"  # a name always wins


def test_scale_with_several_queues_and_no_default_is_refused(config: Write) -> None:
    pool = Pool(two(config))
    with pytest.raises(ValueError, match="several queues and no scale_queue"):
        pool.scale(None, "+1")


def test_scale_of_an_unknown_queue_is_refused(config: Write) -> None:
    pool = Pool(two(config))
    with pytest.raises(ValueError, match="no queue named 'c'"):
        pool.scale("c", "+1")


def test_scale_queue_naming_no_queue_is_refused_at_scale_time(config: Write) -> None:
    pool = Pool(two(config, extra="scale_queue = nope"))
    with pytest.raises(ValueError, match="no queue named 'nope'"):
        pool.scale(None, "+1")


def test_fifty_ups_then_fifty_downs_return_to_the_start(config: Write) -> None:
    pool = Pool(two(config, extra="scale_queue = a"))
    for _ in range(50):
        pool.scale(None, "+1")
    assert pool.counts["a"] == 52
    for _ in range(50):
        pool.scale(None, "-1")
    assert pool.counts == {"a": 2, "b": 1}


# -- the pool: reload diff -------------------------------------------------


def test_reload_with_no_change_changes_nothing(config: Write) -> None:
    pool = Pool(two(config))
    assert pool.reload(two(config)) == []
    assert pool.counts == {"a": 2, "b": 1} and pool.generation == {"a": 0, "b": 0}


def test_reload_process_count_only_is_not_a_new_generation(config: Write) -> None:
    pool = Pool(two(config))
    new = config(TWO_QUEUES.format(extra="", a="", b="").replace("processes = 2", "processes = 4"))
    assert pool.reload(new) == ["queue a: 2 -> 4 processes"]
    assert pool.counts == {"a": 4, "b": 1}
    assert pool.generation == {"a": 0, "b": 0}


def test_reload_job_setting_of_one_queue_bumps_only_its_generation(config: Write) -> None:
    pool = Pool(two(config))
    changes = pool.reload(two(config, a="max_job_retries = 3"))
    assert changes == ["queue a: settings changed, replacing its workers"]
    assert pool.generation == {"a": 1, "b": 0}
    assert pool.counts == {"a": 2, "b": 1}
    # And a second change bumps it again
    pool.reload(two(config, a="max_job_retries = 4"))
    assert pool.generation == {"a": 2, "b": 0}


@pytest.mark.parametrize(
    "setting",
    ["max_jobs_per_child = 100", "max_memory_per_child = 200", "respond_timeout = 30", "retry_delay = 1",
     "default_priority = 5",
     "post_fork = tests.crashy:crash_at_start", "worker_exit = tests.crashy:crash_at_start"],
)
def test_reload_any_queue_setting_is_a_new_generation(config: Write, setting: str) -> None:
    pool = Pool(two(config))
    pool.reload(two(config, b=setting))
    assert pool.generation == {"a": 0, "b": 1}


def test_reload_inherited_setting_changes_every_queue_that_inherits_it(config: Write) -> None:
    pool = Pool(two(config, b="max_job_retries = 9"))
    pool.reload(two(config, extra="max_job_retries = 2", b="max_job_retries = 9"))
    assert pool.generation == {"a": 1, "b": 0}  # b overrides it, so b is unchanged


@pytest.mark.parametrize("key", WORKER_GLOBALS)
def test_reload_worker_global_replaces_every_queue(config: Write, key: str) -> None:
    values = {
        "beanstalk_url": "beanstalk://127.0.0.1:11301",
        "tube_namespace": "other.ns",
        "namespace_separator": "-",
        "post_fork": "tests.crashy:crash_at_start",
        "worker_exit": "tests.crashy:crash_at_start",
        "on_reconnect": "tests.crashy:crash_at_start",
        "user": "nobody",
        "group": "nogroup",
        "socket_timeout": "5",
    }
    pool = Pool(two(config))
    pool.reload(two(config, extra=f"{key} = {values[key]}"))
    assert pool.generation == {"a": 1, "b": 1}


@pytest.mark.parametrize("setting", ["log_level = debug", "graceful_timeout = 5", "stop_timeout = 60",
                                     "scale_queue = a", "pidfile = /tmp/x.pid"])
def test_reload_master_only_setting_replaces_no_worker(config: Write, setting: str) -> None:
    pool = Pool(two(config))
    assert pool.reload(two(config, extra=setting)) == []
    assert pool.generation == {"a": 0, "b": 0}


def test_reload_adds_and_removes_queues(config: Write) -> None:
    pool = Pool(two(config))
    new = config("""
        [queue:a]
        processes = 2

        [queue:c]
        processes = 3
    """)
    changes = pool.reload(new)
    assert changes == ["queue b: removed", "queue c: added with 3 processes"]
    assert pool.counts == {"a": 2, "c": 3}
    assert pool.generation == {"a": 0, "c": 0}
    assert pool.wanted() == [Slot("a", 1), Slot("a", 2), Slot("c", 1), Slot("c", 2), Slot("c", 3)]
    assert pool.queue("c").processes == 3


def test_reload_resets_a_scaled_count_to_the_file(config: Write) -> None:
    """Like gunicorn: the file is the truth after HUP; TTIN/TTOU changes are not kept."""
    pool = Pool(two(config))
    pool.scale("a", "+3")
    assert pool.reload(two(config)) == ["queue a: 5 -> 2 processes"]
    assert pool.counts == {"a": 2, "b": 1}
