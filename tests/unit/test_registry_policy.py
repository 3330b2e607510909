"""@job registration, and where a job's settings come from.

Precedence, most specific first: the enqueue call, the job, its queue
section, ``[supervisor]``, the built-in default. Back-off is backburner's
``retry_delay + retries**3``. No server: every connection attempt would go
to a closed port.
"""
from __future__ import annotations

import importlib
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import load
from workers import hooks, job, policy, registry
from workers.policy import Settings, default_retry_delay, priority, resolve
from workers.registry import JobFunction, JobSpec
from workers.wire import TubeNameError

NS = "backburner.worker.queue"
# `workers.enqueue` the attribute is the function; the module is in sys.modules.
enqueue_mod = importlib.import_module("workers.enqueue")


@pytest.fixture(autouse=True)
def isolated() -> Iterator[None]:
    """Each test gets the registry, global hooks and settings it found, back."""
    saved_registry = dict(registry._registry)
    saved_hooks = {k: list(v) for k, v in hooks._global.items()}
    saved_settings = policy.current()
    # Nothing here may reach a server; port 1 on loopback refuses at once.
    policy.use(Settings(beanstalk_url="beanstalk://127.0.0.1:1"))
    enqueue_mod.reset_connection()
    yield
    registry._registry.clear()
    registry._registry.update(saved_registry)
    hooks.clear()
    hooks._global.update(saved_hooks)
    policy.use(saved_settings)
    enqueue_mod.reset_connection()


# -- @job on a function -------------------------------------------------------

def test_job_on_function_registers_module_qualname_and_stays_callable() -> None:
    @job
    def double(x: int) -> int:
        """Doubles."""
        return x * 2

    assert isinstance(double, JobFunction)
    name = f"{__name__}.test_job_on_function_registers_module_qualname_and_stays_callable" \
           ".<locals>.double"
    assert double.spec.name == name
    assert registry.get(name) is double.spec
    assert name in registry.names()
    # a plain call still runs in-process
    assert double(21) == 42
    assert getattr(double, "__name__") == "double" and double.__doc__ == "Doubles."
    assert callable(double.enqueue)


def test_job_with_settings_and_name_override() -> None:
    @job(name="SendMail", queue="mail", pri="high", ttr=30, max_job_retries=2, retry_delay=1)
    def send(to: str) -> str:
        return to

    spec = registry.get("SendMail")
    assert spec is not None and spec is send.spec
    assert (spec.queue, spec.pri, spec.ttr, spec.max_job_retries, spec.retry_delay) == \
        ("mail", "high", 30, 2, 1)
    assert send("x") == "x"


# -- @job on a class ----------------------------------------------------------

def test_job_on_class_with_instance_perform_and_class_attributes() -> None:
    @job
    class Resize:
        queue = "images"
        pri = 7
        ttr = 15
        max_job_retries = 3
        retry_delay = 4

        def perform(self, width: int, height: int) -> int:
            return width * height

    spec = Resize.job_spec  # type: ignore[attr-defined]
    assert spec.name == f"{__name__}.{Resize.__qualname__}"
    assert (spec.queue, spec.pri, spec.ttr, spec.max_job_retries, spec.retry_delay) == \
        ("images", 7, 15, 3, 4)
    assert spec.perform(3, 4) == 12
    assert registry.get(spec.name) is spec
    assert callable(Resize.enqueue)  # type: ignore[attr-defined]
    assert Resize().perform(2, 2) == 4  # the class is still the class


def test_job_on_class_with_static_perform_and_name_attribute() -> None:
    @job
    class NewsletterJobX:
        name = "NewsletterJobX"
        queue = "newsletter-sender"

        @staticmethod
        def perform(email: str, *rest: Any) -> list[Any]:
            return [email, *rest]

    spec = registry.get("NewsletterJobX")
    assert spec is not None and spec is NewsletterJobX.job_spec  # type: ignore[attr-defined]
    assert spec.perform("a@b.c", 1, None) == ["a@b.c", 1, None]


def test_decorator_arguments_beat_class_attributes() -> None:
    @job(name="Override", queue="q2", ttr=9)
    class Job:
        name = "Ignored"
        queue = "q1"
        ttr = 1

        @classmethod
        def perform(cls) -> None:
            return None

    spec = registry.get("Override")
    assert spec is not None and (spec.queue, spec.ttr) == ("q2", 9)
    assert registry.get("Ignored") is None


def test_class_without_perform_is_rejected() -> None:
    class NoPerform:
        pass

    with pytest.raises(TypeError, match="perform"):
        job(NoPerform)


# -- registration errors --------------------------------------------------------

