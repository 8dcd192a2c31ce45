"""`dlforge monitor` on tiny runs: tabular drift against a CSV and against the request store, image features logged
by the server and tested by MMD, the HTML report, and the drift gauges of a server run with a store."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from clitools import run_here

from dlforge.deploy.monitor import monitor
from dlforge.deploy.serve.app import ServeOptions, create_app
from dlforge.deploy.serve.request_store import RequestStore
from dlforge.deploy.serve.served import load_served
from dlforge.errors import DataError
from tests.deploy.test_serve import Server
from tests.deploy.test_serve_classic import _digit_pngs


def _iris_rows(shift: float = 0.0) -> list[dict]:
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame.drop(columns="target")
    frame["petal length (cm)"] += shift
    return frame.to_dict("records")


def test_a_csv_against_the_reference_split_per_feature_and_the_html_report(runs, tmp_path):
    import pandas as pd

    from dlforge.eval.drift import column_drift

    pd.DataFrame(_iris_rows()).to_csv(tmp_path / "same.csv", index=False)
    pd.DataFrame(_iris_rows(3.0)).to_csv(tmp_path / "shifted.csv", index=False)
    same = monitor(runs["iris"], "train", tmp_path / "same.csv")
    assert not same["drift"] and same["drifted_features"] == 0 and same["reference"]["n"] == 97
    shifted = monitor(runs["iris"], "test", tmp_path / "shifted.csv", out=tmp_path / "out" / "report.html")
    petal = shifted["features"]["petal length (cm)"]
    assert petal["drift"] and petal["test"] == "ks" and petal["kind"] == "numeric"
    assert not shifted["features"]["sepal length (cm)"]["drift"]
    assert shifted["drifted_share"] == 0.25 and not shifted["drift"]  # one of four: under Evidently's half
    assert shifted["prediction"]["kind"] == "categorical" and shifted["prediction"]["test"] == "chi_squared"
    # the reference is the run's own test split, in raw units: its column equals the table's rows of that split
    from dlforge.config import load_config
    from dlforge.data.dataset import build_data

    data = build_data(load_config(runs["iris"] / "config.yaml"))
    spec = data.preprocessing["features"][2]
    ref = (data.test.tensors["x"][:, 2].double() * spec["std"] + spec["mean"]).numpy()
    cur = np.array([r["petal length (cm)"] for r in _iris_rows(3.0)])
    want = column_drift(ref, cur)["statistics"]  # decoded from float32: equal to about 1e-6
    assert petal["statistics"]["wasserstein"] == pytest.approx(want["wasserstein"], rel=1e-5)
    assert petal["statistics"]["psi"] == pytest.approx(want["psi"], rel=1e-5)
    page = Path(shifted["html"]).read_text()
    assert page.count("src='data:image/png;base64,") == 5  # four features and the predictions
    assert "http://" not in page and "https://" not in page and "petal length (cm)" in page


def test_the_request_store_holds_what_monitor_needs_and_the_drift_gauges_appear(runs, tmp_path):
    store = RequestStore(tmp_path / "requests.db")
    options = ServeOptions(log=lambda _: None, store=store, monitor_every=0.3, watch_s=0)
    server = Server(create_app([load_served(str(runs["iris"])), load_served(str(runs["digits"]))], options))
    try:
        rows = _iris_rows(3.0)
        for start in range(0, len(rows), 50):
            r = httpx.post(f"{server.url}/v1/predict", json={"model": "iris", "inputs": rows[start:start + 50]})
            assert r.status_code == 200, r.text
        paths = _digit_pngs(tmp_path / "digits", 12)
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
        assert httpx.post(f"{server.url}/v1/predict", data={"model": "digits"}, files=files).status_code == 200
        deadline, text = time.time() + 30, ""
        while time.time() < deadline and 'feature="embedding"' not in text:
            time.sleep(0.3)
            text = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
    assert 'dlforge_drift_detected{feature="petal length (cm)",model="iris"} 1.0' in text
    assert 'dlforge_drift_detected{feature="sepal length (cm)",model="iris"} 0.0' in text
    assert 'dlforge_drift_score{feature="petal length (cm)",model="iris",statistic="psi"}' in text
    assert 'dlforge_drift_score{feature="embedding",model="digits",statistic="mmd_p_value"}' in text

    kept = store.rows(model="digits")[0]
    features = np.stack([np.frombuffer(base64.b64decode(v), "<f4") for v in kept["inputs"]["features_b64"]])
    from dlforge.artifacts import load_trained
    from dlforge.data.images import prepare_images

    model = load_trained(runs["digits"])
    with torch.no_grad():
        want = model.features(prepare_images(model.meta["extra"]["preprocessing.json"], paths)).numpy()
    assert features.shape == want.shape and np.allclose(features, want, atol=1e-5)  # the penultimate features

    with pytest.raises(DataError, match="no stored requests of model 'iris' since"):
        monitor(runs["iris"], "train", tmp_path / "requests.db", since=time.time() + 60)
    report = monitor(runs["iris"], "train", tmp_path / "requests.db", since=time.time() - 600)
    assert report["current"]["n"] == 150 and report["features"]["petal length (cm)"]["drift"]
    assert report["features"]["sepal width (cm)"]["n_current"] == 150
    digits = monitor(runs["digits"], "val", tmp_path / "requests.db", n_permutations=50)
    assert digits["representation"]["n_current"] == 12 and digits["prediction"] is not None
    assert any("fewer than 100" in w for w in digits["warnings"])


def test_a_folder_of_images_and_an_npy_of_embeddings(runs, tmp_path):
    paths = _digit_pngs(tmp_path / "digits", 30)
    on_images = monitor(runs["digits"], "test", tmp_path / "digits", n_permutations=100)
    assert on_images["current"]["n"] == 30 and 0 < on_images["representation"]["p_value"] <= 1
    from dlforge.artifacts import load_trained
    from dlforge.data.images import prepare_images

    model = load_trained(runs["digits"])
    with torch.no_grad():
        feats = model.features(prepare_images(model.meta["extra"]["preprocessing.json"], paths)).numpy()
    np.save(tmp_path / "emb.npy", feats + 5.0)  # far from anything the reference holds
    shifted = monitor(runs["digits"], "test", tmp_path / "emb.npy", n_permutations=100)
    assert shifted["drift"] and shifted["representation"]["p_value"] == pytest.approx(1 / 101)
    assert shifted["prediction"] is None  # an .npy holds no predictions


def test_bad_input_is_one_error_naming_it(runs, tmp_path):
    from dlforge.errors import DlforgeError

    (tmp_path / "bad.npy").write_bytes(b"not an array")
    with pytest.raises(DlforgeError, match="bad.npy"):
        monitor(runs["digits"], "test", tmp_path / "bad.npy")
    with pytest.raises(DlforgeError, match="--reference"):
        monitor(runs["iris"], "holdout", tmp_path / "bad.npy")
    RequestStore(tmp_path / "empty.db")
    with pytest.raises(DlforgeError, match="no stored requests of model 'iris'"):
        monitor(runs["iris"], "train", tmp_path / "empty.db")


def test_since_reads_durations_times_and_seconds():
    from dlforge.cli.monitor import parse_since
    from dlforge.errors import DlforgeError

    assert parse_since("2h") == pytest.approx(time.time() - 7200, abs=5)
    assert parse_since("1700000000") == 1700000000.0
    assert parse_since("2026-12-03 14:00") == time.mktime(time.strptime("2026-12-03 14:00", "%Y-%m-%d %H:%M"))
    with pytest.raises(DlforgeError, match="--since"):
        parse_since("yesterday")


def test_stored_predictions_of_an_image_model_without_pooled_features_stand_in_as_probabilities():
    from types import SimpleNamespace

    from dlforge.deploy.monitor import records_sample

    pre = {"kind": "image", "task": "classification", "label_names": ["a", "b"]}
    model = SimpleNamespace(meta={"extra": {"preprocessing.json": pre}})
    predictions = [{"prediction": "a", "p(a)": 0.9, "p(b)": 0.1, "index": 0},
                   {"prediction": "b", "p(a)": 0.2, "p(b)": 0.8, "index": 1}]
    records = [{"route": "/v1/predict", "truncated": False, "inputs": {"inputs": ["upload of 10 bytes"] * 2},
                "outputs": {"predictions": predictions}}]
    sample = records_sample(model, records, "test")
    assert sample.predictions == ["a", "b"]
    assert np.allclose(sample.embeddings, [[0.9, 0.1], [0.2, 0.8]])


def test_the_command_prints_the_report_and_exits_0_with_drift(runs, tmp_path, capsys):
    import json

    import pandas as pd

    pd.DataFrame(_iris_rows(3.0)).to_csv(tmp_path / "shifted.csv", index=False)
    proc = run_here(capsys, "monitor", str(runs["iris"]), "--current", str(tmp_path / "shifted.csv"), "--json",
                    "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["features"]["petal length (cm)"]["drift"] and (tmp_path / "r.html").is_file()
    proc = run_here(capsys, "monitor", str(runs["iris"]), "--current", str(tmp_path / "shifted.csv"),
                    "--reference", "holdout")
    assert proc.returncode == 2 and "--reference" in proc.stderr


def test_another_split_of_the_run_is_a_current_sample_and_its_rows_are_that_split(runs):
    val = monitor(runs["iris"], "train", "val")
    test = monitor(runs["iris"], "train", "test")
    assert val["reference"]["n"] == 97 and val["current"]["n"] + test["current"]["n"] == 150 - 97
    # the same split on both sides: every feature's KS statistic is 0
    same = monitor(runs["iris"], "val", "val")
    assert all(f["statistics"]["ks"]["statistic"] == 0 for f in same["features"].values()), same["features"]
    assert not same["drift"] and same["drifted_features"] == 0


def test_decoded_columns_read_as_the_raw_values_not_float32_noise():
    from dlforge.deploy.monitor import decode_columns

    raw = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 100.0, 24.5])
    mean, std = raw.mean(), raw.std()
    pre = {"features": [{"name": "coins", "kind": "numeric", "mean": mean, "std": std},
                        {"name": "site", "kind": "categorical", "categories": ["a", "b"]}]}
    encoded = np.stack([(raw - mean) / std, np.ones_like(raw), np.zeros_like(raw)], 1)
    x = torch.tensor(encoded, dtype=torch.float32)  # what the model reads: float32
    assert (x.double()[:, 0] * std + mean).tolist() != raw.tolist()  # the noise being removed
    decoded = decode_columns(pre, x)
    assert decoded["coins"] == raw.tolist() and decoded["site"] == ["a"] * 7


def test_a_text_classifier_is_monitored_on_its_sentence_embeddings(tmp_path):
    """A tiny BERT genre classifier (tests/models/test_bert.py's): lines of the plays its data holds against its own
    split, then lines of digits, by the MMD test on its mean-pooled sentence embeddings."""
    from dlforge import api
    from dlforge.data.plays import play_lines
    from tests.models.test_bert import TINY

    corpus = tmp_path / "hamlet.txt"
    corpus.write_text("\n".join(play_lines("hamlet")[:300]) + "\n")
    quiet = {"progress": False, "tensorboard": False, "checkpoint_every": None, "device": "cpu", "batch_size": 8}
    tiny = {k: v for k, v in TINY.items() if k != "vocab_size"}
    mlm = api.train({"name": "mlm", "runs_dir": str(tmp_path / "runs"), "model": {"name": "bert_mlm", **tiny},
                     "data": {"name": "text_files_mlm", "path": str(corpus), "tokenizer": "wordpiece:300",
                              "max_length": 24}, "train": {"max_steps": 2, **quiet}})
    genre = api.train({"name": "genre", "runs_dir": str(tmp_path / "runs"),
                       "model": {"name": "bert_classifier", **tiny},
                       "data": {"name": "shakespeare_genre", "tokenizer": str(mlm.run_dir), "max_length": 24,
                                "limit": 120}, "train": {"max_steps": 2, **quiet,
                                                         "transfer": {"init_from": str(mlm.run_dir)}}})
    (tmp_path / "digits.txt").write_text("\n".join(f"{i * 7919 % 10007} {i} {i * 31}" for i in range(60)) + "\n")
    shifted = monitor(genre.run_dir, "train", tmp_path / "digits.txt", n_permutations=200)
    rep = shifted["representation"]
    assert shifted["current"]["n"] == 60 and rep["drift"] and rep["p_value"] < 0.05, rep
    assert shifted["drift"] and shifted["features"] == {}
    same = monitor(genre.run_dir, "train", "val", n_permutations=200)
    assert not same["representation"]["drift"] and same["representation"]["p_value"] > 0.05, same["representation"]
    small = same["current"]["n"] < 100
    assert small == any("fewer than 100" in w for w in same["warnings"]), (same["current"], same["warnings"])
    assert any("only 60 current rows" in w for w in shifted["warnings"])
