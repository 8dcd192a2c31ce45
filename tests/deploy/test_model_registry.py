"""The model registry (dlforge.deploy.model_registry): immutable versions with where they came from, aliases whose
every move is kept, several writers at once, and what a killed writer leaves."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dlforge.artifacts import DamagedFile, file_sha256, load_model, read_json
from dlforge.deploy.model_registry import ModelRegistry, RegistryError, parse_ref, parse_time
from dlforge.runs.registry import RunRegistry
from tests.clitools import run_here


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from dlforge.api import train

    d = tmp_path_factory.mktemp("registry")
    quiet = ["train.progress=false", "train.tensorboard=false", "train.checkpoint_every=null"]
    return train("iris-logistic", ["train.max_steps=20", "train.max_epochs=null", *quiet],
                 run_dir=d / "runs" / "iris").run_dir


@pytest.fixture
def runs(run, tmp_path) -> Path:
    """A fresh runs folder holding a copy of the trained run and its run registry."""
    shutil.copytree(run.parent, tmp_path / "runs")
    return tmp_path / "runs"


def test_a_version_is_a_checked_copy_that_records_where_it_came_from(runs):
    registry = ModelRegistry(runs)
    v = registry.add(runs / "iris", "iris", description="first")
    assert (v["name"], v["version"], v["ref"], v["description"]) == ("iris", 1, "iris@1", "first")
    folder = Path(v["folder"])
    assert folder == runs / "models" / "iris" / "1"
    for name, entry in read_json(runs / "iris" / "model" / "manifest.json")["files"].items():
        assert file_sha256(folder / name) == entry["sha256"]
    assert v["manifest_sha256"] == file_sha256(folder / "manifest.json")
    row = RunRegistry(runs).get("iris")
    assert (v["run"], v["preset"], v["config_hash"], v["data_fingerprint"], v["git_rev"]) == (
        "iris", "iris-logistic", row["config_hash"], row["data_fingerprint"], row["git_rev"])
    evaluated = read_json(runs / "iris" / "eval.json")
    assert v["metrics"]["test/accuracy"] == evaluated["test"]["accuracy"]
    assert v["signature"] == read_json(runs / "iris" / "model" / "signature.json")
    assert (v["model"], v["task"]) == (read_json(folder / "config.json")["model"], v["signature"]["task"])
    model, _ = load_model(folder)  # the copy is a model folder like any other
    assert sum(p.numel() for p in model.parameters()) > 0
    assert registry.add("iris", "iris")["version"] == 2  # a run by name, as everywhere
    assert [r["version"] for r in registry.versions("iris")] == [2, 1]
    assert registry.names() == [{"name": "iris", "versions": 2, "latest": 2, "updated": registry.version("iris")[
        "created"], "aliases": {}}]


def test_a_version_never_changes(runs):
    registry = ModelRegistry(runs)
    v = registry.add(runs / "iris", "iris")
    weights = runs / "iris" / "model" / "model.safetensors"
    weights.write_bytes(b"retrained")  # the run changes afterwards: the version does not
    assert registry.resolve("iris@1")["manifest_sha256"] == v["manifest_sha256"]
    registry.set_alias("iris", "champion", 1)
    with sqlite3.connect(registry.path) as conn:  # nor can its row be rewritten, nor the alias history
        for sql in ("UPDATE versions SET version = 7", "DELETE FROM versions", "UPDATE alias_history SET version = 2",
                    "DELETE FROM alias_history"):
            with pytest.raises(sqlite3.IntegrityError, match="never changed"):
                conn.execute(sql)
    assert registry.aliases("iris") == {"champion": 1}
    copy = Path(v["folder"]) / "model.safetensors"
    copy.write_bytes(copy.read_bytes()[:-1] + b"\0")  # and a changed file is found
    with pytest.raises(DamagedFile, match="model.safetensors"):
        registry.resolve("iris@1")


def test_aliases_move_and_their_history_answers_which_version_at_a_time(runs):
    registry = ModelRegistry(runs)
    for _ in range(3):
        registry.add(runs / "iris", "iris")
    first = registry.set_alias("iris", "champion", 1)
    time.sleep(0.02)
    second = registry.set_alias("iris", "champion", 3)
    time.sleep(0.02)
    assert registry.set_alias("iris", "champion", 3)["unchanged"]  # no event for a move to where it is
    registry.set_alias("iris", "challenger", 2)
    assert registry.version("iris", "champion")["version"] == 3
    assert registry.version("iris", "champion")["aliases"] == ["champion"]
    assert registry.resolve("registry:iris@challenger")["version"] == 2
    assert registry.version("iris")["version"] == 3  # latest
    assert registry.alias_at("iris", "champion", first["at"] - 1) is None
    assert registry.alias_at("iris", "champion", (first["at"] + second["at"]) / 2) == 1
    assert registry.alias_at("iris", "champion", second["at"]) == 3
    back = registry.rollback("iris", "champion")
    assert (back["version"], back["previous"], back["reason"]) == (1, 3, "rollback from 3")
    assert registry.aliases("iris") == {"challenger": 2, "champion": 1}
    registry.set_alias("iris", "challenger", None)
    assert registry.aliases("iris") == {"champion": 1}
    assert [(e["alias"], e["version"], e["previous"]) for e in registry.history("iris")] == [
        ("champion", 1, None), ("champion", 3, 1), ("challenger", 2, None), ("champion", 1, 3),
        ("challenger", None, 2)]
    assert registry.aliases_at("iris", second["at"]) == {"challenger": None, "champion": 3}
    for bad, message in ((lambda: registry.set_alias("iris", "champion", 9), "iris@9: no such version"),
                         (lambda: registry.set_alias("iris", "latest", 1), "alias 'latest'"),
                         (lambda: registry.set_alias("iris", "42", 1), "alias '42'"),
                         (lambda: registry.version("iris", "gone"), "no such alias"),
                         (lambda: registry.version("nope"), "no model named 'nope'"),
                         (lambda: registry.rollback("iris", "challenger"), "no such alias"),
                         (lambda: registry.set_alias("iris", "challenger", None), "no such alias")):
        with pytest.raises(RegistryError, match=message):
            bad()


def test_references_and_times_are_parsed_strictly():
    assert parse_ref("iris") == ("iris", "latest")
    assert parse_ref("registry:iris@3") == ("iris", 3)
    assert parse_ref("iris@champion") == ("iris", "champion")
    for bad in ("../x@1", "iris@a/b", "", "iris@ch ampion"):
        with pytest.raises(RegistryError):
            parse_ref(bad)
    two_pm = datetime(2026, 12, 3, 14, tzinfo=UTC).timestamp()
    assert parse_time("2026-12-03T14:00:00+00:00") == two_pm
    assert parse_time(str(two_pm)) == two_pm
    assert parse_time("2026-12-03T14:00") == datetime(2026, 12, 3, 14).timestamp()  # local time
    with pytest.raises(RegistryError, match="ISO 8601"):
        parse_time("yesterday")


def _add_and_move(runs: str, worker: int, n: int) -> None:
    registry = ModelRegistry(runs)
    for _ in range(n):
        v = registry.add(Path(runs) / "iris", "iris")
        registry.set_alias("iris", f"w{worker}", v["version"])


def test_two_writers_at_once_lose_no_update(runs):
    n = 6
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_add_and_move, args=(str(runs), w, n)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    registry = ModelRegistry(runs)
    versions = registry.versions("iris")
    assert sorted(v["version"] for v in versions) == list(range(1, 2 * n + 1))
    for v in versions:
        registry.resolve(v["ref"])  # every copy complete and matching its row
    assert sorted(p.name for p in (runs / "models" / "iris").iterdir()) == sorted(str(i) for i in range(1, 2 * n + 1))
    history = registry.history("iris")
    assert len(history) == 2 * n and {e["alias"] for e in history} == {"w0", "w1"}


def test_what_a_killed_writer_leaves_is_cleaned_by_the_next(runs):
    """A writer killed after copying (a scratch folder of a dead process) or after renaming its copy but before its
    row was committed (a numbered folder without a row): the next writer removes both and takes that number."""
    registry = ModelRegistry(runs)
    parent = runs / "models" / "iris"
    shutil.copytree(runs / "iris" / "model", parent / "1")  # the orphan
    dead = multiprocessing.get_context("spawn").Process(target=os.getpid)
    dead.start()
    dead.join()
    scratch = parent / f".incoming.tmp-{dead.pid}-0123abcd"
    shutil.copytree(runs / "iris" / "model", scratch)
    (parent / "1" / "model.safetensors").write_bytes(b"half written")
    v = registry.add(runs / "iris", "iris")
    assert v["version"] == 1 and not scratch.exists()
    registry.resolve("iris@1")


def test_the_cli_adds_moves_and_reports_in_json(runs, capsys, monkeypatch):
    monkeypatch.chdir(runs.parent)
    added = run_here(capsys, "registry", "add", "iris", "--name", "iris", "--alias", "champion", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["aliases"] == ["champion"]
    run_here(capsys, "registry", "add", "iris", "--name", "iris")
    moved = run_here(capsys, "registry", "alias", "iris", "champion", "2", "--json")
    assert json.loads(moved.stdout)["previous"] == 1
    shown = json.loads(run_here(capsys, "registry", "show", "iris@champion", "--json").stdout)
    assert (shown["version"], shown["run"]) == (2, "iris")
    listed = json.loads(run_here(capsys, "registry", "list", "--json").stdout)
    assert listed[0]["aliases"] == {"champion": 2}
    rolled = json.loads(run_here(capsys, "registry", "rollback", "iris", "champion", "--json").stdout)
    assert rolled["version"] == 1
    history = json.loads(run_here(capsys, "registry", "history", "iris", "--json").stdout)
    at = json.loads(run_here(capsys, "registry", "history", "iris", "--at", str(history[1]["at"]), "--json").stdout)
    assert at["aliases"] == {"champion": 2}
    for args, message in ((["alias", "iris", "champion", "9"], "iris@9: no such version"),
                          (["add", "iris", "--name", "../up"], "model name '../up'"),
                          (["add", "iris", "--name", "iris", "--alias", "latest"], "alias 'latest'"),
                          (["alias", "iris", "champion"], "or --delete"),
                          (["show", "iris@nope"], "no such alias")):
        bad = run_here(capsys, "registry", *args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)
    assert len(ModelRegistry(runs).versions("iris")) == 2  # the refused adds wrote nothing
