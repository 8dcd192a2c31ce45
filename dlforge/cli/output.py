"""Printing for the CLI: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()


def emit_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return "" if v is None else str(v)


def table(title: str, columns: list[str], rows: list[list[Any]], keep: tuple[str, ...] = ()) -> None:
    """A table whose cells are never cut: on a narrow terminal the columns in `keep` (names that other commands
    take) keep their width and the others wrap; in a pipe every line is as long as its content. Text is shown as
    is ("[64, 64]" is no markup)."""
    t = Table(title=escape(title), title_justify="left")
    cells = [[fmt(v) for v in r] for r in rows]
    for i, c in enumerate(columns):
        if c in keep:
            t.add_column(escape(c), no_wrap=True, min_width=max([len(c)] + [len(r[i]) for r in cells]))
        else:
            t.add_column(escape(c), overflow="fold")
    for r in cells:
        t.add_row(*[escape(v) for v in r])
    if console.is_terminal:
        console.print(t)
    else:  # a pipe or a file: as wide as the content (a console's print never goes past its own width)
        Console(width=console.measure(t, options=console.options.update_width(10_000)).maximum).print(t)


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
    table(title, columns + [f"top {i + 1}" for i in range(k)], cells)  # a long file name wraps, never cut


def _is_probability(column: str) -> bool:
    return column.startswith("p(") and column.endswith(")")
