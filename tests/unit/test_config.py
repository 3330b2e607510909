"""INI config -> frozen Config: defaults, inheritance, and one-line errors.

Every error is a ``ConfigError`` whose text is ``FILE: [section] key: what``
(or ``FILE: [section]: what`` for a section, ``FILE: what`` for the file),
never a traceback. No server is needed.
"""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from supervisor import settings
from supervisor.config import Config, ConfigError, import_jobs, load

Write = Callable[[str], str]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write INI text (dedented) to a file and return its path."""
    def write(text: str) -> str:
        path = tmp_path / "bb.ini"
        path.write_text(textwrap.dedent(text))
        return str(path)
    return write


def error_of(path: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- what a good file gives ---------------------------------------------------

def test_minimal_file_gets_every_builtin_default(write: Write) -> None:
    cfg = load(write("[queue:mail]\n"))
    assert isinstance(cfg, Config)
    assert cfg["beanstalk_url"] == "beanstalk://127.0.0.1:11300"
    assert cfg["imports"] == ()
    assert cfg["tube_namespace"] == "backburner.worker.queue"
    assert cfg["namespace_separator"] == "."
    assert cfg["graceful_timeout"] == 30.0
    assert cfg["log_level"] == "info"
    assert cfg["default_priority"] == 65536
    assert cfg["respond_timeout"] == 120
    assert cfg["max_job_retries"] == 0
    assert cfg["retry_delay"] == 5
    assert cfg["priority_labels"] == {"high": 0, "medium": 100, "low": 200}
    assert cfg["primary_queue"] == "backburner-jobs"
    queue = cfg.queues["mail"]
    assert (queue.name, queue.tube, queue.processes) == ("mail", "backburner.worker.queue.mail", 1)
    assert cfg.total_processes == 1


def test_full_file_is_parsed_and_typed(write: Write) -> None:
    cfg = load(write("""
        [supervisor]
        beanstalk_url = beanstalk://127.0.0.1:12345
        imports = tests.jobs, myapp.jobs
            other.jobs
        tube_namespace = myapp
        namespace_separator = /
        graceful_timeout = 2.5
        log_level = DEBUG
        default_priority = 10
        respond_timeout = 30
        max_job_retries = 3
        retry_delay = 2
        priority_labels = urgent=1, slow=1000
        primary_queue = misc
        post_fork = tests.hookjobs:chdir_to_env

        [queue:SendMail]
        processes = 3

        [queue:idle]
        processes = 0
    """))
    assert cfg["beanstalk_url"] == "beanstalk://127.0.0.1:12345"
    assert cfg["imports"] == ("tests.jobs", "myapp.jobs", "other.jobs")
    assert cfg["graceful_timeout"] == 2.5
    assert cfg["log_level"] == "debug"
    assert cfg["priority_labels"] == {"urgent": 1, "slow": 1000}
    assert cfg["post_fork"] == "tests.hookjobs:chdir_to_env"
    assert cfg.queues["SendMail"].tube == "myapp/send-mail"
    assert cfg.queues["SendMail"].processes == 3
    assert cfg.queues["idle"].processes == 0
    assert cfg.total_processes == 3


def test_queue_section_inherits_supervisor_then_overrides(write: Write) -> None:
    cfg = load(write("""
        [supervisor]
        default_priority = 10
        respond_timeout = 30
        max_job_retries = 3
        retry_delay = 7
        priority_labels = high=1

        [queue:plain]

        [queue:special]
        default_priority = 20
        respond_timeout = 40
        max_job_retries = 0
        retry_delay = 1
        priority_labels = high=5, low=9
    """))
    plain, special = cfg.queues["plain"], cfg.queues["special"]
    assert (plain["default_priority"], plain["respond_timeout"], plain["max_job_retries"],
            plain["retry_delay"], plain["priority_labels"]) == (10, 30, 3, 7, {"high": 1})
    assert (special["default_priority"], special["respond_timeout"], special["max_job_retries"],
            special["retry_delay"], special["priority_labels"]) == (20, 40, 0, 1,
                                                                   {"high": 5, "low": 9})


def test_section_order_does_not_matter_for_inheritance(write: Write) -> None:
    cfg = load(write("""
        [queue:a]

        [supervisor]
        retry_delay = 9
    """))
    assert cfg.queues["a"]["retry_delay"] == 9


def test_config_is_frozen(write: Write) -> None:
    cfg = load(write("[queue:a]\n"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.path = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.values["log_level"] = "debug"  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.queues["a"].values["processes"] = 9  # type: ignore[index]


@pytest.mark.parametrize("text, expected", [
    ("a, b,c", ("a", "b", "c")),
    ("a\nb\n\nc", ("a", "b", "c")),
    (" a ,\n b ", ("a", "b")),
    ("", ()),
])
def test_imports_are_comma_or_newline_separated(text: str, expected: tuple[str, ...]) -> None:
    assert settings.parse_list(text) == expected


# -- errors: FILE: [section] key: what ------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("[supervisor]\nbogus = 1\n[queue:a]\n", "[supervisor] bogus: unknown option"),
    ("[queue:a]\nbogus = 1\n", "[queue:a] bogus: unknown option"),
    ("[supervisor]\nprocesses = 2\n[queue:a]\n",
     "[supervisor] processes: unknown option (allowed only in [queue:NAME])"),
    ("[queue:a]\nbeanstalk_url = beanstalk://h:1\n",
     "[queue:a] beanstalk_url: unknown option (allowed only in [supervisor])"),
    ("[queue:a]\nprocesses = many\n", "[queue:a] processes: expected an integer, got 'many'"),
    ("[queue:a]\nprocesses = -1\n", "[queue:a] processes: must be between 0 and 1024, got -1"),
    ("[queue:a]\nprocesses = 5000\n", "[queue:a] processes:"),
    ("[supervisor]\nbeanstalk_url = http://x\n[queue:a]\n", "[supervisor] beanstalk_url:"),
    ("[supervisor]\nbeanstalk_url = beanstalk://h:notaport\n[queue:a]\n",
     "[supervisor] beanstalk_url: bad port"),
    ("[supervisor]\nlog_level = loud\n[queue:a]\n", "[supervisor] log_level: must be one of"),
    ("[supervisor]\ngraceful_timeout = -1\n[queue:a]\n", "[supervisor] graceful_timeout:"),
    ("[supervisor]\ngraceful_timeout = soon\n[queue:a]\n",
     "[supervisor] graceful_timeout: expected a number"),
    ("[supervisor]\ngraceful_timeout = nan\n[queue:a]\n", "[supervisor] graceful_timeout:"),
    ("[supervisor]\npriority_labels = high\n[queue:a]\n",
     "[supervisor] priority_labels: expected name=N"),
    ("[queue:a]\npriority_labels = high=-1\n", "[queue:a] priority_labels:"),
    ("[queue:a]\ndefault_priority = 4294967296\n",
     "[queue:a] default_priority: must be between 0 and 4294967295"),
    ("[queue:a]\nrespond_timeout = 1.5\n", "[queue:a] respond_timeout: expected an integer"),
    ("[queue:a]\nmax_job_retries = x\n", "[queue:a] max_job_retries: expected an integer"),
    ("[supervisor]\ntube_namespace =\n[queue:a]\n", "[supervisor] tube_namespace: must not be empty"),
    ("[supervisor]\npost_fork = nocolon\n[queue:a]\n",
     "[supervisor] post_fork: expected module:function"),
], ids=["sup-unknown", "queue-unknown", "queue-key-in-sup", "sup-key-in-queue", "not-int",
        "negative", "too-many", "url-scheme", "url-port", "log-level", "grace-negative",
        "grace-text", "grace-nan", "labels-shape", "labels-negative", "pri-range",
        "ttr-float", "retries-text", "namespace-empty", "hook-shape"])
def test_bad_key_or_value_names_file_section_and_key(write: Write, text: str,
                                                     expected: str) -> None:
    path = write(text)
    assert error_of(path).startswith(f"{path}: {expected}")


@pytest.mark.parametrize("text, expected", [
    ("[supervisor]\n[worker]\n[queue:a]\n", "[worker]: unknown section"),
    ("[queue:]\n", "[queue:]: queue name is empty"),
    ("[queue:a:b]\n", "[queue:a:b]: tube name"),
    ("[queue:a b]\n", "[queue:a b]: tube name"),
    ("[queue:" + "x" * 200 + "]\n", "200"),
    ("[supervisor]\n", "no [queue:NAME] section"),
    ("", "no [queue:NAME] section"),
], ids=["unknown-section", "empty-queue", "colon-queue", "space-queue", "long-queue",
        "no-queue", "empty-file"])
def test_bad_section_is_a_one_line_error(write: Write, text: str, expected: str) -> None:
    path = write(text)
    message = error_of(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


@pytest.mark.parametrize("text, expected", [
    ("processes = 1\n", "no section headers"),
    ("[supervisor]\nlog_level = info\nlog_level = debug\n[queue:a]\n", "[supervisor] log_level: set twice"),
    ("[queue:a]\n[queue:a]\n", "[queue:a]: section appears twice"),
], ids=["no-header", "duplicate-key", "duplicate-section"])
def test_malformed_ini_is_a_one_line_error(write: Write, text: str, expected: str) -> None:
    path = write(text)
    message = error_of(path)
    assert message.startswith(f"{path}: ") and expected in message


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.ini")
    assert error_of(path) == f"{path}: no such file"


def test_unreadable_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.ini"
    path.write_bytes(b"\xff\xfe[queue:a]\n")
    assert error_of(str(path)).startswith(f"{path}: cannot read")
    assert error_of(str(tmp_path)).startswith(f"{tmp_path}: cannot read")


def test_tube_namespace_beanstalkd_rejects_is_a_config_error(write: Write) -> None:
    path = write("[supervisor]\ntube_namespace = -ns\n[queue:a]\n")
    assert "'-'" in error_of(path)


# -- imports ------------------------------------------------------------------

def test_import_of_missing_module_names_the_module(write: Write) -> None:
    cfg = load(write("[supervisor]\nimports = tests.jobs, no_such_module_xyz\n[queue:a]\n"))
    with pytest.raises(ConfigError) as info:
        import_jobs(cfg)
    message = str(info.value)
    assert message.startswith(f"{cfg.path}: [supervisor] imports: cannot import "
                              "'no_such_module_xyz': ModuleNotFoundError")
    assert "\n" not in message


def test_import_of_good_modules_succeeds(write: Write) -> None:
    cfg = load(write("[supervisor]\nimports = tests.jobs\n[queue:a]\n"))
    import_jobs(cfg)
    from workers import registry

    assert "tests.jobs.record" in registry.names()


# -- the option table ---------------------------------------------------------

ISSUE_OPTIONS = {
    # name: (default, scopes)
    "beanstalk_url": ("beanstalk://127.0.0.1:11300", {"supervisor"}),
    "imports": ((), {"supervisor"}),
    "tube_namespace": ("backburner.worker.queue", {"supervisor"}),
    "namespace_separator": (".", {"supervisor"}),
    "graceful_timeout": (30, {"supervisor"}),
    "log_level": ("info", {"supervisor"}),
    "processes": (1, {"queue"}),
    "default_priority": (65536, {"supervisor", "queue"}),
    "respond_timeout": (120, {"supervisor", "queue"}),
    "max_job_retries": (0, {"supervisor", "queue"}),
    "retry_delay": (5, {"supervisor", "queue"}),
    "priority_labels": ({"high": 0, "medium": 100, "low": 200}, {"supervisor", "queue"}),
    "primary_queue": ("backburner-jobs", {"supervisor"}),
}


@pytest.mark.parametrize("name", sorted(ISSUE_OPTIONS))
def test_option_table_declares_each_option_once_with_its_default(name: str) -> None:
    declared = [o for o in settings.OPTIONS if o.name == name]
    assert len(declared) == 1
    default, scopes = ISSUE_OPTIONS[name]
    assert declared[0].default == default
    assert set(declared[0].scopes) == scopes
    assert declared[0].help.strip()


def test_option_names_are_unique_and_all_documented() -> None:
    names = [o.name for o in settings.OPTIONS]
    assert len(names) == len(set(names))
    doc = settings.render_markdown()
    for option in settings.OPTIONS:
        assert f"`{option.name}`" in doc
