"""Classic inference in `dlforge serve`: KServe's v2 protocol against the model's own forward, and the plain
/v1/predict form (JSON rows, base64 images, uploads) against `dlforge predict` on the same inputs."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from dlforge.deploy.serve.app import ServeOptions, create_app
from dlforge.deploy.serve.served import load_served
from tests.deploy.test_serve import Server


@pytest.fixture(scope="module")
def server(runs):
    s = Server(create_app([load_served(str(runs["iris"])), load_served(str(runs["digits"]))],
                          ServeOptions(log=lambda _: None)))
    yield s
    s.stop()


def test_v2_metadata_is_the_signature_and_infer_is_the_forward(server, runs):
    from dlforge.artifacts import load_trained, read_json

    sig = read_json(runs["digits"] / "model" / "signature.json")
    meta = httpx.get(f"{server.url}/v2/models/digits").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": sig["inputs"][0]["shape"]}]
    assert meta["outputs"][0]["name"] == "logits" and meta["task"] == "classification"
    x = torch.rand(3, *sig["inputs"][0]["shape"][1:], generator=torch.Generator().manual_seed(0))
    body = {"id": "req-1", "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.reshape(-1).tolist()}]}
    r = httpx.post(f"{server.url}/v2/models/digits/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-1" and out["model_name"] == "digits"
    logits = out["outputs"][0]
    with torch.no_grad():
        want = load_trained(runs["digits"])({"x": x}).logits
    assert logits["shape"] == list(want.shape) and logits["datatype"] == "FP32"
    assert np.allclose(np.array(logits["data"]).reshape(logits["shape"]), want.numpy(), atol=1e-5)
    assert httpx.get(f"{server.url}/v2/models/digits/ready").json() == {"name": "digits", "ready": True}


def test_v2_refusals_name_the_field(server):
    good = {"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}
    for change, words in (({"name": "y"}, "inputs[0].name"), ({"datatype": "INT64"}, "inputs[0].datatype"),
                          ({"shape": [1, 3, 8, 8], "data": [0.0] * 192}, "inputs[0].shape"),
                          ({"data": [0.0] * 63}, "inputs[0].data"), ({"data": ["a"] * 64}, "inputs[0].data"),
                          ({"shape": [1000, 1, 8, 8]}, "at most")):
        r = httpx.post(f"{server.url}/v2/models/digits/infer", json={"inputs": [{**good, **change}]})
        assert r.status_code == 400 and words in r.json()["error"]["message"], (change, r.text)
    r = httpx.post(f"{server.url}/v2/models/digits/infer",
                   content=json.dumps({"inputs": [{**good, "data": [float("nan")] * 64}]}))
    assert r.status_code == 400 and "finite" in r.json()["error"]["message"]
    assert httpx.post(f"{server.url}/v2/models/nope/infer", json={"inputs": [good]}).status_code == 404


def _digit_pngs(folder: Path, n: int) -> list[Path]:
    from PIL import Image
    from sklearn.datasets import load_digits

    folder.mkdir()
    images = load_digits().images[:n]
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i:02d}.png")
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(paths[-1])
    return paths


def _without_keys(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("line", "index")} for r in rows]


def test_predict_takes_rows_images_and_uploads_as_dlforge_predict_reads_files(server, runs, tmp_path):
    from dlforge.api import predict
    from dlforge.artifacts import read_json

    paths = _digit_pngs(tmp_path / "digits", 5)
    want = _without_keys(predict(runs["digits"], tmp_path / "digits"))
    as_b64 = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    got = httpx.post(f"{server.url}/v1/predict", json={"model": "digits", "inputs": as_b64}).json()
    assert [r["index"] for r in got["predictions"]] == list(range(5))
    assert _without_keys(got["predictions"]) == want
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    uploaded = httpx.post(f"{server.url}/v1/predict", data={"model": "digits"}, files=files).json()
    assert _without_keys(uploaded["predictions"]) == want

    features = [f["name"] for f in read_json(runs["iris"] / "model" / "preprocessing.json")["features"]]
    rows = [dict(zip(features, values, strict=True)) for values in ([5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3])]
    with open(tmp_path / "iris.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=features)
        writer.writeheader()
        writer.writerows(rows)
    got = httpx.post(f"{server.url}/v1/predict", json={"model": "iris", "inputs": rows}).json()
    assert _without_keys(got["predictions"]) == _without_keys(predict(runs["iris"], tmp_path / "iris.csv"))


def test_predict_refusals(server):
    for body, status, words in (({"model": "digits", "inputs": ["not base64!"]}, 400, "base64"),
                                ({"model": "digits", "inputs": [base64.b64encode(b"text").decode()]}, 400,
                                 "not a PNG"),
                                ({"model": "iris", "inputs": [{"nope": 1}]}, 400, ""),
                                ({"model": "iris", "inputs": []}, 400, "1 to"),
                                ({"model": "iris", "inputs": "x"}, 400, "list"),
                                ({"model": "gone", "inputs": [1]}, 404, "gone")):
        r = httpx.post(f"{server.url}/v1/predict", json=body)
        assert r.status_code == status and words in r.json()["error"]["message"], (body, r.text)
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200


def test_an_alias_move_reloads_the_model_while_requests_keep_being_served(runs, tmp_path):
    import threading
    import time

    from dlforge.deploy.model_registry import ModelRegistry
    from tests.deploy.test_serve import metric

    reg = tmp_path / "reg"
    registry = ModelRegistry(reg)
    registry.add(runs["iris"], "m")
    registry.add(runs["digits"], "m")
    registry.set_alias("m", "champion", 1)
    lines: list[str] = []
    s = Server(create_app([load_served("registry:m@champion", reg)],
                          ServeOptions(runs_dir=str(reg), watch_s=0.1, log=lines.append)))
    try:
        assert httpx.get(f"{s.url}/v2/models/m").json()["versions"] == ["m@1"]
        statuses: list[int] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                statuses.append(httpx.get(f"{s.url}/v2/models/m").status_code)

        worker = threading.Thread(target=client)
        worker.start()
        time.sleep(0.3)
        registry.set_alias("m", "champion", 2)
        deadline = time.time() + 10
        while httpx.get(f"{s.url}/v2/models/m").json()["versions"] != ["m@2"]:
            assert time.time() < deadline, "the alias move was not picked up"
            time.sleep(0.05)
        time.sleep(0.2)
        stop.set()
        worker.join()
        assert len(statuses) > 5 and set(statuses) == {200}  # none dropped across the swap
        meta = httpx.get(f"{s.url}/v2/models/m").json()
        assert meta["inputs"][0]["shape"][1:] == [1, 8, 8]  # the digits model now
        assert metric(s.url, "dlforge_model_info", model="m", version="m@2") == 1
        assert metric(s.url, "dlforge_model_info", model="m", version="m@1") == 0
        assert any(json.loads(line).get("event") == "reloaded" for line in lines)
    finally:
        s.stop()
