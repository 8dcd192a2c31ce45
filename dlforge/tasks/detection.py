"""Object detection and instance segmentation: boxes (and masks) of any number of objects per image.

Models: detectors whose `DetectionOutput` carries padded detections in eval mode (`fcos`; `fcos_mask` adds masks).
Metrics: COCO mAP@[.5:.95], AP50, AP75, AP small/medium/large, AR@1/10/100 (and by area) of the boxes, and for
instance segmentation the same of the masks (`mask_` names), over the whole split (`dlforge.eval.detection`);
monitor `val/map` (box mAP, higher is better) to keep the best checkpoint. Report: `plots/detections.png` (test
images, true objects beside the predicted ones) and eval.json's `test_coco` (the full table, AP per class).
Predict: per image file, its detections in the image's own pixels: boxes xyxy, class names, scores, and for
instance segmentation each object's mask as a COCO RLE of the image's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.errors import ConfigError
from dlforge.eval.detection import DetectionMetrics
from dlforge.registry import register_task
from dlforge.tasks.base import RunReport, Task, _spec, device_of
from dlforge.tasks.inputs import PREDICT_BATCH

PLOTTED = 8  # test images drawn in plots/detections.png
PLOT_SCORE = 0.3  # detections drawn there: those scoring at least this (the metrics use them all)
DETECTION_OUTPUTS = ("boxes", "scores", "labels", "detection_mask", "masks", "mask_probs")


@register_task("detection")
class Detection(Task):
    """Boxes and classes of the objects in an image."""

    name = "detection"
    masks = False

    def metric_set(self, masks: bool | None = None, loss_name: str = "") -> DetectionMetrics:
        return DetectionMetrics(self.name, self.masks if masks is None else masks, loss_name)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> DetectionMetrics:
        return DetectionMetrics(self.name, self.masks, loss_name)

    def model_options(self, user: dict[str, Any], fields: set[str], info: dict[str, Any], data_name: str
                      ) -> dict[str, Any]:
        if "score_threshold" not in fields:
            raise ConfigError(f"model.name: data {data_name!r} is {self.name} data, which needs a detector (fcos"
                              f"{', fcos_mask' if not self.masks else ''} or fcos_mask)")
        has_head = "mask_size" in fields
        if self.masks and not has_head:
            raise ConfigError(f"model.name: instance segmentation needs a model with a mask head, e.g. fcos_mask "
                              f"(data {data_name!r})")
        if has_head and not info.get("masks"):
            raise ConfigError(f"model.name: the mask head learns from instance masks, which data {data_name!r} does "
                              f"not load; set data.masks: true or use fcos")
        return user

    def test_report(self, run: RunReport) -> dict[str, Any]:
        """plots/detections.png of the first test images, and the full COCO table of the test split."""
        from dlforge.data.detection import collate_detection, unpad
        from dlforge.data.images import denormalize
        from dlforge.runs.plots_detection import plot_detections

        names = [str(n) for n in run.data.info["label_names"]]
        reports = {"test_coco": run.metrics.table(names)} if run.metrics.results else {}
        test = run.data.test
        n = min(PLOTTED, len(test))
        if n == 0:
            return reports
        batch = collate_detection([test[i] for i in range(n)])
        out = _detect(run.model, {"x": batch["x"]})
        truths, predictions = [], []
        for b, truth in enumerate(unpad(batch)):
            truths.append({k: v.numpy() for k, v in truth.items() if k in ("boxes", "labels", "masks")})
            keep = out.detection_mask[b] & (out.scores[b] >= PLOT_SCORE)
            pred = {"boxes": out.boxes[b][keep], "labels": out.labels[b][keep], "scores": out.scores[b][keep]}
            if out.masks is not None:
                pred["masks"] = out.masks[b][keep]
            predictions.append({k: v.cpu().numpy() for k, v in pred.items()})
        images = denormalize(run.data.preprocessing, batch["x"]).numpy()
        plot_detections(images, truths, predictions, names, run.run_path / "plots" / "detections.png",
                        title=f"{run.name}: test images, true | predicted (score >= {PLOT_SCORE})")
        return reports

    def predict(self, model: torch.nn.Module, input_path: Path) -> list[dict[str, Any]]:
        """Per image: boxes (xyxy, the image's pixels), labels (class names), scores, and masks (COCO RLE)."""
        from dlforge.data import rle
        from dlforge.data.images import input_images, prepare_images
        from dlforge.models.fcos_mask import paste_masks

        pre = model.meta["extra"]["preprocessing.json"]
        files = input_images(Path(input_path))
        x = prepare_images(pre, files)  # one line naming the file when it is not an image
        names = pre["label_names"]
        h, w = x.shape[-2:]
        rows = []
        for start in range(0, len(files), PREDICT_BATCH):
            out = _detect(model, {"x": x[start:start + PREDICT_BATCH]})
            for b, path in enumerate(files[start:start + PREDICT_BATCH]):
                width, height = _image_size(path)
                keep = out.detection_mask[b]
                scale = torch.tensor([width / w, height / h, width / w, height / h])
                boxes = out.boxes[b][keep].cpu() * scale  # the model's pixels -> the image's
                row = {"image": str(path), "width": width, "height": height,
                       "boxes": [[round(v, 2) for v in box] for box in boxes.tolist()],
                       "labels": [names[i] for i in out.labels[b][keep].tolist()],
                       "scores": [round(s, 4) for s in out.scores[b][keep].tolist()]}
                if out.mask_probs is not None:
                    masks = paste_masks(out.mask_probs[b][keep].cpu(), boxes, height, width)
                    row["masks"] = [rle.encode(m.numpy()) for m in masks]
                rows.append(row)
        return rows

    def predict_input(self, preprocessing: dict[str, Any]) -> tuple[str, str] | None:
        what = "boxes (xyxy, in the image's pixels), class names and scores"
        if self.masks:
            what += ", and each object's mask as a COCO RLE"
        return "images/", f"an image file, or a folder of them (PNG, JPEG...); gives per image its detections: {what}"

    def signature(self, data: Any, model: torch.nn.Module) -> dict[str, Any]:
        """Input x; outputs the dense logits and the padded detections (their count D varies: -1)."""
        from dlforge.data.detection import collate_detection

        x = collate_detection([data.train[0]])["x"]
        out = _detect(model, {"x": x})
        outputs = [_spec("logits", out.logits, set())]
        outputs += [_spec(k, getattr(out, k), {1}) for k in DETECTION_OUTPUTS if getattr(out, k) is not None]
        return {"task": self.name, "inputs": [_spec("x", x, set())], "outputs": outputs}


@register_task("instance_segmentation")
class InstanceSegmentation(Detection):
    """Boxes, classes and a mask of each object in an image."""

    name = "instance_segmentation"
    masks = True


@torch.no_grad()
def _detect(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
    """The model's eval-mode Output for `batch` on its device (its training mode restored after)."""
    was_training = model.training
    model.eval()
    try:
        device = device_of(model)
        return model({k: v.to(device) for k, v in batch.items()})
    finally:
        model.train(was_training)


def _image_size(path: Path) -> tuple[int, int]:
    from dlforge.data.imagefiles import pillow

    with pillow().open(path) as im:
        return im.size  # (width, height)
