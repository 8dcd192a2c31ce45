"""Semantic segmentation: a class per pixel, background included (the data's `segment_names`).

Metrics: pixel accuracy, mIoU, mean Dice, and each class's IoU on the train and test splits (the validation split,
evaluated during training, keeps to the first three, so that its curves stay few) (`dlforge.eval.segmentation`).
Report: plots/segmentation.png (test images beside their true and predicted maps, a colour per class, with a
legend), plots/confusion.png (each true class's pixels, in percent, by predicted class), and eval.json's
`test_per_class` (per class name: iou, dice, pixels). Predict: image files, prepared as the training images, to a
class map each at the image's own size (the logits resized bilinear, then the argmax), written as a palette PNG
whose pixel values are the class indices, a colour per class (`dlforge.data.voc.write_mask`, which `voc_masks` reads
back), under the run's predict/ folder; a row per image with its mask file and the pixels of each class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dlforge.errors import ConfigError, DataError
from dlforge.eval.segmentation import SegmentationMetrics
from dlforge.layers.dice import SEGMENTATION_LOSSES
from dlforge.registry import register_task
from dlforge.tasks.base import RunReport, Task, device_of

PLOTTED = 6  # test images in plots/segmentation.png
PREDICT_CHUNK = 32  # images prepared and segmented at a time
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")  # Pillow modes of one colour channel


@register_task("segmentation")
class Segmentation(Task):
    """A class per pixel."""

    name = "segmentation"

    def metric_set(self, num_classes: int = 2, class_names: list[str] | None = None,
                   loss_name: str = "cross_entropy", per_class: bool = True) -> SegmentationMetrics:
        return SegmentationMetrics(num_classes, class_names, loss_name, per_class)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> SegmentationMetrics:
        """Per-class IoU on the train and test splits (eval.json, `dlforge eval`), not on validation, whose rows
        during training stay a few curves (metrics.png)."""
        names = segment_names(info)
        return SegmentationMetrics(len(names), names, loss_name or "cross_entropy", per_class=split != "val")

    def model_options(self, user: dict[str, Any], fields: set[str], info: dict[str, Any], data_name: str
                      ) -> dict[str, Any]:
        """The model's classes are the semantic classes, background included; its loss a segmentation loss."""
        if "num_classes" not in fields:
            raise ConfigError(f"model: data {data_name!r} is segmentation, the model has no classes to predict per "
                              "pixel; use a segmentation model (unet, unet_small, unet_resnet20)")
        loss = user.get("loss")
        if "loss" in fields and loss is not None and loss not in SEGMENTATION_LOSSES:
            raise ConfigError(f"model.loss: {loss!r} is not a segmentation loss; expected one of "
                              f"{', '.join(SEGMENTATION_LOSSES)}")
        return {**user, "num_classes": len(segment_names(info))}

    def test_report(self, run: RunReport) -> dict[str, Any]:
        """plots/segmentation.png, plots/confusion.png (percent of each true class's pixels), per-class IoU."""
        from dlforge.data.images import denormalize
        from dlforge.data.voc import palette
        from dlforge.runs.plots import plot_confusion_matrix, plot_segmentation

        names = segment_names(run.data.info)
        plots = run.run_path / "plots"
        confusion = run.metrics.confusion_matrix()
        if confusion is None:  # nothing was evaluated
            return {}
        percent = [[round(100 * n / max(sum(row), 1)) for n in row] for row in confusion]
        plot_confusion_matrix(percent, names, plots / "confusion.png",
                              title=f"{run.name}: test pixels, % of each true class")
        scores = run.metrics.scores()
        per_class = {name: {"iou": _number(iou), "dice": _number(dice), "pixels": pixels}
                     for name, iou, dice, pixels in zip(names, scores["iou"], scores["dice"], scores["pixels"],
                                                        strict=True)}
        test = run.data.test
        samples = [test[i] for i in range(min(PLOTTED, len(test)))]
        x = torch.stack([s["x"] for s in samples])  # (N, C, H, W)
        pred = segment(run.model, x.to(run.device)).cpu()  # (N, H, W)
        plot_segmentation(denormalize(run.data.preprocessing, x).numpy(), torch.stack([s["y"] for s in samples]),
                          pred, names, palette(len(names)), plots / "segmentation.png",
                          title=f"{run.name}: test images")
        return {"test_per_class": per_class, "segmentation_plot": "plots/segmentation.png"}

    def predict(self, model: torch.nn.Module, input_path: Path) -> list[dict[str, Any]]:
        """A class map per image file (the file itself, or every image under the folder), written as a palette PNG
        in the run's predict/ folder; a row each with the mask file and the pixels of each class."""
        from dlforge.data.images import input_images, prepare_images
        from dlforge.data.voc import write_mask

        pre = model.meta["extra"]["preprocessing.json"]
        names = segment_names(pre)
        files = input_images(Path(input_path))
        sizes = [_image_size(path, pre) for path in files]  # before any work: a wrong image stops it all
        out_dir = Path(model.meta["folder"]).parent / "predict" if "folder" in model.meta else Path("predict")
        rows = []
        for start in range(0, len(files), PREDICT_CHUNK):
            chunk = files[start:start + PREDICT_CHUNK]
            logits = _logits(model, prepare_images(pre, chunk))  # (n, K, h, w)
            for path, size, scores in zip(chunk, sizes[start:start + PREDICT_CHUNK], logits, strict=True):
                mask = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0].argmax(0)
                written = write_mask(out_dir / _mask_name(path, Path(input_path)), mask.numpy().astype(np.uint8))
                counts = torch.bincount(mask.flatten(), minlength=len(names)).tolist()
                rows.append({"line": str(path), "mask": str(written), "height": size[0], "width": size[1],
                             **{f"pixels({n})": c for n, c in zip(names, counts, strict=True)}})
        return rows

    def predict_input(self, preprocessing: dict[str, Any]) -> tuple[str, str] | None:
        channels = preprocessing.get("channels", 3)
        kind = "grayscale" if channels == 1 else "RGB"
        return ("images/", f"an image file, or a folder of them (PNG, JPEG...), {kind} as the training images; gives "
                           "a class map per image at its size, written as a palette PNG of class indices in the "
                           "run's predict/ folder, and the pixels of each class")


