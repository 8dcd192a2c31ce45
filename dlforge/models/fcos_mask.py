"""FCOS with a mask head: instance segmentation as Mask R-CNN does it (He, Gkioxari, Dollar, Girshick 2017), on a
one-stage detector.

    FCOS (`models.fcos`) -> boxes
    FPN map of stride `mask_stride` -> RoI Align of each box (`layers.boxes.roi_align`, aligned, 2x2 samples per
        bin) (R, dim, S/2, S/2) -> `mask_convs` x (3x3 conv -> ReLU) -> 2x2 transposed conv + ReLU (R, dim, S, S)
        -> 1x1 conv -> one S x S mask logit map per class; the box's class picks its map

Why this head: each object gets its own fixed-size mask, so overlapping items (the canvases let one hide up to 30%
of another) never compete for a pixel, and the mask loss is a plain per-pixel BCE on the crop; the head is small
(a few convs on a 14x14 crop of a stride-4 map) and adds little to a CPU step. CondInst or SOLO-style heads predict
full-image masks per instance, which costs full-resolution work per object and more epochs to converge.

Training: the RoIs are the ground-truth boxes (crowds and padding left out), each jittered by up to `jitter` of its
size per side, so the head also sees the slightly-off boxes the detector will give; the target is the true mask
cropped to the RoI by RoI Align at S x S and thresholded at 0.5 (torchvision's `project_masks_on_boxes`); the loss
is the BCE of the true class's map, averaged over the pixels. Inference: each detection's map is sigmoid'ed and
pasted into the image (`paste_masks`: bilinear over the box, 0 outside it, thresholded at 0.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.layers.boxes import roi_align
from dlforge.models.fcos import FCOS, FCOSConfig, example_objects
from dlforge.models.output import DetectionOutput
from dlforge.registry import register_model

MASK_THRESHOLD = 0.5
CHUNK = 128  # detections whose masks are predicted at once in eval mode


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                threshold: float | None = MASK_THRESHOLD) -> torch.Tensor:
    """Masks (R, S, S) over their boxes (R, 4) xyxy -> (R, height, width) in the image: each pixel centre's place in
    its box, sampled bilinearly from the S x S map (cell centres at (k + 0.5) / S of the box, 0 outside the map's
    edge), 0 outside the box; thresholded (>= threshold, bool) unless threshold is None."""
    r = len(probs)
    if r == 0:
        shape = (0, height, width)
        return torch.zeros(shape, dtype=torch.bool if threshold is not None else probs.dtype, device=probs.device)
    x1, y1, x2, y2 = (boxes[:, i, None].float() for i in range(4))  # (R, 1)
    xs = torch.arange(width, device=probs.device, dtype=torch.float32) + 0.5
    ys = torch.arange(height, device=probs.device, dtype=torch.float32) + 0.5
    gx = (xs[None] - x1) / (x2 - x1).clamp(min=1e-6) * 2 - 1  # (R, W): -1 and 1 are the box's edges
    gy = (ys[None] - y1) / (y2 - y1).clamp(min=1e-6) * 2 - 1  # (R, H)
    grid = torch.stack([gx[:, None, :].expand(r, height, width), gy[:, :, None].expand(r, height, width)], dim=-1)
    pasted = F.grid_sample(probs[:, None].float(), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)[:, 0]  # (R, H, W)
    inside = (gx.abs() <= 1)[:, None, :] & (gy.abs() <= 1)[:, :, None]
    pasted = pasted * inside
    return pasted >= threshold if threshold is not None else pasted


class MaskHead(nn.Module):
    """RoI features (R, dim, S/2, S/2) -> mask logits (R, num_classes, S, S)."""

    def __init__(self, dim: int, convs: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(convs):
            layers += [nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.up = nn.ConvTranspose2d(dim, dim, 2, stride=2)
        self.logits = nn.Conv2d(dim, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(F.relu(self.up(self.convs(x))))


@dataclass(config=ConfigDict(extra="forbid"))
class FCOSMaskConfig(FCOSConfig):
    mask_stride: int = Field(4, ge=1, description="the FPN level (a ResNet stage's stride) the mask head crops")
    mask_size: int = Field(28, ge=2, description="side S of each predicted mask (RoI Align gives S/2, doubled)")
    mask_convs: int = Field(2, ge=0, description="3x3 conv + ReLU layers of the mask head")
    jitter: float = Field(0.1, ge=0, lt=0.5, description="training RoIs: each true box's sides moved by up to this "
                          "share of its size")


class FCOSMask(FCOS):
    """FCOS + a per-box mask head (`head.mask`). In eval mode the Output also has masks and mask_probs."""

    def __init__(self, config: FCOSMaskConfig):
        super().__init__(config, extra_strides=(config.mask_stride,))
        self.head.add_module("mask", MaskHead(config.dim, config.mask_convs, config.num_classes))

    def extra_loss(self, levels: dict[int, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mask_loss(levels[self.config.mask_stride], batch)

    def add_outputs(self, out: DetectionOutput, levels: dict[int, torch.Tensor], size: tuple[int, int]) -> None:
        out.mask_probs, out.masks = self.predict_masks(levels[self.config.mask_stride], out.boxes, out.labels, size)

    def roi_logits(self, features: torch.Tensor, rois: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mask logits (R, S, S) of the class `labels` (R,) for rois (R, 5) [image, x1, y1, x2, y2]."""
        c = self.config
        crops = roi_align(features, rois, c.mask_size // 2, spatial_scale=1 / c.mask_stride, sampling_ratio=2,
                          aligned=True)
        logits = self.head.mask(crops)  # (R, K, S, S)
        return logits[torch.arange(len(rois), device=rois.device), labels]

    def mask_loss(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BCE of the true class's mask over each (jittered) true box, against the true mask cropped to it."""
        c = self.config
        keep = batch["box_mask"] & ~batch.get("iscrowd", torch.zeros_like(batch["box_mask"]))
        image, slot = keep.nonzero(as_tuple=True)
        if len(image) == 0:
            weights = sum(p.sum() for p in self.head.mask.parameters())
            return (features.sum() + weights) * 0.0  # no object: a zero loss, with a (zero) gradient everywhere
        boxes = batch["boxes"][image, slot].float()
        size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        if self.training and c.jitter > 0:
            boxes = boxes + (torch.rand_like(boxes) * 2 - 1) * c.jitter * size
        rois = torch.cat([image[:, None].float(), boxes], dim=1)
        truth = batch["masks"][image, slot].float()[:, None]  # (R, 1, H, W)
        own = torch.cat([torch.arange(len(rois), device=rois.device)[:, None].float(), boxes], dim=1)
        target = roi_align(truth, own, c.mask_size, spatial_scale=1.0, sampling_ratio=2, aligned=True)[:, 0]
        logits = self.roi_logits(features, rois, batch["labels"][image, slot])
        return F.binary_cross_entropy_with_logits(logits.float(), (target >= 0.5).float())

    @torch.no_grad()
    def predict_masks(self, features: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                      size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each detection's mask probabilities (B, D, S, S) and its mask pasted into the image (B, D, H, W) bool;
        padding slots get empty masks. RoIs go through the head CHUNK at a time (RoI Align's samples of a whole
        batch's detections at once would take gigabytes)."""
        b, d = labels.shape
        s = self.config.mask_size
        probs = features.new_zeros(b * d, s, s, dtype=torch.float32)
        masks = torch.zeros(b * d, *size, dtype=torch.bool, device=features.device)
        image, slot = (labels >= 0).nonzero(as_tuple=True)
        for start in range(0, len(image), CHUNK):
            i, j = image[start:start + CHUNK], slot[start:start + CHUNK]
            rois = torch.cat([i[:, None].float(), boxes[i, j].float()], dim=1)
            p = torch.sigmoid(self.roi_logits(features, rois, labels[i, j]).float())
            probs[i * d + j] = p
            masks[i * d + j] = paste_masks(p, boxes[i, j], *size)
        return probs.reshape(b, d, s, s), masks.reshape(b, d, *size)

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return example_objects(self.config, batch_size, generator)


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(FCOSMaskConfig)
def fcos_mask(**overrides) -> FCOSMask:
    """FCOS with a Mask R-CNN-style mask head: 28x28 masks per class from RoI Align on the stride-4 FPN map."""
    return FCOSMask(FCOSMaskConfig(**overrides))
