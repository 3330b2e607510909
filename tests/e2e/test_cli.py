"""The ``bbsupervise`` command line: --check, config errors, usage, --version, --help.

Exit codes (README): 0 clean stop, 2 usage or config error, other non-zero
an abnormal end. A config problem is one line ``FILE: [section] key: what``,
never a traceback.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, Beanstalkd, make_config, wait_for

CONSOLE_SCRIPT = Path(sys.executable).parent / "bbsupervise"


def run(*args: str, console_script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run bbsupervise to completion (it must not need a terminal or a signal)."""
    argv = [str(CONSOLE_SCRIPT)] if console_script else [sys.executable, "-m", "supervisor"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(argv + list(args), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bb.ini"
    path.write_text(text)
    return str(path)


def assert_config_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exit 2, and exactly one stderr line: ``bbsupervise: error: <expected>...``."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"bbsupervise: error: {expected}"), lines[0]


# -- --check ------------------------------------------------------------------

def test_check_prints_summary_and_exits_0(tmp_path: Path, beanstalkd: Beanstalkd) -> None:
    # Given a valid config with two queues and a reachable server
    path = write(tmp_path, make_config(beanstalkd.url, {"mail": 2, "SendMail": {"processes": 3},
                                                        "off": 0}))
    # When it is checked
    result = run("-c", path, "--check")
    # Then the summary names queues, tubes and process counts, and nothing was started
    assert result.returncode == 0, result
    out = result.stdout
    assert f"{path}: OK" in out
    assert re.search(r"jobs registered: \d+", out)
    assert "tests.jobs.record" in out
    assert "queue mail: 2 processes, tube backburner.worker.queue.mail" in out
    assert "queue SendMail: 3 processes, tube backburner.worker.queue.send-mail" in out
    assert "queue off: 0 processes, tube backburner.worker.queue.off" in out
    assert "total: 5 processes" in out
    assert "Traceback" not in result.stderr
    # And the check's own connection to the server is closed again
    wait_for(lambda: beanstalkd.stats()["current-connections"] == 1, timeout=5,
             message="only the stats call is connected")


def test_check_with_console_script(tmp_path: Path, beanstalkd: Beanstalkd) -> None:
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed")
    path = write(tmp_path, make_config(beanstalkd.url, {"mail": 1}))
    result = run("--config", path, "--check", console_script=True)
    assert result.returncode == 0, result
    assert "total: 1 process" in result.stdout


# -- config errors: exit 2 and FILE: [section] key: what -------------------------

@pytest.mark.parametrize("text, expected", [
    ("[supervisor]\nbogus_key = 1\n[queue:a]\n", "[supervisor] bogus_key: unknown option"),
    ("[queue:a]\nprocesses = 1\nthreads = 4\n", "[queue:a] threads: unknown option"),
    ("[queue:a]\nprocesses = lots\n", "[queue:a] processes: expected an integer, got 'lots'"),
    ("[queue:a]\nprocesses = -1\n", "[queue:a] processes: must be between 0 and 1024"),
    ("[supervisor]\nlog_level = chatty\n[queue:a]\n", "[supervisor] log_level: must be one of"),
    ("[supervisor]\nbeanstalk_url = redis://x\n[queue:a]\n", "[supervisor] beanstalk_url:"),
    ("[supervisor]\ngraceful_timeout = soon\n[queue:a]\n",
     "[supervisor] graceful_timeout: expected a number"),
    ("[queue:a]\ndefault_priority = high\n", "[queue:a] default_priority: expected an integer"),
], ids=["unknown-key", "unknown-queue-key", "not-int", "negative", "log-level", "url",
        "graceful", "priority"])
@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
def test_bad_key_or_value_exits_2_naming_file_section_key(tmp_path: Path, text: str,
                                                          expected: str, check: bool) -> None:
    path = write(tmp_path, text)
    result = run("-c", path, *(["--check"] if check else []))
    assert_config_error(result, f"{path}: {expected}")


def test_unknown_section_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[supervisor]\n[workers]\nprocesses = 2\n[queue:a]\n")
    result = run("-c", path, "--check")
    assert_config_error(result, f"{path}: [workers]: unknown section")


def test_bad_queue_name_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[queue:mail:3]\n")
    result = run("-c", path, "--check")
    assert_config_error(result, f"{path}: [queue:mail:3]: tube name")


def test_missing_file_exits_2(tmp_path: Path) -> None:
    path = str(tmp_path / "does-not-exist.ini")
    result = run("-c", path)
    assert_config_error(result, f"{path}: no such file")


def test_malformed_ini_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "processes = 2\n")
    result = run("-c", path, "--check")
    assert_config_error(result, f"{path}: ")


@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
def test_missing_import_exits_2_naming_the_module(tmp_path: Path, check: bool) -> None:
    path = write(tmp_path, make_config("beanstalk://127.0.0.1:1", {"a": 1},
                                       imports="tests.jobs, no_such_jobs_module"))
    result = run("-c", path, *(["--check"] if check else []))
    assert_config_error(result, f"{path}: [supervisor] imports: cannot import "
                                "'no_such_jobs_module': ModuleNotFoundError")


def test_import_that_raises_exits_2_naming_module_and_exception(tmp_path: Path) -> None:
    # Given a job module that raises while it is imported
    (tmp_path / "broken_jobs_mod.py").write_text("x = 1\nraise RuntimeError('db is down')\n")
    path = write(tmp_path, make_config("beanstalk://127.0.0.1:1", {"a": 1},
                                       imports="broken_jobs_mod"))
    argv = [sys.executable, "-m", "supervisor", "-c", path, "--check"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(tmp_path)]))
    # When it is checked
    result = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=30)
    # Then one line names the module, the exception and where it was raised
    assert_config_error(result, f"{path}: [supervisor] imports: cannot import "
                                "'broken_jobs_mod': RuntimeError: db is down")
    assert "broken_jobs_mod.py:2" in result.stderr


