"""A new task as a plug-in: multi-label tagging, with its dataset, model and task in one installed package.

Nothing in dlforge is edited: the package declares a `dlforge.plugins` entry point (see pyproject.toml beside this
file), and dlforge's registry imports it on its first lookup, so `dlforge train tagging.yaml` finds the dataset,
the model and the task by name. docs/architecture.md walks through it; tests/test_plugins.py runs it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from pydantic.dataclasses import dataclass
from torch import nn
from torchmetrics.classification import MultilabelAccuracy, MultilabelF1Score

from dlforge.config import DataConfig
from dlforge.data.dataset import DataBundle, TensorDictDataset, fingerprint_tensors
from dlforge.eval.metrics import TaskMetrics
from dlforge.models.output import Output
from dlforge.registry import register_dataset, register_model, register_task
from dlforge.runs.rundir import atomic_write_json
from dlforge.tasks.base import RunReport, Task

# --- data: points in the plane, tagged by which of three half-planes hold them -------------------------------------


class QuadrantsConfig(DataConfig):
    n: int = Field(600, ge=30, description="points in all")
    seed: int = 0


@register_dataset(QuadrantsConfig)
def quadrant_tags(config: QuadrantsConfig) -> DataBundle:
    """2-D points with three tags each: x > 0, y > 0, x + y > 1."""
    g = torch.Generator().manual_seed(config.seed)
    x = torch.randn(config.n, 2, generator=g)
    y = torch.stack([x[:, 0] > 0, x[:, 1] > 0, x.sum(1) > 1], dim=1).float()  # (N, 3)
    cut = [int(config.n * 0.7), int(config.n * 0.85)]
    parts = [TensorDictDataset({"x": x[a:b], "y": y[a:b]}) for a, b in zip([0, *cut], [*cut, config.n], strict=True)]
    info = {"task": "tagging", "num_classes": None, "label_names": ["right", "up", "far"], "num_labels": 3}
    return DataBundle(*parts, info=info, model_defaults={"in_features": 2, "num_labels": 3},
                      preprocessing={"task": "tagging"}, fingerprint=fingerprint_tensors(x, y))


# --- model: an MLP with one logit per tag --------------------------------------------------------------------------


@dataclass
class TaggerConfig:
    in_features: int = Field(2, ge=1, description="set from the data")
    num_labels: int = Field(3, ge=1, description="set from the data")
    hidden: int = Field(32, ge=1)


class Tagger(nn.Module):
    def __init__(self, config: TaggerConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(config.in_features, config.hidden), nn.ReLU(),
                                 nn.Linear(config.hidden, config.num_labels))

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        logits = self.net(batch["x"])  # (B, L)
        loss = F.binary_cross_entropy_with_logits(logits, batch["y"]) if "y" in batch else None
        return Output(logits, loss)


@register_model(TaggerConfig)
def tagger(**overrides: Any) -> Tagger:
    """An MLP with one sigmoid output per tag."""
    return Tagger(TaggerConfig(**overrides))


# --- task: metrics, the final report ---------------------------------------------------------------------------


class TaggingMetrics(TaskMetrics):
    task = "tagging"

    def __init__(self, num_labels: int):
        from torchmetrics import MetricCollection

        super().__init__(MetricCollection({"accuracy": MultilabelAccuracy(num_labels),
                                           "f1": MultilabelF1Score(num_labels, average="macro"),
                                           "per_label_f1": MultilabelF1Score(num_labels, average=None)}))

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.metrics.update(logits.sigmoid(), batch["y"].long())

    def compute(self) -> dict[str, float]:
        if self.updates == 0:
            return {}
        values = self.metrics.compute()
        return {k: float(v) for k, v in values.items() if v.numel() == 1}

    def per_label_f1(self) -> list[float]:
        return self.metrics["per_label_f1"].compute().tolist()


@register_task("tagging")
class Tagging(Task):
    """Several yes/no tags per sample."""

    name = "tagging"

    def metric_set(self, num_labels: int = 2) -> TaggingMetrics:
        return TaggingMetrics(num_labels)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> TaggingMetrics:
        return TaggingMetrics(info["num_labels"])

    def test_report(self, run: RunReport) -> dict[str, Any]:
        f1 = dict(zip(run.data.info["label_names"], run.metrics.per_label_f1(), strict=True))
        atomic_write_json(run.run_path / "per_label_f1.json", f1)
        return {"test_per_label_f1": f1}
