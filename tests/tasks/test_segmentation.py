"""Semantic segmentation as a user runs it, through the CLI in this process: train a U-Net on tiny Fashion-MNIST
canvases, the report (plots, per-class IoU in eval.json), `dlforge eval --json`, `dlforge predict` writing a mask PNG
per image at the image's size; the predicted masks read back as a VOC-style mask folder that trains the same model;
a ResNet classification run's backbone loaded through train.transfer (a plain U-Net refusing it:
tests/models/test_unet.py); inputs predict refuses in one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from clitools import ok_json, one_line_error, run_here
from PIL import Image

from dlforge import api
from dlforge.config import load_config
from dlforge.data.images import FASHION_LABELS

SEGMENTS = ["background", *FASHION_LABELS]
QUIET = {"progress": False, "tensorboard": False, "checkpoint_every": None, "log_every": 1, "seed": 0}
SMALL_UNET = {"name": "unet_small", "depth": 2, "base_channels": 4}


def write_config(path: Path, runs: Path, data: dict, model: dict, **train) -> Path:
    cfg = {"name": path.stem, "runs_dir": str(runs), "data": data, "model": model,
           "train": {"max_steps": 3, "batch_size": 8, **QUIET, **train}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def canvases(cache: Path) -> dict:
    return {"name": "fashion_canvases", "task": "segmentation", "size": 32, "items": [1, 2], "n_train": 24,
            "n_val": 8, "n_test": 8, "background": "plain", "cache_dir": str(cache)}


def trained(capsys, config: Path) -> Path:
    proc = run_here(capsys, "train", str(config))
    assert proc.returncode == 0, proc.stderr
    run = proc.stdout.strip().splitlines()[-1].removeprefix("run: ").strip()
    return Path(run)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One canvas cache for the module: the canvases are generated once (reading Fashion-MNIST takes seconds)."""
    return tmp_path_factory.mktemp("canvas-cache")


@pytest.fixture(scope="module")
def seg(tmp_path_factory, cache):
    """A U-Net trained 3 steps on 24 canvases of 32x32 (through the API: the CLI trains in the tests below), and a
    folder of test canvases as image files."""
    d = tmp_path_factory.mktemp("seg")
    run = api.train(write_config(d / "canvas.yaml", d / "runs", canvases(cache), SMALL_UNET)).run_dir
    bundle = api.build_data(load_config(d / "canvas.yaml"))
    from dlforge.data.images import denormalize

    images = denormalize(bundle.preprocessing, torch.stack([bundle.test[i]["x"] for i in range(3)])).numpy()
    folder = d / "shots"
    (folder / "more").mkdir(parents=True)
    Image.fromarray(images[0, ..., 0]).save(folder / "a.png")
    Image.fromarray(images[1, ..., 0]).resize((48, 40)).save(folder / "more" / "b.jpg")  # another size, a JPEG
    Image.fromarray(np.repeat(images[2], 3, axis=-1)).save(folder / "gray-as-rgb.png")  # gray stored as RGB
    return SimpleNamespace(dir=d, run=run, folder=folder)


