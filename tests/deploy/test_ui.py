"""The web page's JSON routes (dlforge.deploy.serve.ui) over real runs: what they return equals what `dlforge runs`
and the model registry say, a bad name is a 404, nothing outside a run's plots/ folder is served, the data needs
the key the page does not, and reading writes nothing. The page itself in a browser: test_ui_browser.py."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dlforge.deploy.model_registry import ModelRegistry
from dlforge.deploy.serve.ui import series, ui_app
from dlforge.runs.history import compare_runs, list_runs, show_run
from dlforge.runs.rundir import read_metrics

KEY = "ui-key-123"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A runs folder with two tiny iris runs (10 and 20 steps) and their run registry."""
    from dlforge.api import train

    root = tmp_path_factory.mktemp("ui") / "runs"
    quiet = ["train.max_epochs=null", "train.progress=false", "train.tensorboard=false",
             "train.checkpoint_every=null", "train.eval_every=5", "train.log_every=5"]
    for name, steps in (("short", 10), ("long", 20)):
        train("iris-logistic", [f"train.max_steps={steps}", *quiet], run_dir=root / name)
    return root


@pytest.fixture
def runs(trained, tmp_path) -> Path:
    """A fresh copy of the runs folder (a test may add to it)."""
    shutil.copytree(trained, tmp_path / "runs")
    return tmp_path / "runs"


def client(runs: Path, api_key: str | None = None) -> TestClient:
    return TestClient(ui_app(runs, api_key))


def error_of(response) -> str:
    return response.json()["error"]["message"]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}


def test_the_page_and_its_files_are_served_without_any_external_url(runs):
    c = client(runs)
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/ui/page.js">' in page.text and 'href="/ui/page.css"' in page.text
    for path, kind in (("/ui/page.js", "text/javascript"), ("/ui/page.css", "text/css")):
        response = c.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert "http://" not in response.text.replace("http://www.w3.org/2000/svg", "")  # no CDN, no font, no image
        assert "https://" not in response.text
    assert "https://" not in page.text and "http://" not in page.text


def test_the_runs_table_is_the_run_registry(runs):
    rows = client(runs).get("/ui/api/runs").json()["runs"]
    want = list_runs(runs)
    assert [r["name"] for r in rows] == [r["name"] for r in want] == ["long", "short"]  # newest first
    for got, row in zip(rows, want, strict=True):
        assert (got["preset"], got["status"], got["started"]) == (row["preset"], row["status"], row["started"])
        assert got["metrics"] == row["metrics"] and "test/accuracy" in got["metrics"]
        assert got["headline"] == row["headline"]


def test_a_run_has_its_curves_plots_card_and_final_metrics(runs):
    run = client(runs).get("/ui/api/runs/short").json()
    record = show_run("short", runs)
    assert run["eval"] == record["eval"] and run["status"] == "completed"
    assert run["final"]["test/accuracy"] == record["eval"]["test"]["accuracy"]
    assert run["card"] == (runs / "short" / "README.md").read_text()
    assert run["plots"] == sorted(p.name for p in (runs / "short" / "plots").glob("*.png"))
    assert "loss.png" in run["plots"]
    rows = read_metrics(runs / "short" / "metrics.jsonl")
    assert run["series"]["loss"] == [[r["step"], r["loss"]] for r in rows if "loss" in r]
    assert run["series"]["val/accuracy"] == [[r["step"], r["val/accuracy"]] for r in rows if "val/accuracy" in r]
    assert [s for s, _ in run["series"]["val/loss"]] == [5, 10]
    assert not {"step", "epoch", "split"} & set(run["series"])


