"""Image data: the IDX reader, the image datasets (Fashion-MNIST, idx, digits, image_folder), preparing new files,
and batched augmentation."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dlforge.data.images  # noqa: F401  (registers fashion_mnist, idx, digits, image_folder)
from dlforge.data.augment import ERASING_AREA, ERASING_ASPECT, AugmentConfig, BatchAugment
from dlforge.data.idx import IDX_TYPES, read_idx, write_idx
from dlforge.data.images import FASHION_DIR, FASHION_LABELS, ImageDataConfig, denormalize, prepare_images
from dlforge.errors import ConfigError, DataError
from dlforge.registry import dataset_entry

try:
    from PIL import Image
except ImportError:  # pragma: no cover - a broken environment, not a feature to skip
    pytest.fail("these tests need Pillow: pip install pillow", pytrace=False)


def build(name: str, **config):
    return dataset_entry(name).fn(ImageDataConfig(name=name, **config))


def xy(bundle, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    ds = getattr(bundle, split)
    return ds.tensors["x"], ds.tensors["y"]


def raw(bundle, split: str) -> np.ndarray:
    """The split's uint8 pixels (N, H, W, C), recovered from the normalized tensors."""
    return denormalize(bundle.preprocessing, xy(bundle, split)[0]).numpy()


# --- IDX -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [t.newbyteorder("=") for t in IDX_TYPES.values()])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip_for_every_type_plain_and_gzip(tmp_path, dtype, name):
    rng = np.random.default_rng(0)
    array = (rng.normal(0, 50, size=(3, 4, 5))).astype(dtype)
    path = write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == dtype and back.shape == (3, 4, 5) and back.flags.writeable
    np.testing.assert_array_equal(back, array)


def test_idx_reads_a_hand_made_file_big_endian(tmp_path):
    # magic 00 00 0B (int16) 02 dims, dims 2 x 3 as big-endian uint32, then big-endian int16 values
    values = [1, -2, 300, -400, 5, 32767]
    blob = bytes([0, 0, 0x0B, 2]) + struct.pack(">II", 2, 3) + struct.pack(">6h", *values)
    (tmp_path / "h.idx").write_bytes(blob)
    np.testing.assert_array_equal(read_idx(tmp_path / "h.idx"), np.array(values, dtype=np.int16).reshape(2, 3))


def test_idx_detects_gzip_by_content_not_by_name(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    gz = write_idx(tmp_path / "data.gz", array)
    renamed = gz.rename(tmp_path / "data-no-suffix")
    np.testing.assert_array_equal(read_idx(renamed), array)
    plain = write_idx(tmp_path / "plain", array)
    misnamed = plain.rename(tmp_path / "misnamed.gz")  # plain bytes under a .gz name
    np.testing.assert_array_equal(read_idx(misnamed), array)


def test_the_real_fashion_mnist_files_read_with_their_shapes():
    require_fashion()
    labels = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels.dtype == np.uint8 and set(np.unique(labels)) == set(range(10))


@pytest.mark.parametrize("blob, expected", [
    (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab", "magic bytes 00 00"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab", "unknown IDX type code 0x07"),
    (b"\x00\x00\x08\x02" + struct.pack(">I", 2), "truncated IDX header"),
    (b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + b"abc", "truncated IDX data: dimensions 2 x 3 of uint8 need 6"),
    (b"\x00\x00\x0c\x01" + struct.pack(">I", 2) + b"\x00" * 9, "trailing bytes .*need 8 bytes, found 9"),
    (b"\x00\x00", "4-byte header"),
])
def test_malformed_idx_names_the_file_and_what_was_expected(tmp_path, blob, expected):
    path = tmp_path / "broken-file.idx"
    path.write_bytes(blob)
    with pytest.raises(DataError, match=expected) as err:
        read_idx(path)
    assert "broken-file.idx" in str(err.value)
    gz = tmp_path / "broken-file.idx.gz"  # the same checks behind gzip
    gz.write_bytes(gzip.compress(blob))
    with pytest.raises(DataError, match=expected):
        read_idx(gz)


def test_damaged_gzip_and_missing_files_are_data_errors(tmp_path):
    blob = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 1000) + bytes(1000))
    (tmp_path / "cut.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="cut.gz.*gzip"):
        read_idx(tmp_path / "cut.gz")
    with pytest.raises(DataError, match="nothere.idx.*not found"):
        read_idx(tmp_path / "nothere.idx")
    with pytest.raises(DataError, match="bool"):
        write_idx(tmp_path / "b.idx", np.zeros(3, dtype=bool))


# --- the idx dataset on small files ----------------------------------------------------------------------------


def pattern_images(n_per_class: int, classes: int = 3, size: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, size, size) images whose bright row depends on the class, plus noise; labels (N,)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(len(y), size, size))
    x[np.arange(len(y)), 1 + 2 * y % size, :] += 180
    return x.astype(np.uint8), y.astype(np.uint8)


