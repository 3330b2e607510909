"""Jobs with hooks, and worker hooks, for the end-to-end tests.

Imported by the master together with tests.jobs
(``imports = tests.jobs, tests.hookjobs``). Like tests.jobs, every job and
hook leaves its trace in a file that the test names.
"""
from __future__ import annotations

import os

from tests.jobs import _append
from workers import job

# An import canary: a test that must prove a payload imported nothing names
# this module in a body and sets the variable; the file must never appear.
if os.environ.get("BB_TEST_IMPORT_CANARY"):
    _append(os.environ["BB_TEST_IMPORT_CANARY"], f"tests.hookjobs imported by {os.getpid()}")


@job(queue="default-q")
def vetoed(path: str) -> None:
    """Never runs: its before_perform hook vetoes it."""
    _append(path, f"ran {os.getpid()}")


@vetoed.hook("before_perform")
def veto(path: str) -> bool:
    _append(path + ".veto", f"vetoed {os.getpid()}")
    return False


@job(queue="default-q")
def hook_raises(path: str) -> None:
    """Never runs: its before_perform hook raises."""
    _append(path, f"ran {os.getpid()}")


@hook_raises.hook("before_perform")
def explode(path: str) -> None:
    raise RuntimeError("before_perform hook exploded")


def chdir_to_env(queue: str, index: int) -> None:
    """post_fork hook: work in $BB_TEST_CWD, so jobs that write relative paths
    (NewsletterJob with a Ruby producer's args) write under the test's tmp_path."""
    target = os.environ.get("BB_TEST_CWD")
    if target:
        os.chdir(target)
