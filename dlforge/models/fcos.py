"""FCOS (Tian, Shen, Chen, He 2019, "FCOS: Fully Convolutional One-Stage Object Detection"), on a small ResNet + FPN.

    images (B, C, H, W) -> ResNet stem and stages (dlforge's own, `models.resnet`) -> FPN levels at `strides`
        -> one shared head per level: a class tower -> K class logits; a box tower -> 4 distances (l, t, r, b) and a
           centerness logit, at every location (x, y) = (j * s + s // 2, i * s + s // 2) of a level of stride s
        -> training: focal loss on the classes, GIoU loss on the boxes, BCE on the centerness
        -> eval: score = sqrt(sigmoid(class) * sigmoid(centerness)), boxes (x - l, y - t, x + r, y + b) clipped to the
           image, `score_threshold`, class-aware NMS at `nms_iou`, the best `max_detections` (`layers.boxes`)

Why FCOS for 96x96 canvases on a CPU: it is anchor-free, so there are no anchor shapes to tune to items of 22-70
pixels, and one location predicts a whole box, so a 12x12 and a 6x6 level (strides 8, 16: 180 locations) cover
every item; its GIoU loss on the decoded box trains the box's overlap directly, which is what mAP@[.5:.95] rewards
(CenterNet's L1 size regression on a stride-4 heatmap needs 4x the locations and several times the epochs). The
centerness branch and center sampling (FCOS's later improvements: only locations within `center_radius` strides of
a box's centre are positive) keep low-quality boxes from the box's edges out of the top scores.

Targets (`fcos_targets`): a location is positive for a box when it lies inside the box and within the centre
region, and the largest of its distances to the box's sides is in its level's range (`level_bounds` split the
levels); among several boxes, the smallest wins. Padding slots (`box_mask` False) are never targets; crowd regions
(`iscrowd`) are neither targets nor background: locations inside one are left out of the class loss, as COCOeval
ignores detections that match a crowd. The losses are normalised by the number of positives (the box loss by the
sum of their centerness targets), as in the paper.

The backbone is a `ResNet`'s stem and stages under the same names (`stem`, `stage1`...), so `train.transfer` from a
dlforge ResNet classification run of the same `stem`, `width`, `layers` and channels loads it (`backbone_type`);
everything after it (FPN, towers) is the `head`. The default stem is ResNet's "imagenet" one (7x7/2 conv + max
pool: stride 4), which keeps a 96x96 image's work small on a CPU.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.errors import ConfigError
from dlforge.layers.boxes import generalized_box_iou_loss, select_detections
from dlforge.models.output import DetectionOutput
from dlforge.models.resnet import ResNet, ResNetConfig
from dlforge.registry import register_model

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # the RetinaNet / FCOS focal loss
PRIOR = 0.01  # the class logits start at this probability (RetinaNet's bias init): background dominates early
PRE_NMS = 1000  # best (location, class) candidates per image before NMS (FCOS's pre_nms_top_n)
GROUPS = 8  # GroupNorm groups in the towers (FCOS uses GroupNorm there)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), elementwise: BCE scaled by (1 - p_t)^gamma and alpha_t, as
    torchvision's `sigmoid_focal_loss` with reduction none."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA


def grid_points(height: int, width: int, stride: int, device: torch.device | None = None) -> torch.Tensor:
    """The image positions (h * w, 2) xy of a level's locations, row-major: (j * s + s // 2, i * s + s // 2)."""
    ys = torch.arange(height, device=device, dtype=torch.float32) * stride + stride // 2
    xs = torch.arange(width, device=device, dtype=torch.float32) * stride + stride // 2
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def fcos_targets(points: torch.Tensor, strides: torch.Tensor, ranges: torch.Tensor, boxes: torch.Tensor,
                 box_mask: torch.Tensor, iscrowd: torch.Tensor, center_radius: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Which box each location learns: points (L, 2) xy, strides (L,), ranges (L, 2) [low, high) of the largest
    distance, boxes (B, M, 4) xyxy, box_mask and iscrowd (B, M). Returns matched (B, L), the box index or -1 for
    background, and ignored (B, L), background locations inside a crowd region (no class loss)."""
    x, y = points[None, :, None, 0], points[None, :, None, 1]  # (1, L, 1)
    b = boxes[:, None]  # (B, 1, M, 4)
    ltrb = torch.stack([x - b[..., 0], y - b[..., 1], b[..., 2] - x, b[..., 3] - y], dim=-1)  # (B, L, M, 4)
    inside = ltrb.min(dim=-1).values > 0
    cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2  # (B, 1, M)
    radius = strides[None, :, None] * center_radius  # (1, L, 1)
    central = ((x - cx).abs() < radius) & ((y - cy).abs() < radius)
    largest = ltrb.max(dim=-1).values
    fits = (largest >= ranges[None, :, None, 0]) & (largest < ranges[None, :, None, 1])
    regular = (box_mask & ~iscrowd)[:, None]  # (B, 1, M)
    candidate = inside & central & fits & regular
    area = ((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])).expand_as(candidate)
    area = torch.where(candidate, area, torch.full_like(area, math.inf))
    smallest, index = area.min(dim=-1)  # (B, L)
    matched = torch.where(torch.isfinite(smallest), index, torch.full_like(index, -1))
    in_crowd = (inside & (box_mask & iscrowd)[:, None]).any(dim=-1)
    return matched, in_crowd & (matched < 0)


def centerness(ltrb: torch.Tensor) -> torch.Tensor:
    """FCOS's centerness target sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) of distances (..., 4)."""
    lr, tb = ltrb[..., 0::2], ltrb[..., 1::2]
    ratio = (lr.min(dim=-1).values / lr.max(dim=-1).values) * (tb.min(dim=-1).values / tb.max(dim=-1).values)
    return ratio.clamp(min=0).sqrt()


def decode_boxes(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """Boxes (..., 4) xyxy from locations (..., 2) xy and distances (..., 4) l, t, r, b."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def pad_detections(found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (boxes (n, 4), scores (n,), labels (n,)) -> boxes (B, D, 4), scores (B, D), labels (B, D) with -1 on
    padding, detection_mask (B, D); D = the largest n, at least 1."""
    d = max([1, *(len(s) for _, s, _ in found)])
    boxes = torch.zeros(len(found), d, 4, device=device)
    scores = torch.zeros(len(found), d, device=device)
    labels = torch.full((len(found), d), -1, dtype=torch.long, device=device)
    for i, (bx, sc, lb) in enumerate(found):
        boxes[i, :len(sc)], scores[i, :len(sc)], labels[i, :len(sc)] = bx, sc, lb
    return boxes, scores, labels, labels >= 0


# --- blocks ------------------------------------------------------------------------------------------------------


class FPN(nn.Module):
    """Feature pyramid (Lin et al. 2017): a 1x1 lateral conv per stage from the lowest wanted stride up, top-down
    nearest upsampling and addition, a 3x3 conv per wanted level. Stage maps -> {stride: (B, dim, h, w)}."""

    def __init__(self, channels: list[int], stage_strides: list[int], out_strides: list[int], dim: int):
        super().__init__()
        self.first = stage_strides.index(min(out_strides))
        self.strides = stage_strides[self.first:]
        self.out_strides = sorted(out_strides)
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in channels[self.first:])
        self.output = nn.ModuleList(nn.Conv2d(dim, dim, 3, padding=1) for _ in self.out_strides)

    def forward(self, stages: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        maps = stages[self.first:]
        top = self.lateral[-1](maps[-1])
        merged = {self.strides[-1]: top}
        for stride, conv, c in zip(reversed(self.strides[:-1]), reversed(self.lateral[:-1]), reversed(maps[:-1]),
                                   strict=True):
            top = conv(c) + F.interpolate(top, size=c.shape[-2:], mode="nearest")
            merged[stride] = top
        return {s: conv(merged[s]) for s, conv in zip(self.out_strides, self.output, strict=True)}


def tower(dim: int, convs: int) -> nn.Sequential:
    """`convs` x (3x3 conv -> GroupNorm -> ReLU), as FCOS's towers: (B, dim, h, w) -> (B, dim, h, w)."""
    layers: list[nn.Module] = []
    for _ in range(convs):
        layers += [nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(GROUPS, dim), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Everything after the backbone: the FPN and the head shared by its levels (a learned scale per level on the
    distances). Stage maps -> class logits (B, L, K), distances (B, L, 4) in pixels, centerness logits (B, L) over
    the L locations of every level, finest level first; and the FPN maps (for a mask head)."""

    def __init__(self, channels: list[int], stage_strides: list[int], strides: list[int], extra: list[int],
                 dim: int, convs: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.strides = strides
        self.drop = nn.Dropout(dropout)
        self.fpn = FPN(channels, stage_strides, sorted(set(strides) | set(extra)), dim)
        self.cls_tower, self.box_tower = tower(dim, convs), tower(dim, convs)
        self.cls_logits = nn.Conv2d(dim, num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(dim, 4, 3, padding=1)
        self.centerness = nn.Conv2d(dim, 1, 3, padding=1)  # on the box tower (FCOS's later placement)
        self.scales = nn.Parameter(torch.ones(len(strides)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m not in self.fpn.modules():
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - PRIOR) / PRIOR))
        nn.init.constant_(self.box_pred.bias, 1.0)  # every location starts with a box a couple of strides wide

    def forward(self, stages: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        levels = self.fpn(stages)
        cls, box, ctr = [], [], []
        for i, stride in enumerate(self.strides):
            f = levels[stride]
            c, r = self.drop(self.cls_tower(f)), self.drop(self.box_tower(f))
            cls.append(self.cls_logits(c).flatten(2).transpose(1, 2))  # (B, h*w, K)
            # distances in units of the stride, made pixels (FCOS's norm_reg_targets): relu keeps them >= 0
            box.append((F.relu(self.box_pred(r) * self.scales[i]) * stride).flatten(2).transpose(1, 2))
            ctr.append(self.centerness(r).flatten(1))  # (B, h*w)
        return torch.cat(cls, 1), torch.cat(box, 1), torch.cat(ctr, 1), levels


# --- config and model ----------------------------------------------------------------------------------------------


@dataclass(config=ConfigDict(extra="forbid"))
class FCOSConfig:
    in_channels: int = Field(1, ge=1, description="image channels; set from the data")
    num_classes: int = Field(10, ge=1, description="object classes; set from the data")
    image_size: int | list[int] = Field(96, description="image side or [height, width]; set from the data")
    layers: list[int] = Field(default_factory=lambda: [2, 2, 2], min_length=1, description="ResNet blocks per stage")
    width: int = Field(32, ge=8, description="channels of the first ResNet stage; stage i has width * 2**i")
    stem: Literal["cifar", "imagenet"] = Field("imagenet", description="ResNet's stem: imagenet (7x7/2 conv + pool, "
                                               "stride 4) or cifar (3x3 conv, stride 1)")
    strides: list[int] = Field(default_factory=lambda: [8, 16], min_length=1, description="FPN levels the head "
                               "predicts from, each a stride of a ResNet stage")
    level_bounds: list[float] = Field(default_factory=lambda: [32.0], description="largest distance to a box side "
                                      "(pixels) where one level hands over to the next; one fewer than strides")
    dim: int = Field(64, ge=GROUPS, description="channels of the FPN and the head towers (a multiple of 8)")
    head_convs: int = Field(2, ge=0, description="3x3 conv + GroupNorm + ReLU layers per tower")
    center_radius: float = Field(1.5, gt=0, description="center sampling: positives lie within this many strides "
                                 "of a box's centre")
    score_threshold: float = Field(0.05, ge=0, lt=1, description="detections scoring below are dropped")
    nms_iou: float = Field(0.6, gt=0, le=1, description="class-aware NMS: IoU above which the lower score goes")
    max_detections: int = Field(100, ge=1, description="detections kept per image, best first")
    dropout: float = Field(0.0, ge=0, lt=1, description="on the towers' outputs, before the predictions")

    @model_validator(mode="after")
    def _check(self) -> FCOSConfig:
        if len(self.level_bounds) != len(self.strides) - 1 or sorted(self.level_bounds) != self.level_bounds:
            raise ConfigError(f"model.level_bounds: expected {len(self.strides) - 1} increasing bounds (one fewer "
                              f"than model.strides {self.strides}), got {self.level_bounds}")
        if sorted(set(self.strides)) != self.strides:
            raise ConfigError(f"model.strides: expected increasing strides, got {self.strides}")
        if self.dim % GROUPS:
            raise ConfigError(f"model.dim: must be a multiple of {GROUPS} (GroupNorm groups), got {self.dim}")
        return self

    def stage_strides(self) -> list[int]:
        first = 4 if self.stem == "imagenet" else 1
        return [first * 2**i for i in range(len(self.layers))]

    def size(self) -> tuple[int, int]:
        sides = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        return sides[0], sides[-1]


class FCOS(nn.Module):
    """Stages stem, stage1..stageN (a ResNet's), head (FPN + towers). forward(batch) -> DetectionOutput."""

    backbone_type = ResNet  # train.transfer loads the stem and stages of a ResNet run (same names and shapes)
    export_refusal = ("its detections come from a data-dependent decoding (score threshold, per-class NMS), "
                      "Python control flow that a fixed graph does not hold")

    def __init__(self, config: FCOSConfig, extra_strides: tuple[int, ...] = ()):
        super().__init__()
        self.config = c = config
        stage_strides = c.stage_strides()
        for s in (*c.strides, *extra_strides):
            if s not in stage_strides:
                raise ConfigError(f"model.strides: {s} is not the stride of a ResNet stage; with stem {c.stem!r} "
                                  f"and {len(c.layers)} stages (model.layers) they are {stage_strides}")
        resnet = ResNet(ResNetConfig(in_channels=c.in_channels, layers=c.layers, width=c.width, stem=c.stem))
        self.stage_names = ("stem", *(f"stage{i + 1}" for i in range(len(c.layers))), "head")
        for name in self.stage_names[:-1]:  # the ResNet's own modules, initialised as it initialises them
            self.add_module(name, getattr(resnet, name))
        channels = [c.width * 2**i for i in range(len(c.layers))]
        self.head = FCOSHead(channels, stage_strides, c.strides, list(extra_strides), c.dim, c.head_convs,
                             c.num_classes, c.dropout)
        bounds = [0.0, *c.level_bounds, math.inf]
        self.register_buffer("ranges", torch.tensor([bounds[i:i + 2] for i in range(len(c.strides))]),
                             persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> DetectionOutput:
        x = batch["x"]
        cls, ltrb, ctr, levels = self.dense(x)
        points, strides, ranges = self.locations(levels, x.device)
        loss = None
        if "labels" in batch:
            loss = self.loss(cls, ltrb, ctr, points, strides, ranges, batch) + self.extra_loss(levels, batch)
        out = DetectionOutput(logits=cls, loss=loss)
        if not self.training:
            found = [self.decode(cls[i], ltrb[i], ctr[i], points, x.shape[-2:]) for i in range(len(x))]
            out.boxes, out.scores, out.labels, out.detection_mask = pad_detections(found, x.device)
            self.add_outputs(out, levels, x.shape[-2:])
        return out

    def extra_loss(self, levels: dict[int, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """What a subclass's extra head adds to the loss (the mask head's); 0 here."""
        return 0.0

    def add_outputs(self, out: DetectionOutput, levels: dict[int, torch.Tensor], size: tuple[int, int]) -> None:
        """What a subclass's extra head adds to the decoded detections in eval mode (masks); nothing here."""

    def dense(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        """Images (B, C, H, W) -> class logits (B, L, K), distances (B, L, 4), centerness logits (B, L), FPN maps."""
        stages = []
        x = self.stem(x)
        for name in self.stage_names[1:-1]:
            x = self.get_submodule(name)(x)
            stages.append(x)
        return self.head(stages)

    def locations(self, levels: dict[int, torch.Tensor], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every head location's xy (L, 2), stride (L,) and distance range (L, 2), finest level first."""
        points, strides, ranges = [], [], []
        for i, s in enumerate(self.config.strides):
            h, w = levels[s].shape[-2:]
            points.append(grid_points(h, w, s, device))
            strides.append(torch.full((h * w,), float(s), device=device))
            ranges.append(self.ranges[i].expand(h * w, 2))
        return torch.cat(points), torch.cat(strides), torch.cat(ranges)

    def loss(self, cls: torch.Tensor, ltrb: torch.Tensor, ctr: torch.Tensor, points: torch.Tensor,
             strides: torch.Tensor, ranges: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Focal loss over the classes + GIoU loss over the positives' boxes (weighted by their centerness target) +
        BCE over their centerness, each normalised as FCOS does."""
        boxes, labels = batch["boxes"].float(), batch["labels"]
        box_mask = batch["box_mask"]
        iscrowd = batch.get("iscrowd", torch.zeros_like(box_mask))
        matched, ignored = fcos_targets(points, strides, ranges, boxes, box_mask, iscrowd, self.config.center_radius)
        positive = matched >= 0  # (B, L)
        n_pos = positive.sum().clamp(min=1).float()
        target_cls = torch.zeros_like(cls)
        index = matched.clamp(min=0)
        target_labels = labels.gather(1, index)  # (B, L)
        target_cls[positive, target_labels[positive]] = 1.0
        class_loss = (focal_loss(cls.float(), target_cls).sum(dim=-1) * ~ignored).sum() / n_pos
        target_boxes = boxes.gather(1, index[..., None].expand(-1, -1, 4))[positive]  # (P, 4)
        pos_points = points.expand(len(cls), -1, -1)[positive]  # (P, 2)
        target_ltrb = torch.cat([pos_points - target_boxes[:, :2], target_boxes[:, 2:] - pos_points], dim=1)
        target_ctr = centerness(target_ltrb)
        pred_boxes = decode_boxes(pos_points, ltrb[positive].float())
        box_loss = (generalized_box_iou_loss(pred_boxes, target_boxes) * target_ctr).sum() / \
            target_ctr.sum().clamp(min=1e-6)
        ctr_loss = F.binary_cross_entropy_with_logits(ctr[positive].float(), target_ctr, reduction="sum") / n_pos
        return class_loss + box_loss + ctr_loss

    @torch.no_grad()
    def decode(self, cls: torch.Tensor, ltrb: torch.Tensor, ctr: torch.Tensor, points: torch.Tensor,
               size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image's detections from its head outputs (L, K), (L, 4), (L,): boxes (n, 4), scores, labels."""
        c = self.config
        scores = (torch.sigmoid(cls.float()) * torch.sigmoid(ctr.float())[:, None]).sqrt()  # (L, K)
        where, label = (scores > c.score_threshold).nonzero(as_tuple=True)
        s = scores[where, label]
        if len(s) > PRE_NMS:
            top = s.topk(PRE_NMS).indices
            where, label, s = where[top], label[top], s[top]
        boxes = decode_boxes(points[where], ltrb[where].float())
        h, w = size
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                             boxes[:, 3].clamp(0, h)], dim=1)
        return select_detections(boxes, s, label, c.score_threshold, c.nms_iou, c.max_detections)

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Random images with 1-2 random boxes each (the padded contract of `dlforge.data.detection`)."""
        return example_objects(self.config, batch_size, generator)


def example_objects(c: FCOSConfig, batch_size: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """A random batch of the detection contract: x, boxes (B, 2, 4), labels, box_mask (the second slot on every
    other image), iscrowd, area, masks (the boxes filled)."""
    h, w = c.size()
    x = torch.randn(batch_size, c.in_channels, h, w, generator=generator)
    corner = torch.rand(batch_size, 2, 2, generator=generator) * torch.tensor([w / 2, h / 2])
    side = (0.3 + 0.2 * torch.rand(batch_size, 2, 2, generator=generator)) * torch.tensor([w, h])
    boxes = torch.cat([corner, corner + side], dim=-1).round()
    labels = torch.randint(0, c.num_classes, (batch_size, 2), generator=generator)
    box_mask = torch.ones(batch_size, 2, dtype=torch.bool)
    box_mask[1::2, 1] = False
    labels[~box_mask] = -1
    ys, xs = torch.arange(h)[:, None] + 0.5, torch.arange(w)[None, :] + 0.5
    b = boxes[..., None, None]
    masks = (xs >= b[:, :, 0]) & (xs < b[:, :, 2]) & (ys >= b[:, :, 1]) & (ys < b[:, :, 3]) & box_mask[..., None, None]
    area = masks.flatten(2).sum(-1).float()
    return {"x": x, "boxes": boxes, "labels": labels, "box_mask": box_mask,
            "iscrowd": torch.zeros_like(box_mask), "area": area, "masks": masks}


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(FCOSConfig)
def fcos(**overrides) -> FCOS:
    """FCOS on a ResNet (stem 7x7/2 + pool, stages 32-64-128) and an FPN at strides 8 and 16: 96x96 canvases."""
    return FCOS(FCOSConfig(**overrides))