def write_idx_set(folder: Path, n_train: int = 20, n_test: int = 5, prefix: str = "t10k", gz: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    x, y = pattern_images(n_train)
    write_idx(folder / f"train-images-idx3-ubyte{ext}", x)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", y)
    tx, ty = pattern_images(n_test, seed=1)
    if n_test:
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", tx)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", ty)
    return x, y, tx, ty


def test_idx_dataset_loads_splits_and_normalizes_with_train_stats(tmp_path):
    x, y, tx, ty = write_idx_set(tmp_path / "mnistish")
    bundle = build("idx", path=str(tmp_path / "mnistish"), val_size=6)
    assert (bundle.info["n_train"], bundle.info["n_val"], bundle.info["n_test"]) == (54, 6, 15)
    assert np.bincount(xy(bundle, "val")[1].numpy()).tolist() == [2, 2, 2]  # stratified
    assert bundle.info["label_names"] == ["0", "1", "2"] and bundle.info["num_classes"] == 3
    assert bundle.model_defaults == {"in_channels": 1, "image_size": 6, "num_classes": 3, "in_features": 36,
                                     "out_features": 3}
    # the test split is the test files, in order; train and val together are the train files
    np.testing.assert_array_equal(raw(bundle, "test")[..., 0], tx)
    np.testing.assert_array_equal(xy(bundle, "test")[1].numpy(), ty)
    seen = np.concatenate([raw(bundle, "train"), raw(bundle, "val")])[..., 0]
    assert sorted(map(bytes, seen)) == sorted(map(bytes, x))
    # normalization: train stats, numpy reference (population std)
    train_px = raw(bundle, "train").astype(np.float64) / 255
    assert bundle.preprocessing["mean"][0] == pytest.approx(train_px.mean(), abs=1e-12)
    assert bundle.preprocessing["std"][0] == pytest.approx(train_px.std(), abs=1e-12)
    xt = xy(bundle, "train")[0]
    assert xt.dtype == torch.float32 and xt.shape == (54, 1, 6, 6)
    assert abs(xt.mean().item()) < 1e-5 and xt.std(correction=0).item() == pytest.approx(1.0, abs=1e-5)


def test_idx_dataset_takes_test_prefix_label_names_and_carves_a_missing_test_split(tmp_path):
    write_idx_set(tmp_path / "a", prefix="test", gz=False)
    bundle = build("idx", path=str(tmp_path / "a"), label_names=["low", "mid", "high"], val_size=0.1)
    assert bundle.info["label_names"] == ["low", "mid", "high"] and bundle.info["n_test"] == 15
    write_idx_set(tmp_path / "b", n_test=0)
    carved = build("idx", path=str(tmp_path / "b"), test_fraction=0.25, val_size=0)
    assert (carved.info["n_train"], carved.info["n_test"]) == (45, 15) and carved.val is None
    with pytest.raises(DataError, match="label_names has 2 names"):
        build("idx", path=str(tmp_path / "a"), label_names=["a", "b"])


