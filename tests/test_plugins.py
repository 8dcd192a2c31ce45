"""A new task is files, not edits: the worked example of docs/architecture.md (examples/tagging_plugin: a dataset,
a model and a task in an installed package) trains, evaluates and reports through the unchanged CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import run_together

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tagging_plugin"
DLFORGE = str(Path(sys.executable).with_name("dlforge"))


def installed(tmp_path: Path, entry_point: str) -> dict[str, str]:
    """The environment of a process in which the example is installed: its module on the path, and a dist-info
    folder declaring its `dlforge.plugins` entry point (what `pip install examples/tagging_plugin` writes)."""
    site = tmp_path / "site"
    info = site / "dlforge_tagging-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dlforge-tagging\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[dlforge.plugins]\n{entry_point}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(site)])}


def dlforge(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([DLFORGE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_task_from_a_plugin_trains_evaluates_and_reports(tmp_path):
    env = installed(tmp_path, "tagging = dlforge_tagging")
    done = dlforge("train", str(EXAMPLE / "tagging.yaml"), f"runs_dir={tmp_path / 'runs'}", "--json", env=env,
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    run = Path(result["run_dir"])
    assert result["metrics"]["test"]["accuracy"] > 0.9 and result["metrics"]["test"]["f1"] > 0.8
    report = json.loads((run / "eval.json").read_text())
    assert set(report["test_per_label_f1"]) == {"right", "up", "far"}
    assert json.loads((run / "per_label_f1.json").read_text()) == report["test_per_label_f1"]
    assert json.loads((run / "model" / "config.json").read_text())["model"] == "tagger"
    # the other verbs, one after the other in one more process with the plug-in (one start of torch for the three)
    results = run_together({"eval": ["eval", str(run), "--json"], "models": ["models"],
                            "predict": ["predict", str(run), str(EXAMPLE / "tagging.yaml")]}, cwd=tmp_path, env=env)
    again, listed, refused = results["eval"], results["models"], results["predict"]
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["metrics"]["accuracy"] == pytest.approx(report["test"]["accuracy"], abs=1e-6)
    assert "tagger" in listed.stdout
    assert refused.returncode == 2 and "not available for tagging models" in refused.stderr


def test_without_the_plugin_its_names_are_unknown(tmp_path):
    done = dlforge("train", str(EXAMPLE / "tagging.yaml"), env=dict(os.environ), cwd=tmp_path)
    assert done.returncode == 2
    assert "data.name: unknown dataset 'quadrant_tags'" in done.stderr and "Traceback" not in done.stderr


def test_a_broken_plugin_is_named_in_one_line(tmp_path):
    env = installed(tmp_path, "tagging = dlforge_tagging_missing")
    done = dlforge("train", str(EXAMPLE / "tagging.yaml"), env=env, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "plug-in 'tagging' (dlforge_tagging_missing, entry point group 'dlforge.plugins') failed to load" \
        in done.stderr
