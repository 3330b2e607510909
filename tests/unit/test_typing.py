"""The house style's typing goal, kept: ``mypy --strict`` on both packages."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_strict_passes_on_supervisor_and_workers() -> None:
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mypy is not installed (it comes with the `test` extra)")
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "supervisor", "workers"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