def test_idx_dataset_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(DataError, match="train-images"):
        build("idx", path=str(tmp_path))
    write_idx_set(tmp_path / "bad")
    write_idx(tmp_path / "bad" / "train-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: 7 labels for the 60 images"):
        build("idx", path=str(tmp_path / "bad"))
    with pytest.raises(ConfigError, match="data.path: required"):
        ImageDataConfig(name="idx")


def test_image_size_channels_and_ops_apply_to_every_split(tmp_path):
    import cv2

    x, y, tx, ty = write_idx_set(tmp_path / "s")
    plain = build("idx", path=str(tmp_path / "s"), val_size=0)
    bundle = build("idx", path=str(tmp_path / "s"), val_size=0, image_size=[9, 12], channels=3,
                   ops=[{"op": "gaussian_blur", "ksize": 3}])
    assert xy(bundle, "train")[0].shape == (60, 3, 9, 12) and xy(bundle, "test")[0].shape == (15, 3, 9, 12)
    assert bundle.model_defaults["image_size"] == [9, 12] and bundle.model_defaults["in_features"] == 3 * 9 * 12
    assert bundle.preprocessing["input_mode"] == "RGB" and bundle.preprocessing["channels"] == 3
    # torch's antialiased bilinear resize, then the blur, on the test images
    up = F.interpolate(torch.from_numpy(tx)[:, None].float(), size=(9, 12), mode="bilinear", antialias=True)
    up = up.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    expected = np.stack([cv2.GaussianBlur(np.repeat(im[..., None], 3, axis=2), (3, 3), 0) for im in up])
    np.testing.assert_array_equal(raw(bundle, "test"), expected)
    # new files go through the same resize (one at a time here, batched above), channels and ops
    for i in range(3):
        Image.fromarray(tx[i]).save(tmp_path / f"t{i}.png")
    fresh = prepare_images(bundle.preprocessing, [tmp_path / f"t{i}.png" for i in range(3)])
    assert torch.equal(fresh, xy(bundle, "test")[0][:3])
    edges = build("idx", path=str(tmp_path / "s"), val_size=0, ops=[{"op": "canny", "low": 50, "high": 150}])
    np.testing.assert_array_equal(raw(edges, "train")[..., 0], np.stack([cv2.Canny(im, 50, 150) for im in x]))
    assert not torch.equal(xy(edges, "train")[0], xy(plain, "train")[0])
    assert edges.fingerprint != plain.fingerprint
    with pytest.raises(ConfigError, match=r"data.ops\[0\].op: unknown image op 'sharpen'"):
        ImageDataConfig(name="idx", path=str(tmp_path / "s"), ops=[{"op": "sharpen"}])


def test_classes_subset_relabels_in_the_given_order(tmp_path):
    x, y, tx, ty = write_idx_set(tmp_path / "c")
    bundle = build("idx", path=str(tmp_path / "c"), classes=[2, "0"], val_size=0)
    assert bundle.info["label_names"] == ["2", "0"] and bundle.model_defaults["num_classes"] == 2
    keep = np.isin(ty, [2, 0])
    np.testing.assert_array_equal(xy(bundle, "test")[1].numpy(), np.where(ty[keep] == 2, 0, 1))
    np.testing.assert_array_equal(raw(bundle, "test")[..., 0], tx[keep])
    with pytest.raises(DataError, match="unknown class 'seven'"):
        build("idx", path=str(tmp_path / "c"), classes=[0, "seven"])
    with pytest.raises(ConfigError, match="twice"):
        build("idx", path=str(tmp_path / "c"), classes=[0, "0"])


# --- Fashion-MNIST ---------------------------------------------------------------------------------------------


def require_fashion() -> None:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist", pytrace=False)


@pytest.fixture(scope="module")
def fashion():
    require_fashion()
    return build("fashion_mnist")


