"""The command line end to end, as a person uses it: `python -m dlforge ...` in a subprocess, in a temp folder.

Each new process pays for importing torch and the catalog (several seconds), so the commands that only read (eval,
predict, runs, listings) or fail on their input run one after the other through the CLI's `main` in one fresh
process (`run_together`); the trainings, the `--debug` tracebacks and the crafted folders get a process each.
The tests then check each call's result on its own.
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from clitools import (
    ENV,
    dlforge_cmd,
    ok_json,
    one_line_error,
    run_all,
    run_cli,
    run_together,
    train_rows,
    write_blobs_csv,
    write_config,
)

from dlforge.config import list_presets, load_config, read_yaml
from dlforge.errors import CheckpointError
from dlforge.registry import dataset_entries, model_entries

MAX_STEPS = 30
EVAL_EVERY = 10
PNG = b"\x89PNG\r\n\x1a\n"


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def registry_rows(runs_dir: Path) -> list[dict]:
    from dlforge.runs import RunRegistry

    return RunRegistry(runs_dir).list()


def fix_manifest(folder: Path, filename: str) -> None:
    """Make manifest.json agree with the file as it is now (what a careful forger would do)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / filename).read_bytes()
    manifest["files"][filename] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


# --- fixtures ------------------------------------------------------------------------------------------------------


@dataclass
class Trained:
    dir: Path  # the cwd the runs were trained in; runs/ is inside
    csv: Path
    cfg: Path
    results: list[subprocess.CompletedProcess]  # the two `dlforge train --json` processes
    runs: list[Path]  # their run folders, in the order of `results`
    run: Path  # the first one, used by the tests of eval, predict, runs show
    eval: dict  # its eval.json


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """Two `dlforge train` processes with the same config (so the same run name), started at the same time."""
    d = tmp_path_factory.mktemp("trained")
    data = write_blobs_csv(d / "blobs.csv", n=150)
    cfg = write_config(d / "cfg.yaml", data, max_steps=MAX_STEPS, eval_every=EVAL_EVERY, checkpoint_every=10)
    procs = [subprocess.Popen(dlforge_cmd("train", str(cfg), "--json"), cwd=d, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    results = [subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)]
    runs = [d / ok_json(r)["run_dir"] for r in results]
    return Trained(d, data, cfg, results, runs, runs[0], json.loads((runs[0] / "eval.json").read_text()))


@pytest.fixture(scope="module")
def used(trained) -> dict[str, subprocess.CompletedProcess]:
    """eval, predict and runs commands on the trained runs, one after the other in one process."""
    d, run = trained.dir, str(trained.run)
    with open(trained.csv, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][-1] == "label"
    no_target, empty_target = d / "no-target.csv", d / "empty-target.csv"
    with open(no_target, "w", newline="") as out:
        csv.writer(out).writerows([r[:-1] for r in rows])
    with open(empty_target, "w", newline="") as out:  # the column is there, waiting for the answers
        csv.writer(out).writerows([rows[0]] + [[*r[:-1], ""] for r in rows[1:]])
    return run_together({
        "eval-test": ["eval", run, "--split", "test", "--json"],
        "eval-val": ["eval", run, "--split", "val", "--json"],
        "eval-bad-split": ["eval", run, "--split", "tset"],
        "eval-by-name": ["eval", trained.run.name, "--json"],
        "predict": ["predict", run, str(trained.csv), "--out", str(d / "preds.csv"), "--json"],
        "predict-no-target": ["predict", run, str(no_target), "--out", str(d / "preds-no-target.csv")],
        "predict-empty-target": ["predict", run, str(empty_target), "--out", str(d / "preds-empty-target.csv")],
        "predict-out-nowhere": ["predict", run, str(trained.csv), "--out", str(d / "no-such-dir" / "preds.csv")],
        "runs-list": ["runs", "list", "--json"],
        "runs-show": ["runs", "show", trained.run.name, "--json"],
        "runs-compare": ["runs", "compare", *[r.name for r in trained.runs], "--json", "--out", str(d / "cmp.png")],
    }, d)


# --- listing what there is -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def info(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    d = tmp_path_factory.mktemp("info")
    return run_together({"models": ["models", "--json"], "datasets": ["datasets", "--json"],
                         "presets": ["presets", "--json"], "schema": ["config", "schema"], "help": ["--help"],
                         "h": ["-h"], "train-h": ["train", "-h"], "runs-h": ["runs", "-h"], "version": ["--version"],
                         "rag-eval-h": ["rag", "eval", "-h"]}, d)


def test_models_and_datasets_list_the_registry(info):
    for key, entries in (("models", model_entries()), ("datasets", dataset_entries())):
        rows = ok_json(info[key])
        assert [r["name"] for r in rows] == [e.name for e in entries]
        for row, entry in zip(rows, entries, strict=True):
            assert row["config"] == entry.config_cls.__name__ and row["description"] == entry.doc
            assert row["description"], f"{entry.name} has no docstring"


def test_presets_lists_the_configs_folder_even_from_another_cwd(info):
    rows = ok_json(info["presets"])
    presets = list_presets()
    assert [r["name"] for r in rows] == list(presets)
    for row in rows:
        raw = read_yaml(presets[row["name"]])
        assert Path(row["path"]).resolve() == presets[row["name"]].resolve()
        assert (row["data"], row["model"]) == (raw["data"]["name"], raw["model"]["name"])


def test_config_schema_prints_the_json_schema(info):
    from dlforge.config import json_schema

    schema = ok_json(info["schema"])
    assert "properties" in schema
    assert schema == json.loads(json.dumps(json_schema()))


def test_help_exits_0_and_names_the_commands(info):
    proc = info["help"]
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "eval", "predict", "runs", "models", "presets"):
        assert command in proc.stdout