def test_duplicate_name_for_a_different_callable_is_an_error() -> None:
    @job(name="Dup")
    def first() -> None:
        return None

    with pytest.raises(ValueError, match="'Dup' is already registered by"):
        @job(name="Dup")
        def second() -> None:
            return None

    assert registry.get("Dup") is first.spec


def test_duplicate_name_between_function_and_class_is_an_error() -> None:
    @job(name="Dup2")
    def first() -> None:
        return None

    with pytest.raises(ValueError, match="already registered"):
        @job(name="Dup2")
        class Second:
            def perform(self) -> None:
                return None


def test_registering_the_same_function_again_is_allowed() -> None:
    # A module imported twice (e.g. by the master and by a hook) must not fail.
    def again() -> None:
        return None

    job(name="Again")(again)
    job(name="Again")(again)
    assert registry.get("Again") is not None


@pytest.mark.parametrize("settings, error", [
    ({"bogus": 1}, TypeError),
    ({"ttr": -1}, ValueError),
    ({"ttr": "60"}, ValueError),
    ({"ttr": True}, ValueError),
    ({"max_job_retries": 1.5}, ValueError),
    ({"retry_delay": 2**32}, ValueError),
    ({"pri": -1}, ValueError),
    ({"pri": 2**32}, ValueError),
    ({"pri": 1.0}, ValueError),
    ({"queue": "a:b"}, TubeNameError),
    ({"queue": "x" * 300}, TubeNameError),
    ({"retry_delay_func": 5}, TypeError),
])
def test_bad_job_settings_fail_at_decoration(settings: dict[str, Any],
                                             error: type[Exception]) -> None:
    with pytest.raises(error):
        @job(name="BadSettings", **settings)
        def bad() -> None:
            return None
    assert registry.get("BadSettings") is None


def test_unknown_hook_point_is_an_error() -> None:
    @job(name="Hooked")
    def hooked() -> None:
        return None

    with pytest.raises(ValueError, match="unknown hook"):
        @hooked.hook("before_everything")
        def never() -> None:
            return None
    with pytest.raises(ValueError, match="unknown hook"):
        hooks.register("before_everything")


# -- precedence: call > job > queue > [supervisor] > default ------------------------

def make_spec(**settings: Any) -> JobSpec:
    return JobSpec(name="J", perform=lambda *a: None, **settings)


def test_builtin_defaults() -> None:
    r = resolve(make_spec(), settings_=Settings())
    assert (r.queue, r.tube, r.pri, r.ttr, r.max_job_retries, r.retry_delay) == \
        ("backburner-jobs", f"{NS}.backburner-jobs", 65536, 120, 0, 5)
    assert r.retry_delay_func is default_retry_delay


def test_job_without_spec_uses_defaults_of_the_named_queue() -> None:
    r = resolve(None, queue="other", settings_=Settings())
    assert (r.queue, r.tube, r.pri, r.ttr) == ("other", f"{NS}.other", 65536, 120)


@pytest.fixture
def layered(tmp_path: Path) -> Settings:
    """[supervisor] sets every per-queue option; queue `special` overrides them."""
    path = tmp_path / "bb.ini"
    path.write_text(textwrap.dedent("""
        [supervisor]
        default_priority = 10
        respond_timeout = 30
        max_job_retries = 3
        retry_delay = 7
        primary_queue = main
        priority_labels = high=1, medium=2

        [queue:main]

        [queue:special]
        default_priority = 20
        respond_timeout = 40
        max_job_retries = 4
        retry_delay = 8
        priority_labels = high=11
    """))
    return policy.from_config(load(str(path)))


def test_supervisor_section_beats_builtin_default(layered: Settings) -> None:
    r = resolve(make_spec(), settings_=layered)
    assert (r.queue, r.pri, r.ttr, r.max_job_retries, r.retry_delay) == ("main", 10, 30, 3, 7)
    # a queue with no section of its own also takes [supervisor]
    r = resolve(make_spec(queue="unlisted"), settings_=layered)
    assert (r.queue, r.pri, r.ttr, r.max_job_retries, r.retry_delay) == \
        ("unlisted", 10, 30, 3, 7)


def test_queue_section_beats_supervisor_section(layered: Settings) -> None:
    r = resolve(make_spec(queue="special"), settings_=layered)
    assert (r.queue, r.tube, r.pri, r.ttr, r.max_job_retries, r.retry_delay) == \
        ("special", f"{NS}.special", 20, 40, 4, 8)


def test_job_beats_queue_section(layered: Settings) -> None:
    r = resolve(make_spec(queue="special", pri=30, ttr=50, max_job_retries=5, retry_delay=9),
                settings_=layered)
    assert (r.pri, r.ttr, r.max_job_retries, r.retry_delay) == (30, 50, 5, 9)


