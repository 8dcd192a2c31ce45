"""What the results and study scripts share (each puts scripts/ on sys.path to import it: scripts/README.md):
JSON records beside the rendered page, a preset run by `dlforge train --json` in a subprocess (its figures and the
wall-clock of the whole command), a benchmark run with `--json`, the machine line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
RESULTS = ROOT / "docs" / "results"  # the generated pages and their JSON records, side by side


def load(path: Path, empty: dict) -> dict:
    return json.loads(path.read_text()) if path.exists() else empty


def save(path: Path, records: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")


def finish(records_path: Path, page: Path, records: dict, render: Callable[[dict], str]) -> None:
    """The end of a results script: stamp the machine, save the records, write the page from them."""
    records["machine"] = machine()
    save(records_path, records)
    page.write_text(render(records))
    print(f"wrote {page}")


def run_preset(preset: str, overrides: list[str] = ()) -> dict:
    """`dlforge train PRESET --json` here and now: the run's eval.json figures and the command's wall-clock."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dlforge", "train", preset, "train.progress=false", *overrides,
                           "--json"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"dlforge train {preset} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return record_run(json.loads(proc.stdout), wall)


def record_run(out: dict, wall: float | None = None) -> dict:
    """A record from the output of `dlforge train --json` (its own wall_s when the command was not timed here)."""
    run_dir = Path(out["run_dir"])
    eval_json = json.loads((ROOT / run_dir / "eval.json").read_text())
    measured = time.strftime("%Y-%m-%d %H:%M", time.localtime((ROOT / run_dir / "eval.json").stat().st_mtime))
    return {"wall_s": round(wall if wall is not None else out["wall_s"], 1), "steps": out["steps"],
            "run_dir": str(run_dir), "test": _numbers(eval_json.get("test", {})),
            "val": _numbers(eval_json.get("val", {})), "measured": measured}


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def run_json(command: list[str]) -> dict:
    """Run a script of this repository that prints one JSON object (a benchmark with --json, say)."""
    proc = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def run_bench(name: str, args: list[str] = ()) -> dict:
    return run_json([str(ROOT / "bench" / f"{name}.py"), *args, "--json"])


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return (f"{platform.machine()} {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def train_in_process(preset: str, overrides: list[str], runs_dir: str, given: str | None = None
                     ) -> tuple[Path, float | None]:
    """Train a preset in this process (`dlforge.api.train`): its run folder and the seconds it took; or, when a run
    is `given`, that run and None."""
    from dlforge.api import train
    from dlforge.runs.rundir import resolve_run

    if given:
        return resolve_run(given, runs_dir), None
    start = time.perf_counter()
    result = train(preset, [*overrides, f"runs_dir={runs_dir}", "train.progress=false"])
    if result.status != "completed":
        raise SystemExit(f"{preset}: {result.status} ({result.stop_reason})")
    return result.run_dir, time.perf_counter() - start


def study_arguments(parser: argparse.ArgumentParser, page: str) -> None:
    """The options every measuring script shares: where runs go, where the page goes, a --quick smoke check."""
    parser.add_argument("--runs-dir", default="runs", help="where new runs go (default: runs)")
    parser.add_argument("--out", type=Path, help=f"folder for {page}.md and {page}.json (default: docs/results/, or "
                                                  f"a temporary folder with --quick)")
    parser.add_argument("--quick", action="store_true", help="a few steps per run: a smoke check, figures meaningless")


def out_folder(args: argparse.Namespace, prefix: str) -> Path:
    return args.out or (Path(tempfile.mkdtemp(prefix=prefix)) if args.quick else RESULTS)


def write_study(out: Path, page: str, result: dict, markdown: Callable[[dict], str]) -> None:
    """out/PAGE.json and out/PAGE.md (printed too)."""
    import torch

    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{page}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    if result.get("quick"):
        title, _, rest = text.partition("\n\n")
        text = f"{title}\n\n**A --quick smoke run: a few steps per model; these figures mean nothing.**\n\n{rest}"
    (out / f"{page}.md").write_text(text)
    print(text)
    print(f"written: {out / f'{page}.md'}, {out / f'{page}.json'}")
