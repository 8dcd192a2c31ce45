"""Tests of dlforge.runs: run folders, crash-safe writes, the metrics log, the SQLite registry, plots, model cards."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest

import dlforge.runs
from dlforge.errors import DlforgeError
from dlforge.runs import (
    RunRegistry,
    atomic_write_json,
    atomic_write_text,
    git_revision,
    new_run_dir,
    plot_compare,
    plot_confusion_matrix,
    plot_run,
    read_metrics,
    resolve_run,
    write_metrics_csv,
    write_model_card,
)
from dlforge.runs import plots as plots_module
from dlforge.runs import progress as progress_module
from dlforge.runs import rundir as rundir_module
from dlforge.runs.plots import plot_scores
from dlforge.runs.progress import Progress
from dlforge.runs.rundir import lock_run_dir, reporting_full_disk, trim_metrics

REPO_ROOT = Path(dlforge.runs.__file__).resolve().parents[2]
STAMP = "20250101-120000"


def make_run(runs_dir: Path, name: str, finished: bool = False) -> Path:
    path = runs_dir / name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("name: test\n")
    if finished:  # what a completed run has and an interrupted or failed one lacks
        (path / "model").mkdir()
        (path / "model" / "config.json").write_text("{}")
        (path / "eval.json").write_text("{}")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def synthetic_metrics(steps: int = 50, eval_every: int = 10, scale: float = 1.0) -> list[dict]:
    rows = []
    for step in range(1, steps + 1):
        rows.append({"step": step, "epoch": step // 20, "loss": scale / step, "lr": 1e-3 * (1 - step / steps)})
        if step % eval_every == 0:
            rows.append(
                {
                    "step": step,
                    "epoch": step // 20,
                    "split": "val",
                    "val/loss": 1.2 * scale / step,
                    "val/accuracy": 1 - 0.5 / step,
                    "val/f1": 1 - 0.6 / step,
                }
            )
    return rows


# --- run folders ------------------------------------------------------------------------------------------------


def test_new_run_dir_name_has_a_timestamp(tmp_path):
    path = new_run_dir(tmp_path / "runs", "iris-mlp")
    assert path.is_dir() and path.parent == tmp_path / "runs"
    assert re.fullmatch(r"iris-mlp-\d{8}-\d{6}", path.name)


def test_new_run_dir_same_second_gets_a_suffix(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir_module.time, "strftime", lambda fmt: STAMP)
    names = [new_run_dir(tmp_path, "exp").name for _ in range(3)]
    assert names == [f"exp-{STAMP}", f"exp-{STAMP}-2", f"exp-{STAMP}-3"]


def test_new_run_dir_concurrent_callers_get_distinct_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir_module.time, "strftime", lambda fmt: STAMP)
    made: list[Path] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            path = new_run_dir(tmp_path, "exp")
            with lock:
                made.append(path)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == len(set(made)) == 40


def test_new_run_dir_rejects_a_path_as_name(tmp_path):
    with pytest.raises(DlforgeError, match="run name"):
        new_run_dir(tmp_path, "a/b")


def test_resolve_run_by_path_name_and_prefix(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    iris = make_run(runs, f"iris-{STAMP}")
    make_run(runs, "wine-20250102-090000")
    assert resolve_run(str(iris), runs) == iris
    assert resolve_run(iris.name, runs) == iris
    assert resolve_run("iris", runs) == iris
    monkeypatch.chdir(tmp_path)
    assert resolve_run("runs/" + iris.name) == Path("runs") / iris.name  # default runs_dir, path relative to cwd
    (tmp_path / "iris").mkdir()  # a data folder of the same name does not hide the run
    assert resolve_run("iris") == Path("runs") / iris.name


def test_resolve_run_latest_follows_the_name_timestamp(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "b-20250102-090000", finished=True)
    make_run(runs, "b-20250102-090000-2", finished=True)
    older = make_run(runs, "a-20250101-120000", finished=True)
    (runs / "not-a-run").mkdir()  # newer, but without config.yaml
    (older / "eval.json").write_text("{}")  # an old run evaluated later: its mtime moves, its start does not
    assert resolve_run("latest", runs).name == "b-20250102-090000-2"


def test_latest_is_the_newest_finished_run_and_says_what_it_passed_over(tmp_path, capsys):
    """A failed or interrupted run is not `latest` for eval, predict, init_from...; `--resume latest` still takes
    the newest run (issue 13, defect 6)."""
    runs = tmp_path / "runs"
    done = make_run(runs, "a-20250101-120000", finished=True)
    failed = make_run(runs, "a-20250102-090000")  # started later, died on a NaN
    assert resolve_run("latest", runs) == done and resolve_run("latest:a", runs) == done
    note = capsys.readouterr().err
    assert "passed over 1 newer unfinished (a-20250102-090000)" in note and "--resume" in note
    assert resolve_run("latest", runs, finished=False) == failed
    assert capsys.readouterr().err == ""
    only = tmp_path / "only"
    make_run(only, "b-20250101-120000")
    with pytest.raises(DlforgeError, match=r"latest: no finished run in .*b-20250101-120000, did not finish"):
        resolve_run("latest", only)


def test_resolve_run_errors(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, f"iris-{STAMP}")
    make_run(runs, f"iris-{STAMP}-2")
    (runs / "empty").mkdir()
    with pytest.raises(DlforgeError, match=f"ambiguous.*iris-{STAMP}, iris-{STAMP}-2"):
        resolve_run("iris", runs)
    with pytest.raises(DlforgeError, match="'nope': no such run"):
        resolve_run("nope", runs)
    with pytest.raises(DlforgeError, match=r"empty: not a run folder \(no config.yaml\)"):
        resolve_run("empty", runs)
    with pytest.raises(DlforgeError, match="latest: no run folders"):
        resolve_run("latest", tmp_path / "elsewhere")


# --- one writer per run folder (issue 13, defect 27) --------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from dlforge.runs.rundir import lock_run_dir
with lock_run_dir(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_locked_run_folder_refuses_a_second_writer_naming_the_first_until_it_ends(tmp_path):
    with lock_run_dir(tmp_path):
        with pytest.raises(DlforgeError, match=rf"^{tmp_path}: another dlforge process \(pid {os.getpid()}\)"):
            with lock_run_dir(tmp_path):
                pass
    with lock_run_dir(tmp_path):  # released at the end of the block
        pass
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DlforgeError, match=rf"\(pid {holder.pid}\)"):
            with lock_run_dir(tmp_path):
                pass
    finally:
        holder.kill()  # kill -9: the OS releases its lock
        holder.wait(timeout=30)
    with lock_run_dir(tmp_path):
        pass


# --- crash-safe writes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),  # Python's own writes
    RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors' (Rust)
])
def test_a_full_disk_is_one_error_naming_the_file_and_the_space_it_needed(tmp_path, failure):
    target = tmp_path / "checkpoints" / "checkpoint-20"
    with pytest.raises(DlforgeError, match=rf"^{target}: could not be written: no space left on the device "
                                           rf"\(needs about 3\.2 MB; [\d.]+ [kMGT]?B free there\); free some space"):
        with reporting_full_disk(target, 3_200_000):
            raise failure
    with pytest.raises(RuntimeError, match="unrelated"):  # anything else passes through untouched
        with reporting_full_disk(target, 10):
            raise RuntimeError("unrelated")


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "eval.json"
    atomic_write_json(path, {"accuracy": 0.5})
    atomic_write_json(path, {"accuracy": 0.9})
    assert json.loads(path.read_text()) == {"accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no temporary file left


def test_atomic_write_keeps_the_old_file_when_the_writer_crashes(tmp_path, monkeypatch):
    path = tmp_path / "README.md"
    atomic_write_text(path, "old")

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(rundir_module.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]


# --- the metrics log --------------------------------------------------------------------------------------------


def test_read_metrics_ignores_a_torn_last_line(tmp_path):
    path = write_jsonl(tmp_path / "metrics.jsonl", [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}])
    with path.open("a") as f:
        f.write('{"step": 3, "lo')  # a crash in the middle of a write
    assert read_metrics(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]


def test_read_metrics_names_a_bad_line_in_the_middle(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(DlforgeError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(path)


def test_trimming_the_log_to_a_checkpoint_never_pads_and_keeps_only_valid_rows(tmp_path):
    """Issue 13, defect 28: a log shorter than its checkpoint says (trimmed, or cut by a power loss) was padded with
    NUL bytes on resume, and the run failed on invalid JSON at its end."""
    rows = [{"step": s, "loss": 1 / s} for s in range(1, 9)]
    path = write_jsonl(tmp_path / "metrics.jsonl", rows)
    full = path.stat().st_size
    trim_metrics(path, full + 500, max_step=8)  # the checkpoint remembers a longer log: nothing is added
    assert path.stat().st_size == full and read_metrics(path) == rows
    trim_metrics(path, full, max_step=5)  # rows past the checkpoint's step go
    assert read_metrics(path) == rows[:5]
    path.write_bytes(path.read_bytes() + b'{"step": 6, "lo')  # a torn last line
    trim_metrics(path, full, max_step=8)
    assert path.read_bytes().endswith(b"\n") and read_metrics(path) == rows[:5]
    path.write_bytes(b"\0" * 40 + path.read_bytes())  # what the old resume left: NUL padding glued to a row
    trim_metrics(path, full + 40, max_step=8)
    assert read_metrics(path) == rows[1:5]
    kept = path.stat().st_size
    path.write_bytes(path.read_bytes() + b'{"step": 6}\n')  # the usual case: rows after the checkpoint are cut
    trim_metrics(path, kept, max_step=5)
    assert path.stat().st_size == kept


def test_metrics_csv_header_is_the_union_of_keys(tmp_path):
    rows = [
        {"loss": 0.5, "step": 1, "epoch": 0, "lr": 0.01},
        {"step": 1, "epoch": 0, "split": "val", "val/loss": 0.4, "val/accuracy": 0.9},
        {"step": 2, "epoch": 0, "loss": 0.3, "lr": 0.01, "grad_norm": 1.5},
    ]
    jsonl = write_jsonl(tmp_path / "metrics.jsonl", rows)
    write_metrics_csv(jsonl, tmp_path / "metrics.csv")
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,split,loss,lr,val/loss,val/accuracy,grad_norm"
    assert lines[1] == "1,0,,0.5,0.01,,,"
    assert lines[2] == "1,0,val,,,0.4,0.9,"
    assert len(lines) == 4


# --- the registry -----------------------------------------------------------------------------------------------

CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}

REGISTER_MANY = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from dlforge.runs import RunRegistry

    runs_dir, prefix, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    registry = RunRegistry(runs_dir)
    (go.parent / f"ready-{prefix}").touch()
    while not go.exists():  # start both writers together
        time.sleep(0.001)
    for i in range(count):
        name = f"{prefix}-{i}"
        registry.start(name, f"{runs_dir}/{name}", "preset", "hash", "data", None)
        registry.finish(name, "completed", {"val/accuracy": i / count})
    """
)