def test_short_help_version_and_the_debug_flag_are_there(info):
    """-h wherever --help is, --version, and --debug named in the help (issue 13, defect 20)."""
    from dlforge import __version__

    assert info["h"].returncode == 0 and info["h"].stdout == info["help"].stdout
    assert "--debug" in " ".join(info["help"].stdout.split())
    for key, usage in (("train-h", "dlforge train"), ("runs-h", "dlforge runs")):
        assert info[key].returncode == 0 and usage in info[key].stdout, info[key].stderr
    assert info["version"].returncode == 0 and info["version"].stdout.strip() == f"dlforge {__version__}"
    help_text = " ".join(info["rag-eval-h"].stdout.replace("│", " ").split())
    assert '"gold": a list of file paths or {"source": ..., "heading": ...} objects' in help_text  # not eaten as markup


# --- train -----------------------------------------------------------------------------------------------------------


def test_train_json_summary(trained):
    for result, run in zip(trained.results, trained.runs, strict=True):
        s = ok_json(result)
        assert s["status"] == "completed" and s["steps"] == MAX_STEPS and s["stop_reason"] == "max_steps"
        assert 0 < s["fit_s"] < s["wall_s"]  # the loop alone, inside the whole command's time
        assert run.is_dir() and run.parent == trained.dir / "runs"
        assert set(s["metrics"]) == {"train", "val", "test"}
        written = json.loads((run / "eval.json").read_text())
        # the metrics are of the best checkpoint, and say so (issue 13, defect 23)
        best = json.loads((run / "checkpoints" / "best" / "best.json").read_text())
        assert s["weights"] == written["weights"] == {"checkpoint": "best", **best}
        step, value = best["step"], best["value"]
        assert f"Of the best checkpoint (step {step}, val/loss {value:.4g})." in (run / "README.md").read_text()
        for split in ("train", "val", "test"):
            assert s["metrics"][split] == written[split]
            assert 0.0 <= s["metrics"][split]["accuracy"] <= 1.0


def test_run_folder_config_loads_back_to_the_same_values(trained):
    saved = load_config(trained.run / "config.yaml")
    assert saved.model_dump(mode="json") == load_config(trained.cfg).model_dump(mode="json")


