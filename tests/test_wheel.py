"""The wheel works anywhere: `python -m build --wheel` on the source tree, installed with pip into a fresh venv, lists
the presets and trains breast-cancer-mlp from an empty folder (no configs/ there, no source tree on the path).

To stay fast the fresh venv does not install torch and the other dependencies again: a `deps.pth` line adds the
site-packages of the interpreter running the tests to its path. Python processes .pth files only in site
directories, not in a directory that a .pth line adds, so an editable install of dlforge there does not leak in; the
test asserts that dlforge is imported from the fresh venv's own site-packages.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.name for p in (ROOT / "dlforge" / "configs").glob("*.yaml"))
# The wheel is built from a copy of the source tree, so that the build's egg-info and build/ folders never land in
# the working tree; the copy leaves out what is not source (at the top: VCS, venvs, runs, build outputs).
TOP_LEVEL_SKIP = {".git", ".venv", "venv", "runs", "build", "dist", "tmp", ".pytest_cache", ".ruff_cache"}
TIMEOUT = 600


def _not_source(folder: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(folder) == ROOT:
        skipped |= TOP_LEVEL_SKIP & set(names)
    return skipped


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run one step; on failure, fail with the command and its output."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} (in {cwd}) exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _clean_env() -> dict[str, str]:
    """This environment without what would point Python at the source tree or at another venv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PIP_")}
    return env | {"PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def test_wheel_installs_into_a_fresh_venv_and_trains_from_an_empty_folder(tmp_path):
    if importlib.util.find_spec("build") is None:
        pytest.fail("the wheel test needs the `build` package: pip install -e '.[dev]' (or pip install build)")
    source, dist, empty, runs = (tmp_path / name for name in ("source", "dist", "empty", "runs"))
    shutil.copytree(ROOT, source, ignore=_not_source)
    empty.mkdir()

    # 1. Build: no isolation, so the setuptools already installed builds it, offline.
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, source], cwd=tmp_path)
    wheels = sorted(dist.glob("dlforge-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {dist}, found {[w.name for w in wheels]}"
    wheel = wheels[0]

    # 2. What the package reads at run time is in the wheel.
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f"dlforge/configs/{p}" for p in PRESETS if f"dlforge/configs/{p}" not in names]
    assert not missing, f"{wheel.name} lacks presets: {missing}"
    assert "dlforge/py.typed" in names
    instructions = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "dlforge/data/instructions").rglob("*.jsonl"))
    assert instructions and set(instructions) <= names, f"{wheel.name} lacks {set(instructions) - names}"

    # 3. A fresh venv in its own folder; the dependencies come from this interpreter's site-packages (deps.pth).
    env = _clean_env()
    fresh = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", fresh], cwd=empty, env=env)
    bin_dir = fresh / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    fresh_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           cwd=empty, env=env).strip())
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))  # sys.prefix-derived, ordered
    (fresh_site / "deps.pth").write_text("".join(f"{path}\n" for path in ours), encoding="utf-8")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q", wheel],
         cwd=empty, env=env)

    # 4. dlforge comes from the wheel, not from the source tree or an editable install.
    imported = Path(_run([python, "-c", "import dlforge; print(dlforge.__file__)"], cwd=empty, env=env).strip())
    assert imported.resolve().is_relative_to(fresh_site.resolve()), f"dlforge imported from {imported}"

    # 5. From an empty folder: the presets are listed, from inside the installed package.
    listed = json.loads(_run([bin_dir / "dlforge", "presets", "--json"], cwd=empty, env=env))
    assert sorted(f"{row['name']}.yaml" for row in listed) == PRESETS
    for row in listed:
        assert Path(row["path"]).resolve().is_relative_to(fresh_site.resolve()), row

    # 6. ... and breast-cancer-mlp trains (one epoch) and leaves a run with its model folder.
    out = _run([bin_dir / "dlforge", "train", "breast-cancer-mlp", "train.max_epochs=1", "train.progress=false",
                "train.warmup_steps=0", "train.tensorboard=false", f"runs_dir={runs}", "--json"],
               cwd=empty, env=env)
    result = json.loads(out)
    run_dir = Path(result["run_dir"])
    assert result["status"] == "completed" and run_dir.parent == runs, result
    assert (run_dir / "model" / "config.json").is_file() and (run_dir / "model" / "model.safetensors").is_file()
    assert list(empty.iterdir()) == [], f"the run wrote into the working folder: {list(empty.iterdir())}"
