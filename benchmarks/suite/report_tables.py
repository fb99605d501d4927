"""The report's building blocks: every number as a CSV row (`Rows`, which the plots read),
Markdown tables, and the number formats of its cells."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from benchmarks.suite import cost_model as cm

GB = 1e9
MIB = 2**20
# The paper's two methods: (mode, the paper tables' key, the auxiliary model's part)
METHODS = (("electra", "joint", cm.JOINT), ("fast-electra", "fast", cm.FAST))


class Rows:
    """Every number of the report as a CSV row."""

    FIELDS = ("section", "case", "mode", "component", "metric", "value", "unit")

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, section: str, case: str, mode: str, component: str, metric: str,
            value: float, unit: str) -> None:
        self.rows.append(dict(zip(self.FIELDS, (section, case, mode, component, metric, value,
                                                unit))))

    def value(self, **match) -> float:
        """The value of the first row whose fields equal `match`."""
        for r in self.rows:
            if all(r[k] == v for k, v in match.items()):
                return r["value"]
        raise KeyError(match)

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            for r in self.rows:
                writer.writerow({**r, "value": f"{r['value']:.6g}"})


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
                      *("| " + " | ".join(r) + " |" for r in rows)])


def gf(x: float) -> str:
    g = x / 1e9
    return f"{g:,.1f}" if g >= 10 else f"{g:.3g}"


def gb(x: float) -> str:
    return f"{x / GB:,.2f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def err(measured: float, analytic: float) -> str:
    if analytic == 0:
        return "exact" if measured == 0 else "n/a"
    return f"{measured / analytic - 1:+.2%}"


def mib(values: list[float]) -> str:
    """Median in MiB, and with several values their range in brackets."""
    med = statistics.median(values) / MIB
    if len(values) == 1:
        return f"{med:,.1f}"
    return f"{med:,.1f} [{min(values) / MIB:,.0f}-{max(values) / MIB:,.0f}]"