def test_registry_records_start_finish_and_lists_newest_first(tmp_path):
    registry = RunRegistry(tmp_path)
    registry.start("a", tmp_path / "a", "iris-mlp", "c0ffee", "f00d", "abc123")
    time.sleep(0.01)
    registry.start("b", tmp_path / "b", "iris-mlp", "c0ffee", "f00d", None)
    registry.finish("a", "completed", {"val/accuracy": 0.93})
    registry.update_status("b", "interrupted")

    a = registry.get("a")
    assert a["status"] == "completed" and a["metrics"] == {"val/accuracy": 0.93}
    assert a["run_dir"] == str(tmp_path / "a") and a["git_rev"] == "abc123"
    assert a["finished"] >= a["started"]
    assert registry.get("missing") is None
    assert [r["name"] for r in registry.list()] == ["b", "a"]
    assert registry.list()[0]["metrics"] == {}

    with sqlite3.connect(tmp_path / "registry.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(ValueError, match="expected one of"):
        registry.finish("a", "done", {})
    with pytest.raises(DlforgeError, match="no run named 'zzz'"):
        registry.update_status("zzz", "failed")


def test_registry_two_processes_register_100_runs(tmp_path):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER_MANY, str(tmp_path), prefix, "50", str(go)],
            env=CHILD_ENV,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prefix in ("p1", "p2")
    ]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"ready-{p}").exists() for p in ("p1", "p2")) and time.monotonic() < deadline:
        time.sleep(0.005)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    runs = RunRegistry(tmp_path).list()
    assert len(runs) == 100
    assert {r["name"] for r in runs} == {f"{p}-{i}" for p in ("p1", "p2") for i in range(50)}
    assert all(r["status"] == "completed" for r in runs)


