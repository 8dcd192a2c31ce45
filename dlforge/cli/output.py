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


def table(title: str, columns: list[str], rows: list[list[Any]], overflow: str = "ellipsis") -> None:
    """A rich table; a cell too long for its column is cut with an ellipsis, or folded onto more lines."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow=overflow)
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


def prediction_table(title: str, rows: list[dict[str, Any]], top_k: int = 3) -> None:
    """Predictions, a row each; class probabilities (the `p(NAME)` entries) shown as the `top_k` likeliest classes,
    best first ("top 1": "sneaker 0.9120"), so that a model of many classes still fits the terminal."""
    first = rows[0] if rows else {}
    columns = [c for c in first if not _is_probability(c)]
    k = min(top_k, len(first) - len(columns))
    cells = []
    for row in rows:
        probs = [(c[2:-1], v) for c, v in row.items() if _is_probability(c)]
        best = sorted(probs, key=lambda pair: -pair[1])[:k]
        cells.append([row[c] for c in columns] + [f"{name} {fmt(p)}" for name, p in best])
    table(title, columns + [f"top {i + 1}" for i in range(k)], cells, overflow="fold")  # a file's name stays whole


def _is_probability(column: str) -> bool:
    return column.startswith("p(") and column.endswith(")")
