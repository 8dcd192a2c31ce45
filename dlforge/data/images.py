"""Image classification data: Fashion-MNIST, IDX files, scikit-learn's digits and folders of image files.

    data: {name: fashion_mnist, val_size: 5000, augment: {crop_padding: 2, hflip: 0.5}}
    data: {name: image_folder, path: photos/, image_size: 64, channels: auto}
    data: {name: fashion_mnist, task: generation}                     # pixels in [0, 1], for generative models
    data: {name: fashion_mnist, task: generation, binarize: sample}   # 0/1 pixels, drawn once (static)

Every source yields uint8 images (N, H, W, C) and class ids per split, and one `build_images` does the rest alike for
all: keep the chosen `classes` (relabelled 0..k-1), carve out the splits the source lacks (test by `test_fraction`,
validation by `val_size`, both stratified), thin the training labels (`label_fraction`, `max_train`), resize, run the
OpenCV `ops`, then normalize each channel with the mean and std of the train split only. All of it goes into
`preprocessing`, so that `prepare_images` turns new image files into exactly the tensors the model was trained on.

Batches are {"x": float32 (B, C, H, W), "y": int64 (B,)}. With `task: generation` the images are for generative
models (`dlforge.tasks.generation`): not standardized but scaled to [0, 1] (mean 0, std 1 in `preprocessing`), the
class ids kept for class-conditional models, and `binarize` can make the pixels 0/1: `threshold` at 0.5, or `sample`,
a Bernoulli draw with each pixel's intensity as its probability, made once per image from `split_seed` (the
statically binarized MNIST of Salakhutdinov & Murray 2008 and the VAE literature).

Resizing is bilinear with antialiasing (torch's, modeled on Pillow's), the same code for training data and new files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dlforge.config import DataConfig
from dlforge.data.augment import AugmentConfig, BatchAugment
from dlforge.data.dataset import DataBundle, TensorDictDataset, fingerprint_tensors
from dlforge.data.idx import read_idx
from dlforge.data.imagefiles import (
    IMAGE_SUFFIXES,
    Source,
    Split,
    as_hwc,
    image_files,
    pillow,
    read_folder,
    resize_images,
    to_channels,
)
from dlforge.data.imageops import run_ops, validate_ops
from dlforge.errors import ConfigError, DataError
from dlforge.registry import register_dataset

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]


class GenerationEval(BaseModel):
    """How a generative model on these images is scored at the end of its run (`dlforge.tasks.generation`)."""

    model_config = ConfigDict(extra="forbid")
    iwae_k: int = Field(0, ge=0, description="importance samples of the IWAE log-likelihood bound (VAE; 0: none)")
    iwae_images: int = Field(1000, ge=1, description="first images of a split scored with the IWAE bound")
    extractor: str | None = Field(None, description="FID, KID and IS on: a classifier run or model folder, or a "
                                     "file of pytorch-fid's Inception-v3 weights (.pth)")
    samples: int = Field(1000, ge=2, description="generated images scored against as many real ones")


class ImageDataConfig(DataConfig):
    """Image classification data: fashion_mnist, idx (IDX files), digits (scikit-learn), image_folder."""

    path: str | None = Field(None, description="folder of the files (idx, image_folder; fashion_mnist: override)")
    val_size: int | float = Field(
        0.1, description="validation images held out of train: a count, or a fraction (default 5000 for fashion_mnist)"
    )
    test_fraction: float = Field(0.2, ge=0, lt=0.9, description="test share, when the source has no test split")
    split_seed: int = 0
    classes: list[int | str] | None = Field(None, description="keep these classes (ids or names), relabelled 0..k-1")
    label_fraction: float = Field(1.0, gt=0, le=1, description="keep this stratified share of the training images")
    max_train: int | None = Field(None, ge=1, description="at most this many training images (smoke tests)")
    label_names: list[str] | None = Field(None, description="idx: names of the class ids 0, 1, ...")
    channels: Literal[1, 3, "auto"] = Field("auto", description="1: grayscale, 3: RGB, auto: RGB unless all gray")
    image_size: int | list[int] | None = Field(None, description="resize to this side or [height, width] on load")
    ops: list[dict[str, Any]] = Field(default_factory=list, description="OpenCV steps, e.g. [{op: canny}]")
    augment: AugmentConfig | None = Field(None, description="batched augmentation of training batches")
    task: Literal["classification", "generation"] = Field("classification", description="generation: pixels in "
                                                          "[0, 1] for generative models (autoencoder, VAE, ...)")
    binarize: Literal["threshold", "sample"] | None = Field(None, description="task generation: 0/1 pixels, at "
                                                            "0.5 or drawn once per image (static binarization)")
    generation: GenerationEval | None = Field(None, description="task generation: the end-of-run scores")
    strict: bool = Field(False, description="image_folder: stop at an unreadable file instead of skipping it")

    @model_validator(mode="before")
    @classmethod
    def _default_val_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("val_size") is None:
            data = {**data, "val_size": 5000 if data.get("name") == "fashion_mnist" else 0.1}
        return data

    @model_validator(mode="after")
    def _check(self) -> ImageDataConfig:
        if self.name in ("idx", "image_folder") and not self.path:
            raise ConfigError(f"data.path: required for dataset {self.name!r}")
        if self.name == "digits" and self.path is not None:
            raise ConfigError("data.path: not used by the bundled dataset 'digits'; remove it")
        if self.label_names is not None and self.name != "idx":
            raise ConfigError(f"data.label_names: only for dataset 'idx'; {self.name!r} knows its class names")
        if isinstance(self.val_size, float) and not 0 <= self.val_size < 1:
            raise ConfigError(f"data.val_size: a fraction must be in [0, 1), got {self.val_size}")
        if isinstance(self.val_size, int) and self.val_size < 0:
            raise ConfigError(f"data.val_size: a count must be >= 0, got {self.val_size}")
        if self.classes is not None and len(self.classes) < 2:
            raise ConfigError(f"data.classes: keep at least 2 classes, got {self.classes}")
        if self.image_size is not None:
            sides = [self.image_size] if isinstance(self.image_size, int) else self.image_size
            if len(sides) not in (1, 2) or min(sides) < 1:
                got = self.image_size
                raise ConfigError(f"data.image_size: expected a positive side or [height, width], got {got}")
        validate_ops(self.ops, "data.ops")
        for key in ("binarize", "generation"):
            if getattr(self, key) is not None and self.task != "generation":
                raise ConfigError(f"data.{key}: only for task: generation (images for generative models)")
        return self

    def size(self) -> tuple[int, int] | None:
        """`image_size` as (height, width), or None to keep the source's size."""
        if self.image_size is None:
            return None
        sides = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        return sides[0], sides[-1]