def test_fashion_mnist_default_splits_and_classes(fashion):
    assert (fashion.info["n_train"], fashion.info["n_val"], fashion.info["n_test"]) == (55000, 5000, 10000)
    assert fashion.info["label_names"] == FASHION_LABELS and fashion.info["num_classes"] == 10
    assert fashion.info["modality"] == "image" and fashion.info["task"] == "classification"
    x, y = xy(fashion, "train")
    assert x.shape == (55000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert np.bincount(xy(fashion, "val")[1].numpy()).tolist() == [500] * 10  # stratified
    assert fashion.model_defaults == {"in_channels": 1, "image_size": 28, "num_classes": 10, "in_features": 784,
                                      "out_features": 10}
    pre = fashion.preprocessing
    assert pre["kind"] == "image" and pre["image_size"] == [28, 28] and pre["channels"] == 1 and pre["ops"] == []


def test_fashion_mnist_normalizes_with_train_statistics_only(fashion):
    x = xy(fashion, "train")[0]
    # mean 0 and std 1 on train: the stats in preprocessing are the train split's
    assert abs(x.mean(dim=(0, 2, 3), dtype=torch.float64).item()) < 1e-6
    assert x.std(dim=(0, 2, 3), correction=0).item() == pytest.approx(1.0, abs=1e-4)
    mean, std = fashion.preprocessing["mean"][0], fashion.preprocessing["std"][0]
    test_raw = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    test_px = test_raw.astype(np.float64) / 255
    assert abs(mean - test_px.mean()) > 1e-4 and abs(std - test_px.std()) > 1e-4  # not the test split's
    # the test split is normalized with the train mean, so its own offset stays visible
    xt = xy(fashion, "test")[0]
    assert xt.mean(dtype=torch.float64).item() == pytest.approx((test_px.mean() - mean) / std, abs=1e-6)
    assert abs(xt.mean().item()) > 1e-3
    np.testing.assert_array_equal(raw(fashion, "test")[..., 0], test_raw)


def test_fashion_mnist_label_fraction_keeps_one_percent_per_class():
    require_fashion()
    bundle = build("fashion_mnist", label_fraction=0.01)
    y = xy(bundle, "train")[1].numpy()
    assert np.bincount(y).tolist() == [55] * 10  # 1 % of the 5500 train images of each class
    assert (bundle.info["n_val"], bundle.info["n_test"]) == (5000, 10000)
    again = build("fashion_mnist", label_fraction=0.01)
    assert torch.equal(xy(again, "train")[0], xy(bundle, "train")[0])  # seeded
    other = build("fashion_mnist", label_fraction=0.01, split_seed=1)
    assert not torch.equal(xy(other, "train")[0], xy(bundle, "train")[0])


def test_fashion_mnist_classes_for_transfer_learning(tmp_path):
    require_fashion()
    bundle = build("fashion_mnist", classes=["Sandal", "Sneaker", 9], max_train=300, augment={"hflip": 0.5})
    assert bundle.info["label_names"] == ["Sandal", "Sneaker", "Ankle boot"] and bundle.info["num_classes"] == 3
    assert bundle.info["n_train"] == 300 and bundle.info["n_test"] == 3000
    labels = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    keep = np.isin(labels, [5, 7, 9])
    np.testing.assert_array_equal(xy(bundle, "test")[1].numpy(), np.searchsorted([5, 7, 9], labels[keep]))
    assert isinstance(bundle.augment, BatchAugment) and bundle.augment.config.hflip == 0.5
    pre = bundle.preprocessing
    assert bundle.augment.pad_value == pytest.approx([-pre["mean"][0] / pre["std"][0]])


def test_fashion_mnist_missing_files_say_which_package_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*data.path"):
        build("fashion_mnist", path=str(tmp_path))


def test_prepare_images_of_fashion_pngs_reproduces_the_test_tensors(fashion, tmp_path):
    px = raw(fashion, "test")[:5, ..., 0]
    paths = []
    for i, img in enumerate(px):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    assert torch.equal(prepare_images(fashion.preprocessing, paths), xy(fashion, "test")[0][:5])


# --- digits ----------------------------------------------------------------------------------------------------


def test_digits_from_scikit_learn():
    from sklearn.datasets import load_digits

    bundle = build("digits")
    assert (bundle.info["n_train"], bundle.info["n_val"], bundle.info["n_test"]) == (1294, 144, 359)
    assert xy(bundle, "train")[0].shape == (1294, 1, 8, 8)
    assert bundle.model_defaults["in_features"] == 64 and bundle.info["num_classes"] == 10
    all_px = np.concatenate([raw(bundle, s) for s in ("train", "val", "test")])[..., 0]
    expected = np.round(load_digits().images * 255 / 16).astype(np.uint8)
    assert sorted(map(bytes, all_px)) == sorted(map(bytes, expected))
    test_y = np.bincount(xy(bundle, "test")[1].numpy())
    assert test_y.min() >= 35 and test_y.max() <= 37  # stratified: 20 % of ~180 per class
    with pytest.raises(ConfigError, match="data.path: not used"):
        ImageDataConfig(name="digits", path="x")


# --- image folders ---------------------------------------------------------------------------------------------


def color_image(label: int, i: int, size: tuple[int, int] = (10, 8)) -> np.ndarray:
    rng = np.random.default_rng(100 * label + i)
    img = rng.integers(0, 80, size=(*size, 3), dtype=np.uint8)
    img[..., label] += 150  # class 0 reddish, class 1 greenish
    return img


def write_folder(root: Path, per_class: int = 6, gray: bool = False, sizes=None) -> dict[str, list[Path]]:
    files = {}
    for label, cls in enumerate(["cat", "dog"]):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = sizes[i % len(sizes)] if sizes else (10, 8)
            img = color_image(label, i, size)
            pil = Image.fromarray(img[..., label]) if gray else Image.fromarray(img)
            path = root / cls / f"{i:02d}.png"
            pil.save(path)
            files.setdefault(cls, []).append(path)
    return files


def test_image_folder_with_train_val_test_folders(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        write_folder(tmp_path / split, per_class=n)
    bundle = build("image_folder", path=str(tmp_path))
    assert (bundle.info["n_train"], bundle.info["n_val"], bundle.info["n_test"]) == (12, 4, 6)
    assert bundle.info["label_names"] == ["cat", "dog"] and bundle.info["skipped_files"] == []
    assert xy(bundle, "train")[0].shape == (12, 3, 10, 8) and bundle.preprocessing["input_mode"] == "RGB"
    expected = np.stack([np.asarray(Image.open(tmp_path / "test" / c / f"{i:02d}.png")) for c in ("cat", "dog")
                         for i in range(3)])
    np.testing.assert_array_equal(raw(bundle, "test"), expected)
    np.testing.assert_array_equal(xy(bundle, "test")[1].numpy(), [0, 0, 0, 1, 1, 1])
    (tmp_path / "test" / "bird").mkdir()
    with pytest.raises(DataError, match="bird: class folder not in"):
        build("image_folder", path=str(tmp_path))


def test_flat_image_folder_is_split_stratified(tmp_path):
    write_folder(tmp_path, per_class=10)
    bundle = build("image_folder", path=str(tmp_path), test_fraction=0.2, val_size=0.25)
    assert (bundle.info["n_train"], bundle.info["n_val"], bundle.info["n_test"]) == (12, 4, 4)
    for split in ("train", "val", "test"):
        counts = np.bincount(xy(bundle, split)[1].numpy(), minlength=2)
        assert counts[0] == counts[1]
    files = bundle.info["files"]
    assert len(set(files["train"]) | set(files["val"]) | set(files["test"])) == 20


def test_image_folder_skips_and_counts_a_corrupt_file_or_stops_when_strict(tmp_path, capsys):
    write_folder(tmp_path / "train")
    bad = tmp_path / "train" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image, ignored")
    bundle = build("image_folder", path=str(tmp_path), val_size=0, test_fraction=0)
    assert bundle.info["n_train"] == 12
    skipped = bundle.info["skipped_files"]
    assert len(skipped) == 1 and skipped[0]["file"] == str(bad) and skipped[0]["reason"]
    err = capsys.readouterr().err
    assert "skipped 1 image file" in err and "broken.png" in err
    with pytest.raises(DataError, match="broken.png: cannot read the image"):
        build("image_folder", path=str(tmp_path), val_size=0, strict=True)


def test_image_folder_does_not_follow_links_out_of_the_folder(tmp_path):
    data = tmp_path / "data"
    write_folder(data)
    outside = tmp_path / "secret.png"
    Image.fromarray(color_image(0, 99)).save(outside)
    (data / "cat" / "link.png").symlink_to(outside)
    (data / "cat" / "inside.png").symlink_to(data / "cat" / "00.png")
    bundle = build("image_folder", path=str(data), val_size=0, test_fraction=0)
    assert bundle.info["n_train"] == 13  # 12 files + the link that stays inside
    assert [s["file"] for s in bundle.info["skipped_files"]] == [str(data / "cat" / "link.png")]


def test_image_folder_channels_gray_auto_and_forced(tmp_path):
    write_folder(tmp_path / "g", gray=True)
    gray = build("image_folder", path=str(tmp_path / "g"), val_size=0, test_fraction=0)
    assert gray.preprocessing["input_mode"] == "L" and xy(gray, "train")[0].shape[1] == 1
    rgb = build("image_folder", path=str(tmp_path / "g"), val_size=0, test_fraction=0, channels=3)
    x = xy(rgb, "train")[0]
    assert x.shape[1] == 3 and np.array_equal(raw(rgb, "train")[..., 0], raw(rgb, "train")[..., 2])
    write_folder(tmp_path / "c")
    forced = build("image_folder", path=str(tmp_path / "c"), val_size=0, test_fraction=0, channels=1)
    first = Image.open(tmp_path / "c" / "cat" / "00.png").convert("L")
    np.testing.assert_array_equal(raw(forced, "train")[0, ..., 0], np.asarray(first))


def test_image_folder_resizes_to_the_first_image_or_image_size(tmp_path):
    write_folder(tmp_path, sizes=[(10, 8), (12, 12), (6, 9)])
    first = build("image_folder", path=str(tmp_path), val_size=0, test_fraction=0)
    assert xy(first, "train")[0].shape == (12, 3, 10, 8)
    sized = build("image_folder", path=str(tmp_path), val_size=0, test_fraction=0, image_size=16)
    assert xy(sized, "train")[0].shape == (12, 3, 16, 16) and sized.model_defaults["image_size"] == 16


def test_prepare_images_reproduces_the_training_tensors_of_the_same_files(tmp_path):
    write_folder(tmp_path, per_class=8, sizes=[(10, 8), (12, 12), (6, 9)])
    ops = [{"op": "grayscale"}, {"op": "equalize"}]
    bundle = build("image_folder", path=str(tmp_path), image_size=[10, 10], ops=ops)
    pre = bundle.preprocessing
    assert pre["channels"] == 1 and pre["input_mode"] == "RGB" and pre["ops"] == ops
    for split in ("train", "val", "test"):
        files = [Path(f) for f in bundle.info["files"][split]]
        assert torch.equal(prepare_images(pre, files), xy(bundle, split)[0])
    with pytest.raises(DataError, match="nope.png"):
        prepare_images(pre, [tmp_path / "nope.png"])


def test_denormalize_inverts_the_normalization(tmp_path):
    write_folder(tmp_path)
    bundle = build("image_folder", path=str(tmp_path), val_size=0, test_fraction=0)
    px = raw(bundle, "train")
    assert px.dtype == np.uint8 and px.shape == (12, 10, 8, 3)
    np.testing.assert_array_equal(px[0], np.asarray(Image.open(tmp_path / "cat" / "00.png")))


# --- batched augmentation --------------------------------------------------------------------------------------


def distinct_images(b: int = 64, c: int = 2, h: int = 7, w: int = 9) -> torch.Tensor:
    """Every pixel of every sample a different positive number, so a crop window identifies its offset."""
    return torch.arange(1, b * c * h * w + 1, dtype=torch.float32).reshape(b, c, h, w)


def test_crop_is_a_shifted_window_of_the_padded_image_at_a_random_offset_per_sample():
    torch.manual_seed(0)
    x, p = distinct_images(), 2
    aug = BatchAugment(AugmentConfig(crop_padding=p), pad_value=[-1.0, -2.0])
    out = aug({"x": x, "y": torch.arange(64)})
    padded = torch.cat([F.pad(x[:, :1], (p,) * 4, value=-1.0), F.pad(x[:, 1:], (p,) * 4, value=-2.0)], dim=1)
    offsets = []
    for i in range(len(x)):
        hits = [(t, s) for t in range(2 * p + 1) for s in range(2 * p + 1)
                if torch.equal(out["x"][i], padded[i, :, t:t + 7, s:s + 9])]
        assert len(hits) == 1
        offsets.append(hits[0])
    assert len(set(offsets)) > 10  # offsets drawn per sample, over the 25 possible
    assert torch.equal(out["y"], torch.arange(64))


def test_flip_with_probability_one_zero_and_half():
    x = distinct_images()
    torch.manual_seed(0)
    assert torch.equal(BatchAugment(AugmentConfig(hflip=1.0))({"x": x})["x"], torch.flip(x, dims=[3]))
    assert torch.equal(BatchAugment(AugmentConfig())({"x": x})["x"], x)
    big = distinct_images(b=2000, c=1, h=2, w=3)
    out = BatchAugment(AugmentConfig(hflip=0.5))({"x": big})["x"]
    flipped = (out == torch.flip(big, dims=[3])).flatten(1).all(dim=1)
    kept = (out == big).flatten(1).all(dim=1)
    assert bool((flipped ^ kept).all())  # each sample wholly flipped or wholly kept
    assert 0.45 < flipped.float().mean().item() < 0.55


def test_eval_mode_and_unknown_keys_pass_through():
    aug = BatchAugment(AugmentConfig(crop_padding=3, hflip=1.0, erasing=1.0))
    batch = {"x": distinct_images(), "y": torch.arange(64)}
    aug.eval()
    assert aug(batch) is batch
    aug.train()
    assert aug({"input_ids": torch.ones(2, 3)})["input_ids"].shape == (2, 3)
    with pytest.raises(DataError, match=r"\(B, C, H, W\)"):
        aug({"x": torch.ones(4, 5)})


@pytest.mark.parametrize("value", ["zero", "random"])
def test_erasing_fills_one_rectangle_of_bounded_area_and_aspect_per_sample(value):
    torch.manual_seed(1)
    B, C, H, W = 300, 2, 32, 32
    x = torch.full((B, C, H, W), 5.0)
    out = BatchAugment(AugmentConfig(erasing=1.0, erasing_value=value))({"x": x})["x"]
    changed = out != x  # (B, C, H, W)
    assert torch.equal(changed[:, 0], changed[:, 1])  # the same rectangle in every channel
    rects = set()
    for i in range(B):
        rows = torch.nonzero(changed[i, 0].any(dim=1)).flatten()
        cols = torch.nonzero(changed[i, 0].any(dim=0)).flatten()
        assert len(rows) and len(cols), "p=1 erases every sample (a 32x32 image always fits a rectangle)"
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        h, w = int(bottom - top), int(right - left)
        assert int(changed[i, 0].sum()) == h * w  # one solid rectangle, nothing outside it
        if value == "zero":
            assert bool((out[i, :, top:bottom, left:right] == 0).all())
        # rounding h and w to whole pixels moves the area by at most (h + w) / 2 + 1/4
        slack = (h + w) / 2 + 0.25
        assert ERASING_AREA[0] * H * W - slack <= h * w <= ERASING_AREA[1] * H * W + slack
        assert ERASING_ASPECT[0] * 0.5 < h / w < ERASING_ASPECT[1] * 2 and h < H and w < W
        rects.add((int(top), int(left), h, w))
    assert len(rects) > 200  # independent per sample


def test_channels_last_batches_augment_like_contiguous_ones():
    x = torch.randn(16, 3, 8, 8)
    aug = BatchAugment(AugmentConfig(crop_padding=2, hflip=0.5, erasing=0.5), pad_value=[0.5, -0.5, 1.0])
    torch.manual_seed(3)
    a = aug({"x": x})["x"]
    torch.manual_seed(3)
    b = aug({"x": x.contiguous(memory_format=torch.channels_last)})["x"]
    assert torch.equal(a, b)


def test_erasing_probability_and_same_seed_same_result():
    x = torch.full((2000, 1, 16, 16), 3.0)
    aug = BatchAugment(AugmentConfig(crop_padding=2, hflip=0.5, erasing=0.3))
    torch.manual_seed(7)
    a = aug({"x": x})["x"]
    torch.manual_seed(7)
    b = aug({"x": x})["x"]
    assert torch.equal(a, b)
    c = aug({"x": x})["x"]
    assert not torch.equal(a, c)
    erasing_only = BatchAugment(AugmentConfig(erasing=0.3))({"x": x})["x"]
    share = (erasing_only != x).flatten(1).any(dim=1).float().mean().item()
    assert 0.25 < share < 0.35


# --- images for generative models (task: generation) -----------------------------------------------------------


def test_generation_data_keeps_pixels_in_unit_range_and_the_labels(tmp_path):
    x, y, tx, ty = write_idx_set(tmp_path / "gen")
    bundle = build("idx", path=str(tmp_path / "gen"), val_size=6, task="generation")
    assert bundle.info["task"] == "generation" and bundle.preprocessing["task"] == "generation"
    assert bundle.preprocessing["mean"] == [0.0] and bundle.preprocessing["std"] == [1.0]
    test_x, test_y = xy(bundle, "test")
    torch.testing.assert_close(test_x[:, 0], torch.from_numpy(tx).float() / 255, rtol=0, atol=1e-6)
    assert torch.equal(test_y, torch.from_numpy(ty).long())  # class-conditional models read them
    train = raw(bundle, "train").astype(np.float64) / 255  # (N, H, W, 1)
    np.testing.assert_allclose(bundle.info["pixel_means"], train.mean(axis=0).transpose(2, 0, 1), atol=1e-6)
    assert bundle.info["generation"]["iwae_k"] == 0 and bundle.info["binarized"] is None


def test_static_binarization_is_drawn_once_and_follows_the_intensities(tmp_path):
    write_idx_set(tmp_path / "bin", n_train=400)
    a = build("idx", path=str(tmp_path / "bin"), val_size=6, task="generation", binarize="sample")
    b = build("idx", path=str(tmp_path / "bin"), val_size=6, task="generation", binarize="sample")
    gray = build("idx", path=str(tmp_path / "bin"), val_size=6, task="generation")
    xa, xg = xy(a, "train")[0], xy(gray, "train")[0]
    assert set(xa.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(xa, xy(b, "train")[0])  # static: the same draw on every build
    assert xa.mean().item() == pytest.approx(xg.mean().item(), abs=0.01)  # Bernoulli(p): mean p
    other = build("idx", path=str(tmp_path / "bin"), val_size=6, task="generation", binarize="sample", split_seed=1)
    assert not torch.equal(xy(other, "test")[0], xy(a, "test")[0])
    t = build("idx", path=str(tmp_path / "bin"), val_size=6, task="generation", binarize="threshold")
    assert torch.equal(xy(t, "test")[0], (xy(gray, "test")[0] >= 128 / 255).float())


@pytest.mark.parametrize("key", ["binarize", "generation"])
def test_generation_options_need_the_generation_task(key):
    value = "sample" if key == "binarize" else {"iwae_k": 10}
    with pytest.raises(ConfigError, match=rf"data\.{key}: only for task: generation"):
        ImageDataConfig(name="digits", **{key: value})