def test_a_plot_is_its_png_and_nothing_outside_the_plots_folder_is_served(runs, tmp_path):
    c = client(runs)
    png = c.get("/ui/api/runs/short/plots/loss.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content == (runs / "short" / "plots" / "loss.png").read_bytes()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    os.symlink(secret, runs / "short" / "plots" / "leak.png")  # a link out of the folder
    shutil.copy(runs / "short" / "config.yaml", runs / "short" / "plots" / "config.yaml")
    for bad in ("leak.png", "config.yaml", "missing.png", ".hidden.png", "..%2Fconfig.yaml", "%2E%2E"):
        response = c.get(f"/ui/api/runs/short/plots/{bad}")
        assert response.status_code == 404, bad
        assert b"secret" not in response.content and b"model" not in response.content


def test_a_bad_run_name_is_a_404_that_says_so(runs, tmp_path):
    c = client(runs)
    missing = c.get("/ui/api/runs/nope")
    assert missing.status_code == 404 and error_of(missing) == f"run 'nope': no such run in {runs}"
    assert c.get("/ui/api/runs/latest").status_code == 404  # a name, not `dlforge runs`' references
    assert c.get("/ui/api/runs/sho").status_code == 404  # no prefixes either
    assert c.get("/ui/api/runs/..").status_code == 404
    assert c.get(f"/ui/api/runs/{'%2F'.join(str(runs / 'short').split('/'))}").status_code == 404  # no paths
    outside = tmp_path / "elsewhere"
    shutil.copytree(runs / "short", outside)
    os.symlink(outside, runs / "linked")
    linked = c.get("/ui/api/runs/linked")
    assert linked.status_code == 404 and "no such run" in error_of(linked)
    (runs / "plain").mkdir()  # a folder that is no run
    assert c.get("/ui/api/runs/plain").status_code == 404


def test_comparison_is_runs_compare_with_the_curves(runs, tmp_path):
    c = client(runs)
    got = c.get("/ui/api/compare", params={"run": ["short", "long"]}).json()
    want = compare_runs(["short", "long"], runs, tmp_path / "compare.png")
    assert [(r["name"], r["metrics"]) for r in got["runs"]] == [(r["name"], r["metrics"]) for r in want["runs"]]
    assert got["metrics"] == sorted(want["runs"][0]["metrics"])
    assert len(got["runs"][0]["series"]["loss"]) < len(got["runs"][1]["series"]["loss"])  # 10 steps against 20
    one = c.get("/ui/api/compare", params={"run": ["short"]})
    assert one.status_code == 400 and "give 2 to 8 different runs" in error_of(one)
    assert c.get("/ui/api/compare", params={"run": ["short", "short"]}).status_code == 400
    assert c.get("/ui/api/compare", params={"run": ["short", "nope"]}).status_code == 404


def test_the_registry_with_its_aliases(runs):
    c = client(runs)
    empty = c.get("/ui/api/registry").json()
    assert empty["names"] == [] and "no model registry" in empty["note"]
    assert not (runs / "models.db").exists()  # reading created none
    registry = ModelRegistry(runs)
    registry.add(runs / "short", "iris")
    registry.add(runs / "long", "iris")
    registry.set_alias("iris", "champion", 1)
    registry.set_alias("iris", "challenger", 2)
    names = c.get("/ui/api/registry").json()["names"]
    assert [(n["name"], n["latest"], n["aliases"]) for n in names] == [("iris", 2, {"challenger": 2, "champion": 1})]
    versions = names[0]["versions"]
    assert [(v["ref"], v["aliases"], v["run"]) for v in versions] == [("iris@2", ["challenger"], "long"),
                                                                     ("iris@1", ["champion"], "short")]
    assert versions[1]["metrics"] == registry.version("iris", 1)["metrics"]


def test_the_data_needs_the_key_and_the_page_does_not(runs):
    c = client(runs, KEY)
    assert c.get("/").status_code == 200 and c.get("/ui/page.js").status_code == 200
    for path in ("/ui/api/runs", "/ui/api/runs/short", "/ui/api/runs/short/plots/loss.png", "/ui/api/registry",
                 "/ui/api/server", "/v1/models"):
        assert c.get(path).status_code == 401, path
        assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
        assert c.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200, path


def test_reading_writes_nothing_and_only_gets_are_routed(runs):
    before = snapshot(runs)
    c = client(runs)
    for path in ("/", "/ui/api/runs", "/ui/api/runs/short", "/ui/api/runs/long/plots/loss.png", "/ui/api/registry",
                 "/ui/api/compare?run=short&run=long"):
        assert c.get(path).status_code == 200, path
        assert c.post(path, content=b"{}").status_code == 405, path
    assert snapshot(runs) == before


def test_a_runs_folder_not_there_yet_is_an_empty_table(tmp_path):
    c = client(tmp_path / "none")
    assert c.get("/ui/api/runs").json() == {"runs": [], "note": f"no runs folder {tmp_path / 'none'} yet"}
    assert c.get("/ui/api/registry").json()["names"] == []
    assert c.get("/ui/api/server").json() == {"runs_dir": str(tmp_path / "none"), "rag": False}


def test_a_nan_in_the_log_is_a_gap_in_valid_json(runs):
    log = runs / "short" / "metrics.jsonl"
    log.write_text(log.read_text() + json.dumps({"step": 99, "loss": None}) + "\n")  # how a NaN loss is written
    assert math.isnan(series(runs / "short")["loss"][-1][1])
    response = client(runs).get("/ui/api/runs/short")
    assert "NaN" not in response.text and response.json()["series"]["loss"][-1] == [99, None]


def test_dlforge_serve_and_dlforge_ui_both_serve_the_page(runs, monkeypatch, capsys):
    import dlforge.deploy.serve.app as app_module
    from tests.clitools import run_here

    started = []
    monkeypatch.setattr(app_module, "serve", lambda app, host, port, key: started.append((app, host, port, key)))
    served = run_here(capsys, "serve", "short", "--runs-dir", str(runs), "--port", "8123")
    alone = run_here(capsys, "ui", "--runs-dir", str(runs), "--api-key", KEY)
    assert (served.returncode, alone.returncode) == (0, 0), (served.stderr, alone.stderr)
    assert [s[1:] for s in started] == [("127.0.0.1", 8123, None), ("127.0.0.1", 8000, KEY)]
    with_model, without = TestClient(started[0][0]), TestClient(started[1][0])
    assert with_model.get("/").status_code == 200 and "page at /" in served.stdout
    assert [r["name"] for r in with_model.get("/ui/api/runs").json()["runs"]] == ["long", "short"]
    assert [m["id"] for m in with_model.get("/v1/models").json()["data"]] == ["short"]  # the routes it had, kept
    key = {"Authorization": f"Bearer {KEY}"}
    assert without.get("/").status_code == 200 and without.get("/ui/api/runs").status_code == 401
    assert [r["name"] for r in without.get("/ui/api/runs", headers=key).json()["runs"]] == ["long", "short"]
    assert without.get("/v1/models", headers=key).json()["data"] == []  # no model


def test_the_page_is_told_whether_questions_can_be_asked(runs):
    from fastapi import APIRouter

    from dlforge.deploy.serve.app import ServeOptions, create_app
    from dlforge.deploy.serve.ui import ui_router

    rag = APIRouter()
    rag.add_api_route("/v1/rag/ask", lambda: {}, methods=["POST"])  # where `dlforge serve --rag` answers
    with_rag = TestClient(create_app([], ServeOptions(log=lambda _: None), [ui_router(runs), rag]))
    assert with_rag.get("/ui/api/server").json() == {"runs_dir": str(runs), "rag": True}
    assert client(runs).get("/ui/api/server").json()["rag"] is False