KILLED_WRITER = textwrap.dedent(
    """
    import sqlite3, sys, time
    from dlforge.runs import RunRegistry

    registry = RunRegistry(sys.argv[1])
    for i in range(3):
        registry.start(f"committed-{i}", "dir", "preset", "hash", "data", None)
    registry.finish("committed-0", "completed", {"loss": 0.1})
    conn = sqlite3.connect(registry.path, isolation_level=None)
    conn.execute("PRAGMA cache_size = 10")  # spill uncommitted pages into the WAL file
    conn.execute("BEGIN IMMEDIATE")
    for i in range(2000):
        conn.execute("INSERT INTO runs (name, metrics) VALUES (?, ?)", (f"uncommitted-{i}", "x" * 500))
    print("in transaction", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 is POSIX")
def test_registry_survives_a_writer_killed_mid_transaction(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)], env=CHILD_ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "in transaction"
        assert (tmp_path / "registry.db-wal").stat().st_size > 0
    finally:
        proc.kill()  # SIGKILL: no rollback, no cleanup
        proc.wait()
        proc.stdout.close()

    registry = RunRegistry(tmp_path)
    assert sorted(r["name"] for r in registry.list()) == ["committed-0", "committed-1", "committed-2"]
    assert registry.get("committed-0")["metrics"] == {"loss": 0.1}
    registry.start("after", "dir", "preset", "hash", "data", None)  # the lock died with the writer
    assert registry.get("after")["status"] == "running"
    with sqlite3.connect(registry.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_git_revision_of_this_checkout():
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    rev = git_revision(REPO_ROOT)
    assert rev is None or re.fullmatch(r"[0-9a-f]{4,40}(-dirty)?", rev)


def test_git_revision_is_none_without_git(tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", missing)
    assert git_revision(tmp_path) is None


# --- plots ------------------------------------------------------------------------------------------------------


def assert_png(path: Path, min_side: int = 200) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= min_side and height >= min_side
    assert len(data) > 5_000  # more than a blank canvas


def test_plot_run_writes_loss_lr_and_metrics(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", synthetic_metrics())
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["loss.png", "lr.png", "metrics.png"]
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert_png(path)


def test_plot_run_skips_plots_without_data(tmp_path):
    assert plot_run(tmp_path) == []  # no metrics.jsonl yet
    write_jsonl(tmp_path / "metrics.jsonl", [{"step": s, "epoch": 0, "loss": 1 / s} for s in range(1, 20)])
    assert [p.name for p in plot_run(tmp_path)] == ["loss.png"]


def test_plot_confusion_matrix(tmp_path):
    path = plot_confusion_matrix(
        [[50, 2, 0], [3, 40, 7], [0, 5, 45]],
        ["setosa", "versicolor", "virginica"],
        tmp_path / "plots" / "confusion.png",
        title="val",
    )
    assert_png(path)
    with pytest.raises(ValueError, match="2 labels; expected 2x2"):
        plot_confusion_matrix([[1, 2, 3]], ["a", "b"], tmp_path / "bad.png")


@pytest.fixture
def figures(monkeypatch) -> dict[str, object]:
    """The figures the plot functions save, by file name."""
    saved = {}
    save = plots_module._save

    def keep(fig, path):
        saved[Path(path).name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots_module, "_save", keep)
    return saved


def test_the_confusion_matrix_title_is_clear_of_the_colorbar(tmp_path, figures):
    """Issue 13, defect 23: with 2 classes the title, wider than the matrix, ran under the colorbar."""
    from matplotlib.text import Text

    title = "breast-cancer-mlp: test confusion matrix"
    plot_confusion_matrix([[50, 3], [4, 40]], ["benign", "malignant"], tmp_path / "confusion.png", title=title)
    fig = figures["confusion.png"]
    renderer = fig.canvas.get_renderer()
    [text] = [t for t in fig.findobj(Text) if t.get_text() == title]
    colorbar = fig.axes[-1]
    assert colorbar is not fig.axes[0]
    assert not text.get_window_extent(renderer).overlaps(colorbar.get_window_extent(renderer))


@pytest.mark.parametrize("train_steps", [[5], [1, 5]])  # one log row (before), the first and last steps (now)
def test_a_run_of_a_few_steps_is_plotted_with_whole_steps_and_its_lr(tmp_path, figures, train_steps):
    """Issue 13, defect 23: a run shorter than log_every gave one-point plots with ticks at 4.96, 4.98, ..."""
    rows = [{"step": s, "epoch": 0.1 * s, "loss": 1 / s, "lr": 0.01} for s in train_steps]
    rows.append({"step": 5, "epoch": 0.5, "split": "val", "val/loss": 0.3, "val/accuracy": 0.8})
    write_jsonl(tmp_path / "metrics.jsonl", rows)
    assert [p.name for p in plot_run(tmp_path)] == ["loss.png", "lr.png", "metrics.png"]
    for name, fig in figures.items():
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)


def test_final_scores_are_plotted_a_panel_per_metric(tmp_path, figures):
    scores = {"val": {"bleu": 12.5, "chrf": 40.1}, "test": {"bleu": 10.0, "chrf": 38.0}}
    assert_png(plot_scores(scores, tmp_path / "scores.png", title="bible: best checkpoint (step 40)"))
    panels = [ax for ax in figures["scores.png"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["bleu", "chrf"]
    assert [[bar.get_height() for bar in ax.patches] for ax in panels] == [[12.5, 10.0], [40.1, 38.0]]


def test_plot_compare_two_runs(tmp_path):
    a = write_jsonl(tmp_path / "a" / "metrics.jsonl", synthetic_metrics()).parent
    b = write_jsonl(tmp_path / "b" / "metrics.jsonl", synthetic_metrics(scale=2.0)).parent
    path = plot_compare([("adam", a), ("sgd", b)], tmp_path / "compare.png")
    assert_png(path)
    only = plot_compare([("adam", a), ("sgd", b)], tmp_path / "acc.png", keys=["val/accuracy"])
    assert_png(only)
    with pytest.raises(DlforgeError, match="no run logged val/bleu"):
        plot_compare([("adam", a)], tmp_path / "x.png", keys=["val/bleu"])


# --- model card -------------------------------------------------------------------------------------------------


def test_model_card_has_the_sections_and_the_metrics(tmp_path):
    config = {
        "name": "iris-mlp",
        "data": {"name": "iris", "val_fraction": 0.2},
        "model": {"name": "mlp", "hidden": [64, 64], "in_features": 4, "out_features": 3},
        "train": {
            "optimizer": "adamw",
            "lr": 0.003,
            "weight_decay": 0.01,
            "scheduler": "cosine",
            "warmup_steps": 10,
            "max_epochs": 50,
            "batch_size": 32,
            "precision": "fp32",
            "seed": 7,
        },
    }
    info = {
        "task": "classification",
        "num_classes": 3,
        "label_names": ["setosa", "versicolor", "virginica"],
        "feature_names": ["sepal length", "sepal width", "petal length", "petal width"],
        "split_sizes": {"train": 120, "val": 15, "test": 15},
    }
    metrics = {"val": {"val/loss": 0.1234, "val/accuracy": 0.9333}, "test": {"loss": 0.2, "accuracy": 0.8667}}
    run_dir = tmp_path / "runs" / f"iris-mlp-{STAMP}"
    run_dir.mkdir(parents=True)
    usage = ("input.csv", "a CSV file of the four measurements")
    path = write_model_card(
        run_dir, name="iris-mlp", config=config, info=info, metrics=metrics, params=4_867, wall_s=83.2, predict=usage
    )
    assert path == run_dir / "README.md"
    text = path.read_text()
    for heading in ("Model", "Training data", "Training", "Metrics", "Intended use", "Caveats and recommendations",
                    "How to load"):
        assert f"\n## {heading}\n" in text
    assert "| metric | val | test |" in text
    assert "| loss | 0.1234 | 0.2000 |" in text
    assert "| accuracy | 0.9333 | 0.8667 |" in text
    assert "- Registry name: `mlp`" in text and "- Parameters: 4,867" in text
    assert "hidden: [64, 64]" in text
    assert "- Split sizes: train 120, val 15, test 15" in text
    assert "- Labels: 3: setosa, versicolor, virginica" in text and "- Features: 4" in text
    assert "- Schedule: cosine after 10 warmup steps" in text and "- Seed: 7" in text
    assert "- Wall clock: 1 min 23 s" in text
    assert "fairness" in text
    assert f'dlforge.load("{run_dir.as_posix()}/model")' in text
    assert f"dlforge predict {run_dir.as_posix()} input.csv\n" in text
    assert "`input.csv`: a CSV file of the four measurements.\n" in text
    no_predict = write_model_card(run_dir, name="iris-mlp", config=config, info=info, metrics=metrics, params=1,
                                  wall_s=1.0).read_text()  # a task without predict (a plug-in's, say)
    assert "`dlforge predict` does not read new inputs for this kind of model." in no_predict
    assert "```bash" not in no_predict


# --- progress of long work (issue 13, defect 10) -------------------------------------------------------------------


def test_progress_off_a_terminal_is_a_plain_line_with_rate_and_eta_every_period(monkeypatch):
    clock = iter([100.0, 110.0, 115.0, 140.0, 140.0, 140.0])  # the start, then each update's readings
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    out = io.StringIO()  # not a terminal
    progress = Progress("train", total=1000, done=200, every_s=30.0, stream=out)
    progress.update(300, "loss 0.5000")  # 10 s in: not yet
    progress.update(320)  # 15 s in: not yet
    progress.update(500)  # 40 s in: a line; 300 steps in 40 s since the resumed step 200
    progress.note("epoch 1.00  step 500  val/loss 0.4")
    progress.close()
    assert out.getvalue().splitlines() == [
        "train: 500/1000 steps (50%), 7.5 steps/s, ETA 1 min 07 s, loss 0.5000",
        "epoch 1.00  step 500  val/loss 0.4",
    ]
