"""Figures, their summaries and targets, the table and the JSON file.

A benchmark returns a ``Result``: a list of ``Figure``s, each with the samples measured
for our supervisor and for the naive loop (one sample per run, per outage or per cycle,
as ``over`` says), a ``Target`` where the issue sets one, and notes. The table shows the
median of the samples and their spread (min-max), and the ratio ours/naive of the
medians; the JSON file holds every sample.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Check = Callable[[Sequence[float]], bool]


@dataclass(frozen=True)
class Summary:
    """Median and spread of some samples."""

    n: int
    median: float
    low: float
    high: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        values = tuple(float(v) for v in samples)
        if not values:
            return cls(0, math.nan, math.nan, math.nan, ())
        return cls(len(values), statistics.median(values), min(values), max(values), values)

    def quantile(self, q: float) -> float:
        if not self.samples:
            return math.nan
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "median": _num(self.median),
            "min": _num(self.low),
            "max": _num(self.high),
            "p90": _num(self.quantile(0.9)),
            "samples": [_num(v) for v in self.samples],
        }


@dataclass(frozen=True)
class Target:
    """A target from the issue: ``text`` as printed, ``check`` applied to our samples."""

    text: str
    check: Check

    @classmethod
    def median_at_most(cls, limit: float, text: str) -> Target:
        return cls(text, lambda s: bool(s) and statistics.median(s) <= limit)

    @classmethod
    def max_at_most(cls, limit: float, text: str) -> Target:
        return cls(text, lambda s: bool(s) and max(s) <= limit)

    @classmethod
    def all_equal(cls, value: float, text: str) -> Target:
        return cls(text, lambda s: bool(s) and all(v == value for v in s))

    @classmethod
    def min_at_least(cls, limit: float, text: str) -> Target:
        return cls(text, lambda s: bool(s) and min(s) >= limit)


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    over: str  # what one sample is: "run", "outage", "cycle", "burst"
    ours: Sequence[float]
    naive: Sequence[float] | None = None
    target: Target | None = None
    digits: int = 3  # decimals shown in the table

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.check(list(self.ours))

    def summaries(self) -> tuple[Summary, Summary | None]:
        naive = None if self.naive is None else Summary.of(self.naive)
        return Summary.of(self.ours), naive

    def ratio(self) -> float | None:
        ours, naive = self.summaries()
        if naive is None or not naive.n or not ours.n or naive.median == 0:
            return None
        return ours.median / naive.median

    def to_dict(self) -> dict[str, Any]:
        ours, naive = self.summaries()
        ratio = self.ratio()
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "over": self.over,
            "target": None if self.target is None else self.target.text,
            "met": self.met,
            "ours": ours.to_dict(),
            "naive": None if naive is None else naive.to_dict(),
            "ratio_ours_to_naive": None if ratio is None else _num(ratio),
            "digits": self.digits,
        }


@dataclass
class Result:
    name: str
    title: str
    settings: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def figure(self, key: str) -> Figure:
        for figure in self.figures:
            if figure.key == key:
                return figure
        raise KeyError(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "settings": self.settings,
            "figures": [f.to_dict() for f in self.figures],
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
            "error": self.error,
        }


def _num(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# ----------------------------------------------------------------------------- table


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(summary: dict[str, Any] | None, digits: int) -> str:
    if summary is None:
        return "n/a"
    if not summary["n"]:
        return "-"
    median = _fmt(summary["median"], digits)
    if summary["n"] == 1 or summary["min"] == summary["max"]:
        return median
    return f"{median} [{_fmt(summary['min'], digits)}-{_fmt(summary['max'], digits)}]"


def rows(benchmarks: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Table rows from results as dicts (``Result.to_dict``, or a stored JSON file)."""
    out: list[tuple[str, ...]] = []
    for bench in benchmarks:
        if bench["error"]:
            out.append((bench["name"], f"ERROR: {bench['error']}", "", "", "", "", ""))
            continue
        for fig in bench["figures"]:
            ratio = fig["ratio_ours_to_naive"]
            digits = fig["digits"]
            out.append((
                bench["name"],
                f"{fig['label']} ({fig['unit']}, per {fig['over']})",
                fig["target"] or "",
                _cell(fig["ours"], digits),
                _cell(fig["naive"], digits),
                "-" if ratio is None else f"{ratio:.2f}",
                {True: "yes", False: "NO", None: ""}[fig["met"]],
            ))
    return out


HEADER = ("benchmark", "figure", "target", "ours: median [min-max]",
          "naive: median [min-max]", "ours/naive", "met")


def table(results: Sequence[Result]) -> str:
    lines = [HEADER, *rows([r.to_dict() for r in results])]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def markdown(doc: dict[str, Any]) -> str:
    """A stored run (the JSON document) as a Markdown table, for docs/benchmarks.md."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
              for row in rows(doc["benchmarks"])]
    return "\n".join(lines)


def document(results: Sequence[Result], *, options: dict[str, Any], started: float,
             machine_info: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": "python -m bench " + " ".join(options.get("argv", [])),
        "options": options,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine_info,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "benchmarks": [r.to_dict() for r in results],
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