def test_zero_in_the_job_is_a_value_not_a_fallback(layered: Settings) -> None:
    r = resolve(make_spec(queue="special", pri=0, ttr=0, max_job_retries=0, retry_delay=0),
                settings_=layered)
    assert (r.pri, r.ttr, r.max_job_retries, r.retry_delay) == (0, 0, 0, 0)


def test_call_beats_job(layered: Settings) -> None:
    r = resolve(make_spec(queue="special", pri=30, ttr=50), queue="main", pri=60, ttr=70,
                settings_=layered)
    assert (r.queue, r.tube, r.pri, r.ttr) == ("main", f"{NS}.main", 60, 70)
    # the call's queue also decides whose section the rest comes from
    r = resolve(make_spec(queue="main"), queue="special", settings_=layered)
    assert (r.pri, r.ttr, r.max_job_retries, r.retry_delay) == (20, 40, 4, 8)


def test_custom_retry_delay_func_from_the_job() -> None:
    def flat(retry_delay: int, retries: int) -> float:
        return 42

    r = resolve(make_spec(retry_delay_func=flat), settings_=Settings())
    assert r.retry_delay_func is flat


def test_bad_ttr_from_the_call_is_an_error() -> None:
    with pytest.raises(ValueError, match="ttr"):
        resolve(make_spec(), ttr=-1, settings_=Settings())
    with pytest.raises(ValueError, match="ttr"):
        resolve(make_spec(), ttr=2**32, settings_=Settings())


def test_configure_sets_producer_settings() -> None:
    policy.configure(beanstalk_url="beanstalk://127.0.0.1:2", tube_namespace="myapp",
                     default_priority=5, primary_queue="jobs")
    r = resolve(make_spec())
    assert (r.queue, r.tube, r.pri) == ("jobs", "myapp.jobs", 5)
    assert policy.current().beanstalk_url == "beanstalk://127.0.0.1:2"
    with pytest.raises(TypeError, match="unknown options"):
        policy.configure(processes=3)
    with pytest.raises(ValueError):
        policy.configure(beanstalk_url="http://nope")


# -- priority labels ------------------------------------------------------------

@pytest.mark.parametrize("label, value", [("high", 0), ("medium", 100), ("low", 200)])
def test_default_priority_labels(label: str, value: int) -> None:
    assert resolve(make_spec(pri=label), settings_=Settings()).pri == value
    assert resolve(make_spec(), pri=label, settings_=Settings()).pri == value


def test_labels_come_from_the_jobs_queue(layered: Settings) -> None:
    assert resolve(make_spec(pri="high"), settings_=layered).pri == 1
    assert resolve(make_spec(queue="special", pri="high"), settings_=layered).pri == 11
    with pytest.raises(ValueError, match="'medium'"):
        resolve(make_spec(queue="special", pri="medium"), settings_=layered)


@pytest.mark.parametrize("value", [0, 1, 1023, 65536, 2**32 - 1])
def test_integer_priorities_in_range(value: int) -> None:
    assert priority(value, {}) == value


@pytest.mark.parametrize("value", [-1, 2**32, 1.5, True, None])
def test_integer_priorities_out_of_range_are_errors(value: Any) -> None:
    with pytest.raises(ValueError):
        priority(value, {"high": 0})


def test_unknown_label_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        priority("urgent", {"high": 0, "medium": 100, "low": 200})
    message = str(info.value)
    assert "'urgent'" in message and "high=0" in message and "low=200" in message


def test_unknown_label_is_an_error_at_enqueue_not_a_silent_default() -> None:
    @job(name="Labelled", pri="urgent")
    def labelled() -> None:
        return None

    # Given a job whose label no queue defines
    # When it is enqueued, Then it fails before any connection is tried
    with pytest.raises(ValueError, match="unknown priority label 'urgent'"):
        labelled.enqueue()
    with pytest.raises(ValueError, match="unknown priority label 'asap'"):
        enqueue_mod.enqueue("Labelled", pri="asap")
    assert getattr(enqueue_mod._local, "client", None) is None


# -- back-off -----------------------------------------------------------------

def test_default_backoff_is_backburners() -> None:
    assert [default_retry_delay(5, n) for n in range(5)] == [5, 6, 13, 32, 69]


@pytest.mark.parametrize("base, retries, delay", [(0, 0, 0), (1, 0, 1), (1, 1, 2),
                                                  (1, 2, 9), (10, 3, 37)])
def test_backoff_is_base_plus_retries_cubed(base: int, retries: int, delay: int) -> None:
    assert default_retry_delay(base, retries) == delay
