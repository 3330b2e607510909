"""Every row of the table is declared once here, with its unit and target.

The measures only record numbers (``Results.add``); this module turns the
per-run numbers into median, min and max, pairs each product figure with
the baseline taken in the same run (so the ratio is per run, then
summarised), checks the targets of issue 5 and renders the table and the
JSON.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """``on`` is "value" or "ratio"; ``op`` is "<=", "<" or ">="."""

    on: str
    op: str
    limit: float

    def met(self, value: float, ratio: float | None) -> bool | None:
        x = value if self.on == "value" else ratio
        if x is None or math.isnan(x):
            return None
        return {"<=": x <= self.limit, "<": x < self.limit, ">=": x >= self.limit}[self.op]

    def text(self, unit: str) -> str:
        if self.on == "ratio":
            return f"ratio {self.op} {self.limit:g}"
        return f"{self.op} {self.limit:g} {unit}"


@dataclass(frozen=True)
class RowSpec:
    key: str
    label: str
    unit: str
    target: Target | None = None
    baseline: str = ""  # what the baseline column holds, for the JSON and the legend


AT_LEAST_80 = Target("ratio", ">=", 0.80)
CEILING = "N bare greenstalk reserve+delete processes"
ROWS: tuple[RowSpec, ...] = (
    RowSpec("drain_n1", "drain no-op, N=1", "jobs/s", None, CEILING),
    RowSpec("drain_n2", "drain no-op, N=2", "jobs/s", AT_LEAST_80, CEILING),
    RowSpec("drain_n4", "drain no-op, N=4", "jobs/s", AT_LEAST_80, CEILING),
    RowSpec("drain_n2_devnull", "drain N=2, stderr /dev/null", "jobs/s", None, CEILING),
    RowSpec("drain_n2_warning", "drain N=2, log_level warning", "jobs/s", None, CEILING),
    RowSpec("enqueue", "enqueue no-op", "jobs/s", AT_LEAST_80,
            "bare greenstalk put on one connection"),
    RowSpec("latency_p50", "put->start latency p50", "us", Target("ratio", "<=", 2.0),
            "bare greenstalk put->reserve"),
    RowSpec("latency_p99", "put->start latency p99", "us", None, "bare greenstalk put->reserve"),
    RowSpec("child_uss", "idle child USS (max of 8)", "MiB", Target("value", "<=", 10.0),
            "a plain Python greenstalk worker process"),
    RowSpec("child_rss", "idle child RSS (max of 8)", "MiB", None,
            "a plain Python greenstalk worker process"),
    RowSpec("master_uss", "master USS", "MiB", None, "a plain Python greenstalk worker process"),
    RowSpec("master_rss", "master RSS", "MiB", Target("value", "<=", 50.0),
            "a plain Python greenstalk worker process"),
    RowSpec("restart", "restart of a SIGKILLed idle child", "ms", Target("value", "<", 50.0),
            "fork + connect + reserve from a bare Python parent"),
    RowSpec("stop_idle", "SIGTERM -> exit, 8 idle children", "s", Target("value", "<", 1.5),
            "SIGTERM to 8 bare worker processes until all are reaped"),
    RowSpec("stop_busy", "SIGTERM -> exit, 1 child in a 1 s job", "s", None,
            "time left in the 1 s job at SIGTERM"),
    RowSpec("idle_cpu_master", "idle CPU, master", "%", Target("value", "<", 1.0), ""),
    RowSpec("idle_cpu_children", "idle CPU, 8 children together", "%", None,
            "8 bare workers in reserve-with-timeout 5"),
)
BY_KEY = {row.key: row for row in ROWS}


@dataclass
class Series:
    product: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [p / b if b else math.nan for p, b in zip(self.product, self.baseline)]


def summary(values: list[float]) -> dict[str, Any] | None:
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return None
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean),
            "runs": values}


class Results:
    """Per-run figures by row key, filled by the measures."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}

    def add(self, key: str, product: float, baseline: float | None = None,
            **details: Any) -> None:
        if key not in BY_KEY:
            raise KeyError(f"no row {key!r} in bench.report.ROWS")
        series = self.series.setdefault(key, Series())
        series.product.append(float(product))
        if baseline is not None:
            series.baseline.append(float(baseline))
        if details:
            series.details.append(details)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for spec in ROWS:
            series = self.series.get(spec.key)
            if series is None:
                continue
            product = summary(series.product)
            baseline = summary(series.baseline)
            ratio = summary(series.ratios()) if series.baseline else None
            ok = None
            if spec.target is not None and product is not None:
                ok = spec.target.met(product["median"], ratio["median"] if ratio else None)
            out.append({"key": spec.key, "measure": spec.label, "unit": spec.unit,
                        "bbsupervise": product, "baseline": baseline, "ratio": ratio,
                        "baseline_is": spec.baseline or None,
                        "target": spec.target.text(spec.unit) if spec.target else None,
                        "ok": ok, "details": series.details})
        return out


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "jobs/s":
        return f"{value:,.0f}"
    if unit == "us":
        return f"{value:,.0f}"
    if unit in ("%", "s"):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _cell(fig: dict[str, Any] | None, unit: str, suffix: str = "") -> str:
    if fig is None:
        return "-"
    text = _number(fig["median"], unit) + suffix
    if len(fig["runs"]) > 1:
        text += f" ({_number(fig['min'], unit)}-{_number(fig['max'], unit)})"
    return text


def table(rows: list[dict[str, Any]]) -> str:
    header = ["measure", "bbsupervise", "baseline", "ratio", "target", "ok"]
    lines = [header]
    for row in rows:
        unit = row["unit"]
        ok = {True: "yes", False: "NO", None: ""}[row["ok"]]
        lines.append([f"{row['measure']}, {unit}", _cell(row["bbsupervise"], unit),
                      _cell(row["baseline"], unit), _cell(row["ratio"], "ratio"),
                      row["target"] or "", ok])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def write_json(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    def clean(obj: Any) -> Any:  # JSON has no NaN
        if isinstance(obj, float) and math.isnan(obj):
            return None
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        return obj

    data = {"meta": meta, "measures": {row["key"]: clean(row) for row in rows}}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
