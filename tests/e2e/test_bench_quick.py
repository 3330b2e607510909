"""``scripts/bench --quick`` keeps working: every measure comes out as numbers.

No timing is asserted: the figures depend on the machine. What is checked
is that the bench runs end to end, writes a figure for every row it
declares (with its baseline where it has one), and leaves no process behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from bench.report import ROWS
from tests.support import REPO_ROOT

pytestmark = pytest.mark.timeout(240)


def _numbers(figure: dict) -> bool:
    values = [figure["median"], figure["min"], figure["max"], *figure["runs"]]
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _alive(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_quick_bench_writes_every_measure(tmp_path: Path) -> None:
    if shutil.which("beanstalkd") is None:
        if os.environ.get("CI"):
            pytest.fail("beanstalkd is not on PATH (run scripts/install)")
        pytest.skip("beanstalkd is not on PATH (run scripts/install)")
    out = tmp_path / "bench.json"

    # When the quick bench runs
    proc = subprocess.run([str(REPO_ROOT / "scripts" / "bench"), "--quick", "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=200,
                          stdin=subprocess.DEVNULL)

    # Then it succeeds and prints one table with a line per measure
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.stdout.splitlines()[0].split(" | ")[0].strip() == "measure"
    for row in ROWS:
        assert f"{row.label}, {row.unit}" in proc.stdout
    # And the JSON holds every measure, each a number with its baseline and ratio
    data = json.loads(out.read_text())
    assert set(data["measures"]) == {row.key for row in ROWS}
    for row in ROWS:
        measure = data["measures"][row.key]
        assert _numbers(measure["bbsupervise"]), (row.key, measure)
        if row.baseline:
            assert _numbers(measure["baseline"]), (row.key, measure)
        if row.target is not None:
            assert measure["target"] and measure["ok"] in (True, False), (row.key, measure)
    assert data["meta"]["plan"]["runs"] == 1
    # And every process it started (by pid and start time) is gone
    assert data["meta"]["processes"], "the bench recorded no processes"
    assert [pid for pid, created in data["meta"]["processes"] if _alive(pid, created)] == []