def test_training_writes_the_report_plots_and_per_class_iou(seg):
    assert {"segmentation.png", "confusion.png", "loss.png"} <= {p.name for p in (seg.run / "plots").glob("*.png")}
    ev = json.loads((seg.run / "eval.json").read_text())
    assert {"pixel_accuracy", "miou", "mean_dice", "iou_background", "loss"} <= set(ev["test"])
    assert {"pixel_accuracy", "miou", "mean_dice"} <= set(ev["val"])
    assert not any(k.startswith("iou_") for k in ev["val"])  # validation: a few curves during training
    assert list(ev["test_per_class"]) == SEGMENTS
    background = ev["test_per_class"]["background"]
    assert background["pixels"] > 0 and 0 <= background["iou"] <= 1
    assert background["dice"] == pytest.approx(2 * background["iou"] / (1 + background["iou"]))
    assert sum(c["pixels"] for c in ev["test_per_class"].values()) == 8 * 32 * 32
    signature = json.loads((seg.run / "model" / "signature.json").read_text())
    assert signature["task"] == "segmentation"
    assert signature["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [-1, 11, 32, 32]}]
    card = (seg.run / "README.md").read_text()  # the model card names what predict reads and writes
    assert f"dlforge predict {seg.run} images/" in card and "palette PNG of class indices in the run's predict/" in card


def test_eval_json_prints_pixel_accuracy_miou_dice_and_per_class_iou(seg, capsys):
    result = ok_json(run_here(capsys, "eval", str(seg.run), "--json"))
    metrics = result["metrics"]
    assert {"pixel_accuracy", "miou", "mean_dice", "loss"} <= set(metrics)
    per_class = {k for k in metrics if k.startswith("iou_")}
    assert "iou_background" in per_class and per_class <= {f"iou_{n.replace('/', '_').replace(' ', '_')}"
                                                           for n in SEGMENTS}
    ev = json.loads((seg.run / "eval.json").read_text())
    assert metrics["miou"] == pytest.approx(ev["test"]["miou"], abs=1e-9)


def test_predict_writes_a_mask_png_per_image_at_its_size(seg, capsys):
    rows = ok_json(run_here(capsys, "predict", str(seg.run), str(seg.folder), "--json"))
    assert [Path(r["line"]).name for r in rows] == ["a.png", "gray-as-rgb.png", "b.jpg"]
    predict_dir = seg.run / "predict"
    assert [Path(r["mask"]) for r in rows] == [predict_dir / "a.png", predict_dir / "gray-as-rgb.png",
                                               predict_dir / "more" / "b.png"]
    for r in rows:
        with Image.open(r["mask"]) as im:
            assert im.mode == "P" and (im.height, im.width) == (r["height"], r["width"])
            mask = np.array(im)
        counts = np.bincount(mask.ravel(), minlength=len(SEGMENTS))
        assert len(counts) == len(SEGMENTS)  # class indices only
        assert [r[f"pixels({n})"] for n in SEGMENTS] == counts.tolist()
    assert (rows[2]["height"], rows[2]["width"]) == (40, 48)
    # the same image as PNG file and as the test split gives the model's own prediction
    model = api.load(seg.run)
    one = ok_json(run_here(capsys, "predict", str(seg.run), str(seg.folder / "a.png"), "--json"))
    assert one[0]["mask"] == rows[0]["mask"]
    bundle = api.build_data(load_config(seg.run / "config.yaml"))
    with torch.no_grad():
        expected = model({"x": bundle.test[0]["x"][None]}).logits.argmax(dim=1)[0].numpy()
    assert (np.array(Image.open(rows[0]["mask"])) == expected).mean() > 0.99  # PNG round trip of the pixels


def test_predict_refuses_a_colour_image_and_a_file_that_is_no_image(seg, capsys, tmp_path):
    colour = tmp_path / "colour.png"
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(colour)
    line = one_line_error(run_here(capsys, "predict", str(seg.run), str(colour)))
    assert "colour.png: a colour (RGB) image; the model reads 1-channel grayscale images" in line
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    line = one_line_error(run_here(capsys, "predict", str(seg.run), str(text)))
    assert "notes.png: cannot read the image" in line


def test_predicted_masks_train_the_same_model_as_a_voc_mask_folder(seg, capsys, tmp_path):
    """The mask PNGs predict writes are class-index PNGs: a VOC-style folder of them trains the U-Net."""
    rows = ok_json(run_here(capsys, "predict", str(seg.run), str(seg.folder), "--json"))
    root = tmp_path / "voc"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
    for i, r in enumerate(rows):
        split = "val" if i == 0 else "train"
        stem = Path(r["line"]).stem
        Image.open(r["line"]).convert("L").save(root / split / "images" / f"{stem}.png")
        mask = np.array(Image.open(r["mask"]))
        mask[0, :] = 255  # a void border row: ignored
        Image.fromarray(mask).save(root / split / "masks" / f"{stem}.png")
    (root / "labels.txt").write_text("\n".join(SEGMENTS) + "\n")
    data = {"name": "voc_masks", "path": str(root), "image_size": 32, "channels": 1}
    run = trained(capsys, write_config(tmp_path / "voc.yaml", tmp_path / "runs", data, SMALL_UNET, max_steps=2,
                                       batch_size=2))
    ev = json.loads((run / "eval.json").read_text())
    assert {"pixel_accuracy", "miou"} <= set(ev["val"]) and ev["train"]["loss"] == ev["train"]["loss"]


def test_a_resnet_classification_backbone_loads_through_train_transfer(capsys, tmp_path, cache):
    source = trained(capsys, write_config(tmp_path / "digits.yaml", tmp_path / "runs", {"name": "digits", "limit": 64},
                                          {"name": "resnet20", "width": 4}, max_steps=2, batch_size=16))
    target = write_config(tmp_path / "seg.yaml", tmp_path / "runs", canvases(cache),
                          {"name": "unet_resnet20", "base_channels": 4}, max_steps=2,
                          transfer={"init_from": str(source), "freeze": "all"})
    run = trained(capsys, target)
    theirs = api.load(source).state_dict()
    ours = api.load(run).state_dict()
    backbone = [k for k in ours if not k.startswith("head.")]
    assert backbone and all(k.split(".")[0] in ("stem", "stage1", "stage2", "stage3") for k in backbone)
    for key in backbone:  # frozen: the weights and BN statistics trained on digits, as they were
        assert torch.equal(ours[key], theirs[key]), key
    started = json.loads((run / "run.json").read_text())["started_from"]
    assert started["key"] == "train.transfer.init_from"