def test_import_with_syntax_error_exits_2(tmp_path: Path) -> None:
    (tmp_path / "syntax_jobs_mod.py").write_text("def broken(:\n")
    path = write(tmp_path, make_config("beanstalk://127.0.0.1:1", {"a": 1},
                                       imports="syntax_jobs_mod"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(tmp_path)]))
    result = subprocess.run([sys.executable, "-m", "supervisor", "-c", path, "--check"],
                            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=30)
    assert_config_error(result, f"{path}: [supervisor] imports: cannot import "
                                "'syntax_jobs_mod': SyntaxError")


# -- usage ------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--bogus"], ["-c"], ["-x", "y"]],
                         ids=["unknown-flag", "missing-value", "unknown-short"])
def test_bad_flag_prints_usage_and_exits_2(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2, result
    assert result.stderr.startswith("usage: bbsupervise")
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_no_config_prints_usage_and_exits_2() -> None:
    result = run()
    assert result.returncode == 2, result
    assert result.stderr.startswith("usage: bbsupervise")
    assert "-c PATH is required" in result.stderr


def test_version() -> None:
    from supervisor.cli import version

    result = run("--version")
    assert result.returncode == 0, result
    assert re.fullmatch(r"bbsupervise \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout
    assert result.stdout == f"bbsupervise {version()}\n"


def test_help() -> None:
    result = run("--help")
    assert result.returncode == 0, result
    out = result.stdout
    assert out.startswith("usage: bbsupervise")
    for flag in ("-c PATH", "--config", "--check", "--version", "--help"):
        assert flag in out
    # the exit codes are part of the interface
    assert "0 clean stop" in out and "2 usage or config error" in out


def test_help_options_lists_every_option() -> None:
    from supervisor import settings

    result = run("--help-options")
    assert result.returncode == 0, result
    for option in settings.OPTIONS:
        assert f"`{option.name}`" in result.stdout
