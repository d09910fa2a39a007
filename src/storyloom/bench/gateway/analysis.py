"""Figures of the gateway benchmark, computed from the workers' call records."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["jain", "percentile", "read_records"]


def read_records(paths: Iterable[Path]) -> tuple[list[dict[str, Any]], list[dict[str, int]]]:
    """(call records, each worker's last counters) from the JSON-lines files; a torn last line is skipped."""
    records: list[dict[str, Any]] = []
    counts: list[dict[str, int]] = []
    for path in paths:
        last: dict[str, int] = {}
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue  # the process was killed mid-write
            if "counts" in doc:
                last = doc["counts"]
            else:
                records.append(doc)
        counts.append(last)
    return records, counts


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one value takes everything."""
    if not values or not any(values):
        return math.nan
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))