# --- the registered data sets ----------------------------------------------------------------------------------


@register_dataset(ImageDataConfig)
def fashion_mnist(config: ImageDataConfig) -> DataBundle:
    """Fashion-MNIST (Debian dataset-fashion-mnist): 70k 28x28 grayscale clothing images, 10 classes."""
    folder = Path(config.path) if config.path else FASHION_DIR
    missing = [n for pair in FASHION_FILES.values() for n in pair if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder / missing[0]}: Fashion-MNIST not found; install the Debian package "
                        f"dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or set data.path")
    splits = {s: _idx_split(folder / images, folder / labels) for s, (images, labels) in FASHION_FILES.items()}
    return build_images(Source(splits, FASHION_LABELS, str(folder)), config)


@register_dataset(ImageDataConfig)
def idx(config: ImageDataConfig) -> DataBundle:
    """IDX files in data.path (train-images*, train-labels*, optional t10k-* or test-*), e.g. MNIST."""
    folder = Path(config.path)
    if not folder.is_dir():
        raise DataError(f"{folder}: data.path is not a folder; expected train-images* and train-labels* IDX files")
    splits = {"train": _idx_split(_one(folder, "train-images"), _one(folder, "train-labels"))}
    test_images = _one(folder, "t10k-images", "test-images", required=False)
    if test_images is not None:
        splits["test"] = _idx_split(test_images, _one(folder, "t10k-labels", "test-labels"))
    top = max(int(s.y.max()) for s in splits.values()) + 1
    names = config.label_names or [str(i) for i in range(top)]
    if len(names) < top:
        raise DataError(f"{folder}: the labels go up to {top - 1} but data.label_names has {len(names)} names")
    return build_images(Source(splits, list(names), str(folder)), config)


