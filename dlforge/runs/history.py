"""The runs already made, as the registry and their folders hold them: list, show, compare (`dlforge runs ...`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dlforge.errors import DlforgeError
from dlforge.runs.registry import RunRegistry
from dlforge.runs.rundir import resolve_run


def _headline(metrics: dict[str, float]) -> str:
    for key in ("test/bleu", "test/accuracy", "test/r2", "test/mase", "test/bits_per_char", "val/accuracy", "val/r2",
                "val/mase", "val/bits_per_char", "test/loss", "val/loss"):
        if isinstance(metrics.get(key), int | float):
            return f"{key} {metrics[key]:.4f}"
    return ""


def list_runs(runs_dir: str | Path = "runs") -> list[dict[str, Any]]:
    """Every run in the registry, newest first, with a headline metric."""
    if not (Path(runs_dir) / "registry.db").exists():
        return []
    rows = RunRegistry(runs_dir).list()
    for r in rows:
        r["headline"] = _headline(r.get("metrics") or {})
    return rows


def show_run(run: str | Path, runs_dir: str | Path = "runs") -> dict[str, Any]:
    run_path = resolve_run(str(run), runs_dir)
    record = RunRegistry(run_path.parent).get(run_path.name) or {"name": run_path.name}
    record["run_dir"] = str(run_path)
    eval_path = run_path / "eval.json"
    record["eval"] = json.loads(eval_path.read_text()) if eval_path.exists() else None
    return record


def compare_runs(runs: list[str], runs_dir: str | Path = "runs", out: str | Path | None = None) -> dict[str, Any]:
    """Final metrics of several runs side by side, and their curves overlaid in one PNG."""
    from dlforge.runs.plots import plot_compare

    if len(runs) < 2:
        raise DlforgeError("runs compare: give at least two runs")
    records = [show_run(r, runs_dir) for r in runs]
    items = []
    for rec in records:
        flat = {f"{s}/{k}": v for s, m in (rec["eval"] or {}).items() if s in ("train", "val", "test")
                for k, v in m.items()}
        items.append({"name": rec["name"], "run_dir": rec["run_dir"], "metrics": flat})
    out_path = Path(out) if out else Path(runs_dir) / f"compare-{'-vs-'.join(r['name'] for r in items)[:120]}.png"
    plot_compare([(r["name"], Path(r["run_dir"])) for r in items], out_path)
    return {"runs": items, "plot": str(out_path)}
