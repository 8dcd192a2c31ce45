"""The runs already made, as the registry and their folders hold them: list, show, compare, open, remove
(`dlforge runs ...`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from dlforge.errors import DlforgeError
from dlforge.runs.registry import REGISTRY_FILE, RunRegistry
from dlforge.runs.rundir import is_run_dir, resolve_run

CLEANABLE = ("failed", "interrupted")  # what `dlforge runs clean --failed` removes


def _headline(metrics: dict[str, float]) -> str:
    for key in ("test/bleu", "test/accuracy", "test/r2", "test/mase", "test/bits_per_char", "val/accuracy", "val/r2",
                "val/mase", "val/bits_per_char", "test/loss", "val/loss"):
        if isinstance(metrics.get(key), int | float):
            return f"{key} {metrics[key]:.4f}"
    return ""


def list_runs(runs_dir: str | Path = "runs") -> list[dict[str, Any]]:
    """Every run in the registry, newest first, with a headline metric."""
    registry = _registry(runs_root(runs_dir))
    if registry is None:
        return []
    rows = registry.list()
    for r in rows:
        r["headline"] = _headline(r.get("metrics") or {})
    return rows


def runs_root(runs_dir: str | Path) -> Path:
    """`runs_dir` as a Path, when it is a folder; a `DlforgeError` naming it when it is not."""
    root = Path(runs_dir)
    if not root.is_dir():
        what = "not a folder" if root.exists() else "no such folder"
        raise DlforgeError(f"runs folder {root}: {what}; give the folder that holds the runs with --runs-dir")
    return root


def _registry(folder: Path) -> RunRegistry | None:
    """The run registry in `folder`, or None when there is none (reading must not create one)."""
    return RunRegistry(folder) if (folder / REGISTRY_FILE).is_file() else None


def show_run(run: str | Path, runs_dir: str | Path = "runs") -> dict[str, Any]:
    run_path = resolve_run(str(run), runs_dir)
    registry = _registry(run_path.parent)
    record = (registry.get(run_path.name) if registry else None) or {"name": run_path.name}
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
    seen: dict[Path, str] = {}  # folder -> the reference that named it first
    for ref, rec in zip(runs, records, strict=True):
        folder = Path(rec["run_dir"]).resolve()
        if folder in seen:
            twice = f"{ref!r} is given twice" if seen[folder] == ref else f"{seen[folder]!r} and {ref!r} are one run"
            raise DlforgeError(f"runs compare: {twice} ({rec['name']}); give two or more different runs")
        seen[folder] = ref
    items = [{"name": rec["name"], "run_dir": rec["run_dir"], "metrics": flat_metrics(rec)} for rec in records]
    out_path = Path(out) if out else Path(runs_dir) / f"compare-{'-vs-'.join(r['name'] for r in items)[:120]}.png"
    plot_compare([(r["name"], Path(r["run_dir"])) for r in items], out_path)
    return {"runs": items, "plot": str(out_path)}


def flat_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """A run's final metrics (a `show_run` record) as `split/metric`, from eval.json's train, val and test sections;
    the run registry's copy when there is no eval.json."""
    evaluated = record.get("eval") or {}
    flat = {f"{s}/{k}": v for s, m in evaluated.items() if s in ("train", "val", "test") and isinstance(m, dict)
            for k, v in m.items()}
    return flat or dict(record.get("metrics") or {})


# --- open ---------------------------------------------------------------------------------------------------------


def run_files(run: str | Path, runs_dir: str | Path = "runs") -> dict[str, Any]:
    """What there is to look at in a run: its folder, model card (README.md) and plots (PNG files), as absolute
    paths (to click on, or to open from anywhere)."""
    run_path = resolve_run(str(run), runs_dir).resolve()
    card = run_path / "README.md"
    plots = sorted((run_path / "plots").glob("*.png"))
    return {"name": run_path.name, "run_dir": str(run_path), "card": str(card) if card.is_file() else None,
            "plots_dir": str(run_path / "plots") if plots else None, "plots": [str(p) for p in plots]}


