"""Fashion-MNIST canvases: determinism and the cache, exact labels (semantic map, instance masks with occlusion,
tight boxes), the padded batch contract, and the COCO export read back by pycocotools and by dlforge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlforge.data import rle
from dlforge.data.canvases import PLAIN_LEVELS, CanvasConfig, export_coco, fashion_canvases, load_canvases
from dlforge.data.coco import read_coco
from dlforge.data.detection import collate_detection, unpad
from dlforge.data.images import FASHION_LABELS
from dlforge.errors import ConfigError, DataError
from dlforge.eval.coco_map import coco_map

# pycocotools' decode predates numpy 2's copy keyword; its warning is about pycocotools, not about what is tested
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def config(cache, **overrides) -> CanvasConfig:
    settings = {"name": "fashion_canvases", "n_train": 24, "n_val": 6, "n_test": 10, "cache_dir": str(cache),
                "size": 64, "items": [1, 4], "max_overlap": 0.5, "seed": 3, **overrides}
    return CanvasConfig(**settings)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("canvas-cache")


@pytest.fixture(scope="module")
def canvases(cache):
    return load_canvases(config(cache))


def test_canvases_are_deterministic_and_cached(cache, canvases, tmp_path):
    assert len(list(cache.glob("fashion-canvases-*.npz"))) >= 1
    again = load_canvases(config(tmp_path))  # generated afresh elsewhere: the same canvases
    for split in ("train", "val", "test"):
        for key in ("images", "semantic", "instances", "count", "labels", "boxes", "area"):
            np.testing.assert_array_equal(getattr(again[split], key), getattr(canvases[split], key))
    assert len(canvases["train"].images) == 24 and len(canvases["test"].images) == 10


def test_labels_are_exact(canvases):
    plain = 0
    for c in canvases.values():
        start = 0
        for i, n in enumerate(c.count):
            inst, sem = c.instances[i], c.semantic[i]
            assert 1 <= n <= 4 and set(np.unique(inst)) <= set(range(n + 1))
            np.testing.assert_array_equal(sem == 0, inst == 0)
            for k in range(n):
                mask = inst == k + 1
                assert mask.any()  # a hidden item would have been dropped
                assert (sem[mask] == c.labels[start + k] + 1).all()  # one class per object: the item's
                ys, xs = np.nonzero(mask)
                x1, y1, x2, y2 = c.boxes[start + k]
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)  # tight
                assert c.area[start + k] == mask.sum()
            background = c.images[i][inst == 0]
            if (background == background[0]).all() and PLAIN_LEVELS[0] <= background[0] <= PLAIN_LEVELS[1]:
                plain += 1  # a plain canvas: every pixel that is not the background level belongs to an object
                assert (inst[c.images[i] != background[0]] > 0).all()
            start += n
        assert start == len(c.labels)
    assert plain > 0


def test_occluded_items_are_cut_and_hidden_ones_dropped(cache, canvases):
    crowded = load_canvases(config(cache, n_train=30, n_val=0, n_test=0, items=[4, 4], scale=[2.0, 2.5],
                                   max_overlap=1.0, size=48, background="plain"))["train"]
    # 4 items of 56-70 pixels on 48x48 canvases cannot all stay visible: the top one owns the shared pixels
    assert crowded.count.min() >= 1 and crowded.count.max() <= 4 and crowded.count.sum() < 4 * 30
    for i in range(30):
        owned = np.bincount(crowded.instances[i].ravel(), minlength=crowded.count[i] + 1)[1:]
        assert (owned > 0).all() and len(owned) == crowded.count[i]
    assert len(list(cache.glob("fashion-canvases-*.npz"))) == 2  # other settings, another cache file


def test_batches_follow_the_padded_contract(cache):
    bundle = fashion_canvases(config(cache, task="instance_segmentation"))
    raw = load_canvases(config(cache))["train"]
    assert bundle.info["task"] == "instance_segmentation" and bundle.info["label_names"] == FASHION_LABELS
    assert bundle.model_defaults == {"in_channels": 1, "image_size": 64, "num_classes": 10}
    batch = bundle.train.__getitems__([0, 1, 2, 3])
    m = int(raw.count[:4].max())
    assert batch["x"].shape == (4, 1, 64, 64) and batch["x"].dtype == torch.float32
    assert batch["y"].shape == (4, 64, 64) and batch["y"].dtype == torch.int64
    assert batch["boxes"].shape == (4, m, 4) and batch["masks"].shape == (4, m, 64, 64)
    start = 0
    for b in range(4):
        n = int(raw.count[b])
        assert batch["box_mask"][b].tolist() == [True] * n + [False] * (m - n)
        assert batch["labels"][b, n:].eq(-1).all() and not batch["iscrowd"][b].any()
        np.testing.assert_array_equal(batch["boxes"][b, :n].numpy(), raw.boxes[start:start + n])
        for k in range(n):
            np.testing.assert_array_equal(batch["masks"][b, k].numpy(), raw.instances[b] == k + 1)
        assert not batch["masks"][b, n:].any()
        np.testing.assert_array_equal(batch["y"][b].numpy(), raw.semantic[b])
        start += n
    one_by_one = collate_detection([bundle.train[i] for i in range(4)])
    assert one_by_one.keys() == batch.keys()
    for key in batch:
        torch.testing.assert_close(one_by_one[key], batch[key])
    # the objects without padding are COCO targets: predicting them exactly scores AP 1 (boxes and masks)
    targets = unpad(batch)
    assert [len(t["labels"]) for t in targets] == raw.count[:4].tolist()
    perfect = [{**t, "scores": torch.ones(len(t["labels"]))} for t in targets]
    for iou_type in ("bbox", "segm"):
        stats = coco_map(perfect, targets, iou_type=iou_type).stats
        assert stats["map"] == 1 and stats["mar_100"] == 1
    segmentation = fashion_canvases(config(cache, task="segmentation"))  # same canvases: the cache is shared
    assert segmentation.model_defaults["num_classes"] == 11 and "masks" not in segmentation.train[0]


def test_coco_export_round_trips_through_pycocotools_and_dlforge(cache, canvases, tmp_path):
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO

    paths = export_coco(config(cache), tmp_path / "coco", splits=("val",))
    assert paths == [tmp_path / "coco" / "instances_val.json"]
    c = canvases["val"]
    ds = COCO(str(paths[0]))
    assert [cat["name"] for cat in ds.loadCats(ds.getCatIds())] == FASHION_LABELS and ds.getCatIds()[0] == 1
    assert len(ds.getImgIds()) == 6 and len(ds.getAnnIds()) == c.count.sum()
    start = 0
    for i, image_id in enumerate(sorted(ds.getImgIds())):
        anns = ds.loadAnns(ds.getAnnIds(imgIds=[image_id]))
        for k, ann in enumerate(anns):
            mask = c.instances[i] == k + 1
            np.testing.assert_array_equal(ds.annToMask(ann), mask)
            assert ann["category_id"] == c.labels[start + k] + 1 and ann["area"] == coco_mask.area(ann["segmentation"])
            np.testing.assert_array_equal(coco_mask.toBbox(ds.annToRLE(ann)), ann["bbox"])
        start += len(anns)
    back = read_coco(tmp_path / "coco" / "val", paths[0], channels=1, masks=True)
    np.testing.assert_array_equal(back.images[..., 0], c.images)
    np.testing.assert_array_equal(back.objects.boxes, c.boxes)
    np.testing.assert_array_equal(back.objects.labels, c.labels)
    masks = [rle.runs_to_mask(r, 64, 64) for r in back.objects.masks]
    np.testing.assert_array_equal(masks[0], c.instances[0] == 1)
    assert json.loads(paths[0].read_text())["annotations"][0]["iscrowd"] == 0


def test_textures_without_scikit_image_name_the_package(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)  # what a missing package looks like to an import
    with pytest.raises(DataError, match=r"need scikit-image .* pip install scikit-image .* data.background: plain"):
        load_canvases(config(tmp_path, background="textured"))


def test_a_limit_makes_only_that_many_canvases_per_split(cache, canvases):
    limited = load_canvases(config(cache, limit=7))
    assert [len(limited[s].images) for s in ("train", "val", "test")] == [7, 6, 7]


def tight_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_hflip_mirrors_each_chosen_canvas_with_its_boxes_masks_and_map(cache):
    bundle = fashion_canvases(config(cache, task="instance_segmentation", augment={"hflip": 0.5}))
    assert bundle.augment is not None and bundle.augment.training
    batch = bundle.train.__getitems__(list(range(16)))
    torch.manual_seed(0)
    out = bundle.augment(batch)
    flipped = [bool((out["x"][b] != batch["x"][b]).any()) for b in range(16)]
    assert 0 < sum(flipped) < 16  # some canvases mirrored, some not
    for b in range(16):
        same = not flipped[b]
        torch.testing.assert_close(out["x"][b], batch["x"][b] if same else batch["x"][b].flip(-1))
        torch.testing.assert_close(out["y"][b], batch["y"][b] if same else batch["y"][b].flip(-1))
        for k in range(batch["boxes"].shape[1]):
            if not batch["box_mask"][b, k]:  # padding stays padding
                assert out["boxes"][b, k].tolist() == batch["boxes"][b, k].tolist() and not out["masks"][b, k].any()
                continue
            # the box is still the tight box of the object's (mirrored) pixels
            assert out["boxes"][b, k].tolist() == tight_box(out["masks"][b, k])
            torch.testing.assert_close(out["masks"][b, k], batch["masks"][b, k] if same else
                                       batch["masks"][b, k].flip(-1))
    assert bundle.augment.eval()(batch) is batch  # evaluation batches pass through


def test_canvases_refuse_augmentations_that_would_move_the_labels_and_score_a_train_sample(cache):
    for key in ("crop_padding", "erasing"):
        with pytest.raises(ConfigError, match=f"data.augment.{key}: would move or hide"):
            config(cache, augment={key: 1})
    bundle = fashion_canvases(config(cache, eval_train=5))
    assert len(bundle.split("train", evaluation=True)) == 5 and len(bundle.train) == 24
    assert bundle.info["n_eval_train"] == 5
    assert fashion_canvases(config(cache, eval_train=None)).eval_train is None
