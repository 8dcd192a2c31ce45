"""Users' own detection and segmentation data: a COCO-format folder (polygons, RLEs, crowds, resizing) and a
VOC-style mask folder, on small files the tests write; a corrupt image or a box outside its image is one DataError
line naming the file and the annotation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from clitools import one_line_error, run_here
from PIL import Image

from dlforge.data import rle
from dlforge.data.coco import CocoConfig, read_coco
from dlforge.data.detection import IGNORE_INDEX, resize_labels
from dlforge.data.voc import VocConfig
from dlforge.errors import DataError
from dlforge.registry import dataset_entry

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SIZES = {1: (30, 40), 2: (40, 50), 3: (20, 20)}  # image id -> (height, width)


def write_coco_folder(root: Path) -> dict:
    """train: 3 images of different sizes (a polygon, a compressed RLE, a crowd as uncompressed RLE, an image without
    objects); val: 1 image. Category ids 3 and 7 become classes 0 and 1."""
    rng = np.random.default_rng(0)
    disc = np.zeros(SIZES[1], dtype=np.uint8)
    disc[5:15, 20:32] = 1
    crowd = np.zeros(SIZES[2], dtype=np.uint8)
    crowd[10:30, 0:25] = 1
    anns = [
        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [2.0, 3.0, 12.0, 20.0], "area": 150.0, "iscrowd": 0,
         "segmentation": [[2, 3, 14, 3, 14, 23, 2, 23]]},
        {"id": 12, "image_id": 1, "category_id": 7, "bbox": [20.0, 5.0, 12.0, 10.0], "area": 120.0, "iscrowd": 0,
         "segmentation": rle.encode(disc)},
        {"id": 13, "image_id": 2, "category_id": 3, "bbox": [0.0, 10.0, 25.0, 20.0], "area": 500.0, "iscrowd": 1,
         "segmentation": {"size": list(SIZES[2]), "counts": rle.mask_runs(crowd).tolist()}},
    ]
    doc = {"images": [{"id": i, "file_name": f"img{i}.png", "height": h, "width": w} for i, (h, w) in SIZES.items()],
           "annotations": anns, "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "disc"}]}
    (root / "train").mkdir(parents=True)
    for i, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "train" / f"img{i}.png")
    (root / "instances_train.json").write_text(json.dumps(doc))
    (root / "val").mkdir()
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(root / "val" / "v.png")
    val = {"images": [{"id": 1, "file_name": "v.png", "height": 30, "width": 40}], "categories": doc["categories"],
           "annotations": [{**anns[0], "id": 21}]}
    (root / "instances_val.json").write_text(json.dumps(val))
    return doc


def test_coco_folder_reads_polygons_rles_crowds_and_resizes(tmp_path):
    from pycocotools.coco import COCO

    doc = write_coco_folder(tmp_path)
    config = CocoConfig(name="coco", path=str(tmp_path), task="instance_segmentation", image_size=32)
    bundle = dataset_entry("coco").fn(config)
    assert bundle.info["label_names"] == ["square", "disc"] and bundle.info["category_ids"] == [3, 7]
    assert bundle.model_defaults == {"in_channels": 3, "image_size": 32, "num_classes": 2}
    assert len(bundle.train) == 3 and len(bundle.val) == 1 and bundle.test is None
    batch = bundle.train.__getitems__([0, 1, 2])
    assert batch["x"].shape == (3, 3, 32, 32) and batch["masks"].shape == (3, 2, 32, 32)
    assert batch["labels"].tolist() == [[0, 1], [0, -1], [-1, -1]]
    assert batch["box_mask"].tolist() == [[True, True], [True, False], [False, False]]
    assert batch["iscrowd"].tolist() == [[False, False], [True, False], [False, False]]
    sx, sy = 32 / 40, 32 / 30
    np.testing.assert_allclose(batch["boxes"][0, 0].numpy(), [2 * sx, 3 * sy, 14 * sx, 23 * sy], rtol=1e-6)
    assert batch["area"][0, 0].item() == pytest.approx(150 * sx * sy)
    coco = COCO(str(tmp_path / "instances_train.json"))  # pycocotools' own masks, resized as the reader resizes
    for b, ann_ids in enumerate([[11, 12], [13]]):
        for k, ann_id in enumerate(ann_ids):
            want = resize_labels(coco.annToMask(coco.anns[ann_id]), (32, 32))
            np.testing.assert_array_equal(batch["masks"][b, k].numpy(), want)
    assert doc["annotations"][2]["iscrowd"] == 1

    # COCO's own layout: annotations/instances_train2017.json beside train2017/
    (tmp_path / "c2" / "annotations").mkdir(parents=True)
    (tmp_path / "train").rename(tmp_path / "c2" / "train2017")
    (tmp_path / "instances_train.json").rename(tmp_path / "c2" / "annotations" / "instances_train2017.json")
    boxes_only = dataset_entry("coco").fn(CocoConfig(name="coco", path=str(tmp_path / "c2"), image_size=[30, 40]))
    assert len(boxes_only.train) == 3 and "masks" not in boxes_only.train[0]


def test_a_corrupt_image_or_a_box_outside_is_one_data_error_naming_file_and_annotation(tmp_path, monkeypatch,
                                                                                         capsys):
    doc = write_coco_folder(tmp_path)
    images, annotations = tmp_path / "train", tmp_path / "instances_train.json"
    outside = json.loads(json.dumps(doc))
    outside["annotations"][1]["bbox"] = [35.0, 5.0, 12.0, 10.0]  # x + w = 47 in an image 40 wide
    annotations.write_text(json.dumps(outside))
    with pytest.raises(DataError) as err:
        read_coco(images, annotations, image_size=(32, 32))
    assert f"{annotations}: annotation 12 (image img1.png, 40x30): bbox [35.0, 5.0, 12.0, 10.0] lies outside the " \
           "image" == str(err.value)

    annotations.write_text(json.dumps(doc))
    (images / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError) as err:
        read_coco(images, annotations, image_size=(32, 32))
    message = str(err.value)
    assert message.startswith(f"{images / 'img2.png'}: cannot read the image") and "annotation 13" in message
    assert "\n" not in message

    # the same through the CLI: one line on stderr, exit 2, before any run folder
    cfg = {"data": {"name": "coco", "path": str(tmp_path), "image_size": 32}, "model": {"name": "mlp"},
           "train": {"max_steps": 1}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    line = one_line_error(run_here(capsys, "train", str(tmp_path / "cfg.yaml")))  # the CLI, in this process
    assert "img2.png: cannot read the image" in line and "annotation 13" in line
    assert not (tmp_path / "runs").exists()


def write_voc_folder(root: Path) -> None:
    """train/ 2 images (one 24x24, one 12x12) with palette masks of classes 0-2 and a 255 border; val/ 1."""
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (252 * 3) + [224, 224, 192]  # 256 colours, 255: void
    for split, names in (("train", ["a", "b"]), ("val", ["c"])):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i, name in enumerate(names):
            side = 24 if name != "b" else 12
            mask = np.zeros((side, side), dtype=np.uint8)
            mask[2:side // 2, 2:side // 2] = 1
            mask[side // 2:, side // 2:] = 2
            mask[side // 2 - 1, :] = 255  # VOC's void border
            png = Image.fromarray(mask, mode="P")
            png.putpalette(palette)
            png.save(root / split / "masks" / f"{name}.png")
            image = Image.fromarray(np.full((side, side, 3), 40 * i, dtype=np.uint8))
            image.save(root / split / "images" / f"{name}.jpg")
    (root / "labels.txt").write_text("background\nsquare\ncorner\n")


def test_voc_mask_folder_reads_class_index_pngs(tmp_path):
    write_voc_folder(tmp_path)
    bundle = dataset_entry("voc_masks").fn(VocConfig(name="voc_masks", path=str(tmp_path), image_size=24))
    assert bundle.info["task"] == "segmentation" and bundle.info["segment_names"] == ["background", "square", "corner"]
    assert bundle.model_defaults["num_classes"] == 3 and len(bundle.train) == 2 and len(bundle.val) == 1
    batch = bundle.train.__getitems__([0, 1])
    assert set(batch) == {"x", "y"} and batch["y"].shape == (2, 24, 24)
    y = batch["y"][0]
    assert y[11].eq(IGNORE_INDEX).all() and y[3, 3] == 1 and y[20, 20] == 2 and y[20, 3] == 0
    assert batch["y"][1][10].eq(IGNORE_INDEX).all()  # the 12x12 pair, resized by nearest neighbour: rows 10-11

    # Pascal VOC's own layout
    voc = tmp_path / "VOC"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    (tmp_path / "train" / "masks").rename(voc / "SegmentationClass")
    for f in (tmp_path / "train" / "images").iterdir():
        f.rename(voc / "JPEGImages" / f.name)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    again = dataset_entry("voc_masks").fn(VocConfig(name="voc_masks", path=str(voc), image_size=24))
    assert again.info["segment_names"] == ["0", "1", "2"] and len(again.train) == 2

    Image.fromarray(np.zeros((24, 24, 3), dtype=np.uint8)).save(voc / "SegmentationClass" / "a.png")  # RGB
    with pytest.raises(DataError, match=r"a.png: expected a class-index PNG \(mode L or P\), got mode RGB"):
        dataset_entry("voc_masks").fn(VocConfig(name="voc_masks", path=str(voc), image_size=24))