@register_dataset(ImageDataConfig)
def digits(config: ImageDataConfig) -> DataBundle:
    """Handwritten digits (scikit-learn): 1797 8x8 grayscale images, 10 classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[..., None]  # values 0..16 -> 0..255, (N, 8, 8, 1)
    return build_images(Source({"train": Split(x, d.target.astype(np.int64))}, [str(i) for i in range(10)],
                               "sklearn digits"), config)


@register_dataset(ImageDataConfig)
def image_folder(config: ImageDataConfig) -> DataBundle:
    """Image files in class folders: data.path/{train,val,test}/<class>/*.png|jpg|..., or data.path/<class>/."""
    return build_images(read_folder(config), config)


# --- reading ---------------------------------------------------------------------------------------------------


def _one(folder: Path, *prefixes: str, required: bool = True) -> Path | None:
    for prefix in prefixes:
        found = sorted(p for p in folder.glob(prefix + "*") if p.is_file())
        if found:
            return found[0]
    if required:
        raise DataError(f"{folder}: no {' or '.join(p + '*' for p in prefixes)} file; data.path must hold IDX files "
                        f"named like MNIST's (train-images-idx3-ubyte.gz, ...)")
    return None


def _idx_split(images_path: Path, labels_path: Path) -> Split:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DataError(f"{images_path}: expected images (N, H, W) or (N, H, W, 3), got shape {images.shape}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
            raise DataError(f"{images_path}: expected pixels 0..255 (ubyte), got {images.dtype}")
        images = images.astype(np.uint8)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
        raise DataError(f"{labels_path}: expected one non-negative integer label per image, got {labels.dtype} "
                        f"{labels.shape}")
    if len(labels) != len(images) or len(labels) == 0:
        raise DataError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}")
    return Split(images, labels.astype(np.int64))


# --- building --------------------------------------------------------------------------------------------------


def build_images(source: Source, config: ImageDataConfig) -> DataBundle:
    """Select classes, split, thin, resize, run ops and normalize `source` as `config` says."""
    splits, label_names = dict(source.splits), source.label_names
    if config.classes is not None:
        splits, label_names = _select_classes(splits, label_names, config.classes, source.name)
    if "test" not in splits and config.test_fraction > 0:
        splits["train"], splits["test"] = _split(splits["train"], config.test_fraction, config.split_seed, "test")
    if "val" not in splits and config.val_size:
        splits["train"], splits["val"] = _split(splits["train"], config.val_size, config.split_seed, "val")
    splits["train"] = _thin(splits["train"], config)

    from_arrays = "input_mode" not in source.info  # IDX or scikit-learn; image folders are read in their mode
    mode = source.info.get("input_mode")
    input_size = config.size() or splits["train"].x.shape[1:3]
    checked = validate_ops(config.ops, "data.ops")
    for s in splits.values():
        x = resize_images(s.x, input_size)
        if from_arrays:
            x, mode = to_channels(x, config.channels)
        s.x = _apply_ops(x, checked)
    if config.binarize is not None:
        for i, name in enumerate(sorted(splits)):
            splits[name].x = binarize(splits[name].x, config.binarize, [config.split_seed, i])

    mean, std = channel_stats(splits["train"].x)
    N, H, W, C = splits["train"].x.shape
    if config.task == "generation":  # pixels / 255: what generative models read and write
        mean, std = [0.0] * C, [1.0] * C
    preprocessing = {
        "kind": "image", "task": config.task, "mean": mean, "std": std, "channels": C, "image_size": [H, W],
        "input_mode": mode, "input_size": [int(v) for v in input_size], "ops": config.ops,
        "label_names": label_names,
    }  # fmt: skip
    datasets = {name: TensorDictDataset({"x": normalize(s.x, mean, std), "y": torch.from_numpy(s.y)})
                for name, s in splits.items()}
    k = len(label_names)
    sizes = {f"n_{n}": len(splits[n].y) if n in splits else 0 for n in ("train", "val", "test")}
    info = {"task": config.task, "num_classes": k, "label_names": label_names, "modality": "image",
            "source": source.name, "image_shape": [C, H, W], **sizes}
    info.update({key: v for key, v in source.info.items() if key != "input_mode"})
    if config.task == "generation":
        info["binarized"] = config.binarize
        info["generation"] = (config.generation or GenerationEval()).model_dump()
        pixels = splits["train"].x.astype(np.float64).mean(axis=0) / 255  # (H, W, C): the independent-pixel baseline
        info["pixel_means"] = np.round(pixels.transpose(2, 0, 1), 6).tolist()  # (C, H, W)
    if splits["train"].files is not None:
        info["files"] = {name: s.files for name, s in splits.items()}
    augment = None
    if config.augment is not None:  # pad with the normalized value of a black pixel
        augment = BatchAugment(config.augment, pad_value=[-m / s for m, s in zip(mean, std, strict=True)])
    blobs = [torch.from_numpy(a) for name in ("train", "val", "test") if name in splits
             for a in (splits[name].x, splits[name].y)]
    return DataBundle(
        datasets["train"], datasets.get("val"), datasets.get("test"),
        info=info,
        model_defaults={"in_channels": C, "image_size": H if H == W else [H, W], "num_classes": k,
                        "in_features": C * H * W, "out_features": k},
        preprocessing=preprocessing,
        fingerprint=fingerprint_tensors(*blobs),
        augment=augment,
    )


def _select_classes(splits: dict[str, Split], names: list[str], wanted: list[int | str], source: str):
    ids = []
    for c in wanted:
        if isinstance(c, str) and c in names:
            ids.append(names.index(c))
        elif isinstance(c, int) and 0 <= c < len(names):
            ids.append(c)
        else:
            raise DataError(f"{source}: data.classes: unknown class {c!r}; known: ids 0..{len(names) - 1} or names "
                            f"{', '.join(names)}")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"data.classes: a class is listed twice in {wanted}")
    lut = np.full(len(names), -1, dtype=np.int64)
    lut[ids] = np.arange(len(ids))  # old id -> new id, -1 for dropped classes
    out = {}
    for name, s in splits.items():
        new = lut[s.y]
        kept = s.take(np.flatnonzero(new >= 0))
        kept.y = new[new >= 0]
        out[name] = kept
    return out, [names[i] for i in ids]


def _split(s: Split, size: int | float, seed: int, part: str) -> tuple[Split, Split]:
    """Stratified split of `s` into (rest, held out) with `size` images (a count or a share) held out, seeded.

    Each class gives its share of the held-out count (largest remainders round it) and keeps at least one image in
    the rest; numpy only, as importing scikit-learn would take longer than loading 70k images.
    """
    key = "data.test_fraction" if part == "test" else "data.val_size"
    n = len(s.y)
    held = int(size) if isinstance(size, int) else int(round(size * n))
    if not 0 < held < n:
        raise DataError(f"{key}: {size} of {n} training images holds out {held}; expected between 1 and {n - 1}")
    classes, counts = np.unique(s.y, return_counts=True)
    exact = counts * (held / n)
    take = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - take), kind="stable")  # largest remainders first
    take[order[:held - take.sum()]] += 1
    take = np.minimum(take, counts - 1)
    rng = np.random.default_rng([seed, 0 if part == "test" else 1])
    chosen = [rng.choice(np.flatnonzero(s.y == c), size=k, replace=False) for c, k in zip(classes, take, strict=True)]
    mask = np.zeros(n, dtype=bool)
    mask[np.concatenate(chosen)] = True
    return s.take(np.flatnonzero(~mask)), s.take(np.flatnonzero(mask))


def _thin(s: Split, config: ImageDataConfig) -> Split:
    """`label_fraction` of each class (at least one image each), then at most `max_train` images; seeded."""
    rng = np.random.default_rng(config.split_seed)
    rows = np.arange(len(s.y))
    if config.label_fraction < 1:
        kept = []
        for c in np.unique(s.y):
            members = rows[s.y == c]
            n = max(1, round(config.label_fraction * len(members)))
            kept.append(rng.choice(members, size=n, replace=False))
        rows = np.sort(np.concatenate(kept))
    if config.max_train is not None and len(rows) > config.max_train:
        rows = np.sort(rng.choice(rows, size=config.max_train, replace=False))
    return s.take(rows) if len(rows) < len(s.y) else s


def _apply_ops(images: np.ndarray, checked: list) -> np.ndarray:
    """Run the checked OpenCV ops on each uint8 image of (N, H, W, C); returns (N, H', W', C')."""
    if not checked:
        return images
    gray = images.shape[3] == 1
    return np.stack([as_hwc(run_ops(img[..., 0] if gray else img, checked)) for img in images])


def binarize(images: np.ndarray, how: str, seed: list[int]) -> np.ndarray:
    """uint8 images -> 0/255: `threshold` at 128, or `sample`, each pixel 255 with probability pixel / 255, drawn once
    from `seed` (the same split and seed give the same images)."""
    if how == "threshold":
        return np.where(images >= 128, 255, 0).astype(np.uint8)
    rng = np.random.default_rng(seed)
    return np.where(rng.random(images.shape) < images / 255.0, 255, 0).astype(np.uint8)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std of uint8 (N, H, W, C) in [0, 1] units, exact from a histogram."""
    levels = np.arange(256, dtype=np.float64)
    mean, std = [], []
    for c in range(images.shape[3]):
        channel = torch.from_numpy(np.ascontiguousarray(images[..., c])).reshape(-1)
        counts = torch.bincount(channel, minlength=256).numpy().astype(np.float64)  # numpy's casts to int64: 20x slower
        m = (counts * levels).sum() / counts.sum()
        var = (counts * (levels - m) ** 2).sum() / counts.sum()
        mean.append(float(m / 255))
        std.append(float(np.sqrt(var) / 255) or 1.0)  # a constant channel keeps std 1
    return mean, std


def normalize(images: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) = (pixel / 255 - mean) / std, per channel."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(torch.float32)
    scale = torch.tensor([1 / (255 * s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32).view(1, -1, 1, 1)
    return x.mul_(scale).add_(shift)


# --- new inputs ------------------------------------------------------------------------------------------------


def input_images(path: Path) -> list[Path]:
    """What `predict` reads for an image model: an image file, or every image file under a folder (sorted)."""
    if path.is_dir():
        files = image_files(path, path.resolve(), [])
        if not files:
            raise DataError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    if path.is_file():
        return [path]
    raise DataError(f"{path}: no such file or folder")


def prepare_images(pre: dict[str, Any], paths: list[Path]) -> torch.Tensor:
    """Image files -> float32 (N, C, H, W), prepared exactly as the training images (mode, resize, ops, normalize)."""
    Image = pillow()
    checked = validate_ops(pre["ops"], "preprocessing.ops")
    out = []
    for path in paths:
        try:
            with Image.open(path) as im:
                a = as_hwc(np.array(im.convert(pre["input_mode"])))  # a writable copy
        except FileNotFoundError:
            raise DataError(f"{path}: image file not found") from None
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise DataError(f"{path}: cannot read the image ({str(exc) or type(exc).__name__})") from None
        out.append(_apply_ops(resize_images(a[None], tuple(pre["input_size"])), checked)[0])
    if not out:
        raise DataError("prepare_images: no image files given")
    images = np.stack(out)
    expected = (*pre["image_size"], pre["channels"])
    if images.shape[1:] != expected:
        raise DataError(f"{paths[0]}: prepared to {images.shape[1:]}, the model expects (H, W, C) = {expected}")
    return normalize(images, pre["mean"], pre["std"])


def denormalize(pre: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    """Normalized float (N, C, H, W) -> uint8 (N, H, W, C) pixels, for plotting."""
    mean = torch.tensor(pre["mean"], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(pre["std"], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    pixels = ((x.float() * std + mean) * 255).round().clamp(0, 255)
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).contiguous()
