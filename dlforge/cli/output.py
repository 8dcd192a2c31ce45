"""Printing for the CLI: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def emit_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return "" if v is None else str(v)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    console.print(t)


def metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> None:
    """metric x split, e.g. accuracy | train | val | test."""
    splits = list(metrics)
    names = []
    for m in metrics.values():
        names += [k for k, v in m.items() if k not in names and isinstance(v, int | float)]
    table(title, ["metric", *splits], [[n, *[metrics[s].get(n) for s in splits]] for n in names])