def segment_names(info: dict[str, Any]) -> list[str]:
    """The semantic classes of a dataset's info (or a model's preprocessing.json), background first."""
    names = info.get("segment_names")
    if names:
        return [str(n) for n in names]
    return ["background", *[str(n) for n in info["label_names"]]]


@torch.no_grad()
def segment(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The class map (N, H, W) of images (N, C, H, W), the model in eval mode."""
    return _logits(model, x).argmax(dim=1)


@torch.no_grad()
def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        device = device_of(model)  # the CPU for a model without parameters (an ONNX stand-in)
        return model({"x": x.to(device)}).logits.float().cpu()  # (N, K, H, W)
    finally:
        model.train(was_training)


def _image_size(path: Path, pre: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of an image file whose colour channels are the model's: a colour image whose channels all
    agree is gray; a colour image for a grayscale model, or the reverse, is refused."""
    from dlforge.data.imagefiles import pillow

    Image = pillow()
    try:
        with Image.open(path) as im:
            im.load()
            gray = im.mode in GRAY_MODES or _equal_channels(im)
            size = (im.height, im.width)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read the image ({str(exc) or type(exc).__name__})") from None
    channels = pre.get("channels", 3)
    if gray != (channels == 1):
        got = "grayscale" if gray else f"colour ({im.mode})"
        raise DataError(f"{path}: a {got} image; the model reads {channels}-channel "
                        f"{'grayscale' if channels == 1 else 'RGB'} images, as it was trained")
    return size


def _equal_channels(im: Any) -> bool:
    """A colour image (RGB, RGBA, a palette) whose red, green and blue are the same everywhere: gray in colour."""
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _mask_name(path: Path, given: Path) -> Path:
    """The mask file's path under predict/: the image's path inside the folder given (its name for a file), .png."""
    relative = path.relative_to(given) if given.is_dir() else Path(path.name)
    return relative.with_suffix(".png")


def _number(value: float) -> float | None:
    return None if value != value else value  # NaN (no pixel, true or predicted) -> null in eval.json