def open_in_viewer(path: str | Path) -> bool:
    """Open a file or folder with the system's viewer (`open` on macOS, the default app on Windows, `xdg-open`
    under a display elsewhere), without waiting for it. False, and nothing started, where there is no display or
    no viewer: a headless machine is no error."""
    try:
        if sys.platform == "win32":
            os.startfile(path)  # the program the user chose for the file type
            return True
        if sys.platform == "darwin":
            command = ["open", str(path)]
        elif os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            command = ["xdg-open", str(path)]
        else:
            return False
        if shutil.which(command[0]) is None:
            return False
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)  # the viewer outlives this process
        return True
    except OSError:
        return False


def open_run(run: str | Path, runs_dir: str | Path = "runs", viewer: bool = True) -> dict[str, Any]:
    """`run_files`, and the plots folder (or, without plots, the model card) opened in the system's viewer when
    `viewer` and a display allow; `opened` says what was opened, or None."""
    files = run_files(run, runs_dir)
    target = files["plots_dir"] or files["card"]
    files["opened"] = target if viewer and target is not None and open_in_viewer(target) else None
    return files


# --- remove -------------------------------------------------------------------------------------------------------


def _removal(ref: str, root: Path) -> dict[str, Any]:
    """What `ref` removes: a run folder and its registry row, or a row alone whose folder is already gone."""
    for path in (Path(ref), root / ref):
        if is_run_dir(path):
            break
    else:
        registry = _registry(root) if root.is_dir() else None
        row = registry.get(ref) if registry else None
        if row is not None:  # checked before name prefixes: "a-T" must not remove "a-T-2" when a-T's folder is gone
            return {"name": ref, "run_dir": None, "status": row["status"], "registry": registry}
        path = resolve_run(ref, root)  # latest, latest:NAME, a unique name prefix
    registry = _registry(path.parent)
    row = registry.get(path.name) if registry else None
    return {"name": path.name, "run_dir": path, "status": row["status"] if row else None, "registry": registry}


def remove_runs(runs: list[str], runs_dir: str | Path = "runs", force: bool = False) -> list[dict[str, Any]]:
    """Delete runs: each one's folder and its row in the run registry. Every reference is resolved and checked
    before anything is deleted; a run the registry records as running is refused unless `force` (for a run whose
    process is gone without saying so, e.g. after kill -9). Returns {name, run_dir, status} per run removed."""
    root = Path(runs_dir)
    targets = [_removal(ref, root) for ref in runs]
    running = [t for t in targets if t["status"] == "running"]
    if running and not force:
        raise DlforgeError(f"run {running[0]['name']} is running (so says {running[0]['registry'].path}); stop it "
                           f"first, or add --force if its process is gone")
    removed = []
    for target in targets:
        if target["run_dir"] is not None:
            try:
                shutil.rmtree(target["run_dir"])
            except FileNotFoundError:  # named twice, or removed meanwhile
                pass
            except OSError as exc:
                raise DlforgeError(f"{exc.filename or target['run_dir']}: cannot remove ({exc.strerror})") from None
        if target["registry"] is not None:
            target["registry"].delete(target["name"])
        removed.append({"name": target["name"], "run_dir": str(target["run_dir"] or ""), "status": target["status"]})
    return removed


def cleanable_runs(runs_dir: str | Path = "runs") -> list[dict[str, Any]]:
    """The runs `dlforge runs clean --failed` removes: those the registry records as failed or interrupted,
    newest first, as {name, run_dir, status}."""
    root = runs_root(runs_dir)
    registry = _registry(root)
    rows = registry.list() if registry else []
    return [{"name": r["name"], "run_dir": str(root / r["name"]), "status": r["status"]} for r in rows
            if r["status"] in CLEANABLE]
