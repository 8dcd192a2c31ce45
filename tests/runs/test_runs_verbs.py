"""`dlforge runs list | compare | open | rm | clean` on run folders and registry rows the tests write (no training),
called in this process: what is removed, what is refused, names never cut (issue 13, defects 6, 13, 22)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from clitools import ok_json, one_line_error, run_here
from rich.console import Console

from dlforge.cli import output
from dlforge.runs import RunRegistry

LONG = "wine-mlp-with-a-long-experiment-name-20261123-101500"


def add_run(runs: Path, name: str, status: str, folder: bool = True) -> Path:
    """A run folder (config.yaml, a model card, a plot) and its registry row with `status`."""
    path = runs / name
    if folder:
        (path / "plots").mkdir(parents=True)
        (path / "config.yaml").write_text("name: t\n")
        (path / "README.md").write_text("# card\n")
        (path / "plots" / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    registry = RunRegistry(runs)
    registry.start(name, str(path), "t", "0123456789abcdef", "fp", "9733be9-dirty")
    if status != "running":
        registry.finish(name, status, {"test/accuracy": 0.5})
    return path


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    for name, status in (("a-20250101-120000", "completed"), ("a-20250101-120000-2", "failed"),
                         ("b-20250101-120000", "interrupted"), ("c-20250101-120000", "running"),
                         (LONG, "completed")):
        add_run(root, name, status)
    return root


def names(root: Path) -> set[str]:
    return {r["name"] for r in RunRegistry(root).list()}


def test_rm_removes_folder_and_row_and_refuses_a_running_run(runs, capsys):
    proc = run_here(capsys, "runs", "rm", "c-20250101-120000", "a-20250101-120000")
    assert "c-20250101-120000 is running" in one_line_error(proc) and "--force" in proc.stderr
    assert (runs / "a-20250101-120000").is_dir() and len(names(runs)) == 5  # nothing removed: all checked first

    proc = run_here(capsys, "runs", "rm", "c-20250101-120000", "a-20250101-120000", "--force", "--json")
    assert [r["name"] for r in ok_json(proc)] == ["c-20250101-120000", "a-20250101-120000"]
    assert not (runs / "c-20250101-120000").exists() and not (runs / "a-20250101-120000").exists()
    assert names(runs) == {"a-20250101-120000-2", "b-20250101-120000", LONG}

    proc = run_here(capsys, "runs", "rm", "nope")
    assert "no such run folder" in one_line_error(proc)


def test_rm_of_a_row_whose_folder_is_gone_removes_that_row_not_a_longer_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    add_run(root, "a-20250101-120000", "failed", folder=False)  # deleted by hand; its row is still listed
    kept = add_run(root, "a-20250101-120000-2", "completed")  # its name starts with the other's
    proc = run_here(capsys, "runs", "rm", "a-20250101-120000")
    assert proc.returncode == 0 and "removed a-20250101-120000 (failed)" in proc.stdout
    assert kept.is_dir() and names(root) == {"a-20250101-120000-2"}


def test_clean_failed_lists_asks_and_removes_failed_and_interrupted_runs(runs, capsys):
    doomed = {"a-20250101-120000-2", "b-20250101-120000"}
    proc = run_here(capsys, "runs", "clean", "--failed", "--dry-run", "--json")
    assert {r["name"] for r in ok_json(proc)} == doomed and len(names(runs)) == 5

    proc = run_here(capsys, "runs", "clean", "--failed")  # pytest's stdin is no terminal: no one to ask
    assert "--yes" in one_line_error(proc) and len(names(runs)) == 5
    assert "--failed" in one_line_error(run_here(capsys, "runs", "clean"))

    proc = run_here(capsys, "runs", "clean", "--failed", "--yes")
    assert proc.returncode == 0 and proc.stdout.count("removed ") == 2
    assert names(runs) == {"a-20250101-120000", "c-20250101-120000", LONG}
    assert not any((runs / n).exists() for n in doomed) and (runs / "c-20250101-120000").is_dir()
    proc = run_here(capsys, "runs", "clean", "--failed", "--yes")
    assert proc.returncode == 0 and "no runs to remove" in proc.stdout


def test_a_missing_runs_folder_and_a_run_compared_with_itself_are_errors(runs, capsys):
    for verb in (["list"], ["clean", "--failed", "--dry-run"]):
        proc = run_here(capsys, "runs", *verb, "--runs-dir", "/nope")
        assert one_line_error(proc) == ("error: runs folder /nope: no such folder; give the folder that holds the "
                                        "runs with --runs-dir")
    proc = run_here(capsys, "runs", "compare", "a-20250101-120000", "a-20250101-120000")
    assert "'a-20250101-120000' is given twice" in one_line_error(proc)
    proc = run_here(capsys, "runs", "compare", LONG, "wine-mlp-with")  # a unique prefix of the same run
    assert f"'{LONG}' and 'wine-mlp-with' are one run" in one_line_error(proc)


def test_list_never_cuts_a_name(runs, capsys, monkeypatch):
    proc = run_here(capsys, "runs", "list")  # stdout is a pipe here: every line as long as its content
    assert proc.returncode == 0 and LONG in proc.stdout and "9733be9-dirty" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) > 80

    terminal = io.StringIO()  # a narrow terminal: the other columns wrap, the name keeps its width
    monkeypatch.setattr(output, "console", Console(file=terminal, force_terminal=True, width=80, color_system=None))
    run_here(capsys, "runs", "list")
    lines = terminal.getvalue().splitlines()
    assert any(LONG in line for line in lines) and max(len(line) for line in lines) <= 80


def test_open_prints_the_card_and_plots_and_opens_them_under_a_display(runs, capsys, monkeypatch, tmp_path):
    run = runs.resolve() / LONG
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    proc = run_here(capsys, "runs", "open", LONG)  # headless: it only prints
    assert proc.returncode == 0 and "opened" not in proc.stdout
    assert f"card: {run / 'README.md'}" in proc.stdout and f"plot: {run / 'plots' / 'loss.png'}" in proc.stdout

    bin_dir, log = tmp_path / "bin", tmp_path / "viewer.log"
    bin_dir.mkdir()
    viewer = bin_dir / "xdg-open"  # stands in for the desktop's viewer: records what it was asked to open
    viewer.write_text(f"#!/bin/sh\necho \"$1\" > {log}\n")
    viewer.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DISPLAY", ":0")
    proc = run_here(capsys, "runs", "open", LONG)
    assert proc.returncode == 0 and f"opened {run / 'plots'}" in proc.stdout
    for _ in range(100):  # the viewer runs on its own; wait for it to write
        if log.exists() and log.read_text():
            break
        time.sleep(0.05)
    assert log.read_text().strip() == str(run / "plots")
    files = json.loads(run_here(capsys, "runs", "open", LONG, "--json").stdout)
    assert files["card"] == str(run / "README.md") and files["opened"] is None