def test_run_folder_metrics_log(trained):
    rows = train_rows(trained.run)
    steps = [r for r in rows if "split" not in r]
    assert [r["step"] for r in steps] == list(range(1, MAX_STEPS + 1))  # log_every=1
    for r in steps:
        assert {"step", "epoch", "loss", "lr"} <= set(r)
    evals = [r for r in rows if "split" in r]
    assert [r["step"] for r in evals] == list(range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY))
    for r in evals:
        assert r["split"] == "val" and "val/loss" in r and "val/accuracy" in r
    assert not any(k.startswith("val/") for r in steps for k in r)
    table = read_csv_rows(trained.run / "metrics.csv")
    assert len(table) == len(rows)
    assert {"step", "epoch", "split", "loss", "lr", "val/loss", "val/accuracy"} <= set(table[0])
    assert [float(t["loss"]) for t in table if not t["split"]] == [r["loss"] for r in steps]


def test_run_folder_plots_checkpoints_and_model(trained):
    run = trained.run
    for plot in ("loss", "lr", "confusion"):
        assert (run / "plots" / f"{plot}.png").read_bytes().startswith(PNG), plot
    checkpoints = sorted((run / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and (run / "checkpoints" / f"checkpoint-{MAX_STEPS}") in checkpoints
    for ck in checkpoints:
        manifest = json.loads((ck / "manifest.json").read_text())
        assert set(manifest["files"]) <= {p.name for p in ck.iterdir()}
    model = run / "model"
    for name in ("model.safetensors", "config.json", "preprocessing.json"):
        assert (model / name).is_file(), name
    meta = json.loads((model / "config.json").read_text())
    assert meta["model"] == "mlp" and meta["config"]["hidden"] == [32, 32]
    assert json.loads((model / "preprocessing.json").read_text())["target"] == "label"


def test_model_card_shows_the_test_accuracy_and_what_predict_reads(trained):
    card = (trained.run / "README.md").read_text()
    assert trained.run.name in card
    accuracy = f"{trained.eval['test']['accuracy']:.4f}"
    assert any(line.startswith("| accuracy") and line.rstrip(" |").endswith(accuracy) for line in card.splitlines())
    assert f"dlforge predict runs/{trained.run.name} input.csv\n" in card  # as trained: runs/ under the cwd
    assert "`input.csv`: a CSV or Parquet file with the feature columns f0, f1, f2, f3, f4, f5 (a label column may " \
           "be there; it is not read); gives a label and the probability of each class per input." in card


# --- eval ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["test", "val"])
def test_eval_reproduces_eval_json(trained, used, split):
    out = ok_json(used[f"eval-{split}"])
    assert out["split"] == split
    want = trained.eval[split]
    assert set(out["metrics"]) == set(want)
    for key, value in want.items():
        assert out["metrics"][key] == pytest.approx(value, abs=1e-6), key


def test_eval_json_names_the_run_it_resolved(trained, used):
    """A run given by name (or `latest`) is reported as the folder it resolved to (issue 13, defect 16)."""
    out = ok_json(used["eval-by-name"])
    assert (trained.dir / out["run"]).resolve() == trained.run.resolve()
    assert out["metrics"]["accuracy"] == pytest.approx(trained.eval["test"]["accuracy"], abs=1e-6)


def test_eval_bad_split_is_one_line(used):
    line = one_line_error(used["eval-bad-split"])
    assert "--split" in line and "'tset'" in line and "test" in line


# --- predict ---------------------------------------------------------------------------------------------------------


def test_predict_writes_one_row_per_input_row_with_probabilities(trained, used):
    assert used["predict"].returncode == 0, used["predict"].stderr
    inputs = read_csv_rows(trained.csv)
    preds = read_csv_rows(trained.dir / "preds.csv")
    labels = json.loads((trained.run / "model" / "preprocessing.json").read_text())["label_names"]
    assert len(preds) == len(inputs)
    assert [int(p["line"]) for p in preds] == list(range(2, len(inputs) + 2))  # the header is line 1
    for p in preds:
        probs = {name: float(p[f"p({name})"]) for name in labels}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert p["prediction"] == max(probs, key=probs.get)


def test_predict_without_the_target_column_gives_the_same_predictions(trained, used):
    assert used["predict-no-target"].returncode == 0, used["predict-no-target"].stderr
    assert "label" not in read_csv_rows(trained.dir / "no-target.csv")[0]
    assert read_csv_rows(trained.dir / "preds-no-target.csv") == read_csv_rows(trained.dir / "preds.csv")


def test_predict_ignores_an_empty_target_column(trained, used):
    assert used["predict-empty-target"].returncode == 0, used["predict-empty-target"].stderr
    assert read_csv_rows(trained.dir / "preds-empty-target.csv") == read_csv_rows(trained.dir / "preds.csv")


def test_predict_out_into_a_missing_folder_is_created_or_refused_in_one_line(trained, used):
    proc = used["predict-out-nowhere"]
    out = trained.dir / "no-such-dir" / "preds.csv"
    if proc.returncode == 0:
        assert read_csv_rows(out) == read_csv_rows(trained.dir / "preds.csv")
    else:
        line = one_line_error(proc)
        assert "no-such-dir" in line and ".tmp" not in line


def test_predict_json_matches_the_csv(trained, used):
    rows = ok_json(used["predict"])
    from_csv = read_csv_rows(trained.dir / "preds.csv")
    assert len(rows) == len(from_csv)
    for row, c in zip(rows, from_csv, strict=True):
        assert {k: str(v) for k, v in row.items()} == c


def test_predictions_agree_with_the_eval_accuracy(trained, used):
    # The CSV holds every split; eval accuracy is the share of correct rows, so the counts must add up exactly.
    truth = [r["label"] for r in read_csv_rows(trained.csv)]
    preds = [p["prediction"] for p in ok_json(used["predict"])]
    correct = sum(p == t for p, t in zip(preds, truth, strict=True))
    info = json.loads((trained.run / "model" / "data_info.json").read_text())
    sizes = {s: info[f"n_{s}"] for s in ("train", "val", "test")}
    assert sum(sizes.values()) == len(truth)
    expected = sum(round(trained.eval[s]["accuracy"] * n) for s, n in sizes.items())
    assert correct == expected
    assert correct / len(truth) > 0.5  # and the blobs were learned at all


# --- runs ------------------------------------------------------------------------------------------------------------


def test_two_trainings_at_once_with_the_same_name_get_their_own_folders(trained, used):
    a, b = trained.runs
    assert a != b and a.name.startswith("t-") and b.name.startswith("t-")
    for run in trained.runs:
        assert (run / "eval.json").is_file() and (run / "model" / "config.json").is_file()
        assert json.loads((run / "eval.json").read_text())["step"] == MAX_STEPS
    rows = ok_json(used["runs-list"])
    assert sorted(r["name"] for r in rows) == sorted(run.name for run in trained.runs)
    for row in rows:
        run = trained.dir / row["run_dir"]
        assert row["status"] == "completed" and run.resolve() in {r.resolve() for r in trained.runs}
        assert row["config_hash"] == load_config(run / "config.yaml").hash()
        assert row["metrics"]["test/accuracy"] == json.loads((run / "eval.json").read_text())["test"]["accuracy"]
        assert row["headline"].startswith("test/accuracy")
    assert rows[0]["config_hash"] == rows[1]["config_hash"]  # the same settings


def test_runs_show_json(trained, used):
    record = ok_json(used["runs-show"])
    assert record["name"] == trained.run.name and record["status"] == "completed"
    assert (trained.dir / record["run_dir"]).resolve() == trained.run.resolve()
    assert record["eval"] == trained.eval


def test_runs_compare_json_and_png(trained, used):
    out = ok_json(used["runs-compare"])
    png = trained.dir / "cmp.png"
    assert set(out) == {"runs", "plot"}
    assert Path(out["plot"]) == png and png.read_bytes().startswith(PNG)
    assert [r["name"] for r in out["runs"]] == [r.name for r in trained.runs]
    for r in out["runs"]:
        assert set(r) == {"name", "run_dir", "metrics"}
        ev = json.loads((trained.dir / r["run_dir"] / "eval.json").read_text())
        assert r["metrics"] == {f"{s}/{k}": v for s in ("train", "val", "test") for k, v in ev[s].items()}


# --- bad input: one line, exit 2, nothing lost ------------------------------------------------------------------------


BAD_INPUTS = ["missing-csv", "empty-csv", "header-only-csv", "ragged-row", "text-in-number", "unknown-target",
              "one-class", "unknown-key", "wrong-type", "unknown-preset", "resume-missing", "min-lr-above-lr"]
WITH_DEBUG = ["ragged-row"]


@dataclass
class BadRuns:
    dir: Path
    cases: dict[str, tuple[subprocess.CompletedProcess, list[str]]]  # case -> (process, what its message must name)
    debug: dict[str, subprocess.CompletedProcess]  # case -> the same command with --debug
    before: tuple[dict, list]  # (file digests of the earlier runs, registry rows) before the bad commands
    after: tuple[dict, list]  # ... and after them


@pytest.fixture(scope="module")
def bad(trained, tmp_path_factory) -> BadRuns:
    """Each bad input given to `dlforge train` in a folder that already holds finished runs."""
    d = tmp_path_factory.mktemp("bad")
    shutil.copytree(trained.dir / "runs", d / "runs")
    good = read_csv_rows(trained.csv)
    header = list(good[0])
    lines = [",".join(header)] + [",".join(r.values()) for r in good[:40]]

    def write(name: str, text: str) -> Path:
        (d / name).write_text(text)
        return d / name

    ragged_at = 7  # list index; the file line is one more (the header is line 1)
    ragged = [*lines[:ragged_at], ",".join(lines[ragged_at].split(",")[:-2]), *lines[ragged_at + 1:]]
    text_at = 12
    cells = lines[text_at].split(",")
    cells[2] = "abc"
    texty = [*lines[:text_at], ",".join(cells), *lines[text_at + 1:]]
    one_class = [lines[0]] + [line.rsplit(",", 1)[0] + ",same" for line in lines[1:]]
    files = {
        "empty-csv": write("empty.csv", ""),
        "header-only-csv": write("header.csv", lines[0] + "\n"),
        "ragged-row": write("ragged.csv", "\n".join(ragged) + "\n"),
        "text-in-number": write("texty.csv", "\n".join(texty) + "\n"),
        "one-class": write("one.csv", "\n".join(one_class) + "\n"),
    }
    missing = d / "missing.csv"
    cfg = str(trained.cfg)
    cases = {
        "missing-csv": ([cfg, f"data.path={missing}"], [str(missing), "not found"]),
        "empty-csv": ([cfg, f"data.path={files['empty-csv']}"], [str(files["empty-csv"]), "empty"]),
        "header-only-csv": ([cfg, f"data.path={files['header-only-csv']}"],
                            [str(files["header-only-csv"]), "no data rows"]),
        "ragged-row": ([cfg, f"data.path={files['ragged-row']}"], [f"{files['ragged-row']}:{ragged_at + 1}:"]),
        "text-in-number": ([cfg, f"data.path={files['text-in-number']}"],
                           [f"{files['text-in-number']}:{text_at + 1}:", repr(header[2]), "'abc'"]),
        "unknown-target": ([cfg, "data.target=lable"], [str(trained.csv), "'lable'", "did you mean 'label'"]),
        "one-class": ([cfg, f"data.path={files['one-class']}"], [str(files["one-class"]), "one class", "'label'"]),
        "unknown-key": ([cfg, "train.lrr=0.1"], ["train.lrr", "did you mean 'train.lr'"]),
        "wrong-type": ([cfg, "train.lr=abc"], ["train.lr", "number", "'abc'"]),
        "unknown-preset": (["iris-logistc"], ["iris-logistc", "did you mean 'iris-logistic'"]),
        "resume-missing": (["--resume", str(d / "no-such-run")], [str(d / "no-such-run")]),
        # refused by the Trainer (the schedule), after the data and model were built but before any run folder (a
        # warmup longer than the run no longer is: it is scaled down to the run, issue 13, defect 24)
        "min-lr-above-lr": ([cfg, "train.scheduler=cosine", "train.min_lr=1.0"], ["train.min_lr", "above train.lr"]),
    }
    assert sorted(cases) == sorted(BAD_INPUTS)
    commands = {name: ["train", *args] for name, (args, _) in cases.items()}
    debug = {f"{name} --debug": ["train", *cases[name][0], "--debug"] for name in WITH_DEBUG}  # raises: own process
    before = {r.name: folder_digest(d / "runs" / r.name) for r in trained.runs}, registry_rows(d / "runs")
    results = run_together(commands, d) | run_all(debug, d)
    after = {r.name: folder_digest(d / "runs" / r.name) for r in trained.runs}, registry_rows(d / "runs")
    return BadRuns(d, {name: (results[name], fragments) for name, (_, fragments) in cases.items()},
                   {name: results[f"{name} --debug"] for name in WITH_DEBUG}, before, after)


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_with_exit_2(bad, case):
    proc, fragments = bad.cases[case]
    line = one_line_error(proc)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"


@pytest.mark.parametrize("case", WITH_DEBUG)
def test_debug_shows_the_traceback(bad, case):
    proc = bad.debug[case]
    plain = one_line_error(bad.cases[case][0]).removeprefix("error: ")
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert plain in proc.stderr.strip().splitlines()[-1]  # the same message, now as the exception's


def test_failed_trainings_leave_the_earlier_run_and_the_registry_alone(bad, trained):
    (files_before, rows_before), (files_after, rows_after) = bad.before, bad.after
    assert files_after == files_before
    assert rows_after == rows_before and sorted(r["name"] for r in rows_after) == sorted(r.name for r in trained.runs)
    from dlforge.runs import list_run_dirs

    assert sorted(p.name for p in list_run_dirs(bad.dir / "runs")) == sorted(r.name for r in trained.runs)  # none new


# --- crafted model folders ------------------------------------------------------------------------------------


class _TouchOnUnpickle:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickle_payload(marker: Path) -> bytes:
    payload = pickle.dumps(_TouchOnUnpickle(marker))
    probe = marker.with_name(marker.name + ".probe")
    pickle.loads(pickle.dumps(_TouchOnUnpickle(probe)))  # the payload is live: unpickling it does touch the file
    assert probe.exists()
    return payload


def test_pickle_in_place_of_the_weights_is_refused_by_predict(trained, tmp_path):
    run = tmp_path / "crafted"
    shutil.copytree(trained.run, run)
    marker = tmp_path / "pwned"
    (run / "model" / "model.safetensors").write_bytes(pickle_payload(marker))
    line = one_line_error(run_cli("predict", str(run), str(trained.csv), cwd=tmp_path))
    assert "model.safetensors" in line
    assert not marker.exists()


def test_pickle_with_a_matching_manifest_is_still_never_unpickled(trained, tmp_path):
    import dlforge

    folder = tmp_path / "model"
    shutil.copytree(trained.run / "model", folder)
    marker = tmp_path / "pwned"
    (folder / "model.safetensors").write_bytes(pickle_payload(marker))
    fix_manifest(folder, "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        dlforge.load(folder)
    assert not marker.exists()


def test_config_that_does_not_match_the_weights_names_the_first_mismatched_key(trained, tmp_path):
    from safetensors import safe_open

    import dlforge
    from dlforge.registry import create_model

    folder = tmp_path / "model"
    shutil.copytree(trained.run / "model", folder)
    meta = json.loads((folder / "config.json").read_text())
    assert meta["config"]["hidden"] == [32, 32]
    meta["config"]["hidden"] = [64]
    (folder / "config.json").write_text(json.dumps(meta))
    fix_manifest(folder, "config.json")  # so that the check reaches the weights themselves

    with safe_open(folder / "model.safetensors", framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    wanted = create_model(meta["model"], **meta["config"]).state_dict()
    first = next(k for k, t in wanted.items() if stored.get(k) != tuple(t.shape))
    with pytest.raises(CheckpointError) as info:
        dlforge.load(folder)
    assert repr(first) in str(info.value) and "model.safetensors" in str(info.value)
