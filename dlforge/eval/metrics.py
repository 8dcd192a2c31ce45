"""Task metrics through torchmetrics, accumulated over batches and computed once per evaluation.

    metrics = TaskMetrics("classification", num_classes=10)
    for batch in loader:
        metrics.update(model(batch), batch)
    metrics.compute()  # {"accuracy": 0.91, "precision": ..., "recall": ..., "f1": ..., "auroc": ..., ...}

Classification: accuracy (micro, i.e. the share of correct predictions), macro precision, recall and F1, macro
one-vs-rest AUROC, top-5 accuracy when there are more than 5 classes, and the confusion matrix. Regression: MAE, RMSE
and R², in the original units of the target. Forecast: MAE, RMSE, MAPE, sMAPE and MASE of the model and of the
seasonal-naive forecast on the same targets, and rel_mae = mae / naive_mae (see `ForecastErrors`). Language modeling:
next-token accuracy, perplexity (per token), bits per token and bits per character (see `TokenPredictions`);
translation: the same on the teacher-forced target tokens, without bits per character (BLEU and chrF need decoding:
`dlforge.llm.translate`). Keys are plain names; the caller adds the split prefix (`val/`).
`TaskMetrics.from_info(bundle.info, loss, split)` asks the DataBundle's task (`dlforge.tasks`) for its metrics.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection, R2Score
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from dlforge.layers.losses import to_probabilities
from dlforge.models.output import Output

# Metrics where smaller is better; anything ending in "loss" is too.
LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "mape", "smape", "mase", "rel_mae", "naive_mae", "naive_rmse",
                   "naive_mape", "naive_smape", "naive_mase", "perplexity", "ppl", "nll", "bits_per_char", "bpc",
                   "bits_per_token", "error", "wer", "cer", "recon", "kl", "nll_iwae", "nll_pixels", "fid", "kid")


def lower_is_better(metric_name: str) -> bool:
    """True for metrics to minimize (loss, mae, rmse, perplexity, ...); a split prefix like `val/` is ignored."""
    name = metric_name.rsplit("/", 1)[-1].lower()
    return name in LOWER_IS_BETTER or name.endswith("loss")


class _ByTask(type):
    """`TaskMetrics(task, **options)` asks the registered task of that name for its metric set; a subclass called by
    its own name is built as usual."""

    def __call__(cls, *args: Any, **options: Any) -> Any:
        if cls is not TaskMetrics:
            return super().__call__(*args, **options)
        from dlforge.registry import create_task, list_tasks  # the ground floor: names to task plug-ins

        task = args[0] if args else options.pop("task", None)
        if task not in list_tasks():
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(list_tasks())}")
        return create_task(task).metric_set(**options)


class TaskMetrics(metaclass=_ByTask):
    """A task's metrics, accumulated over `update()` calls; `compute()` returns them as plain floats.

    Each task (`dlforge.tasks`) picks its own subclass below: `TaskMetrics.from_info(bundle.info, loss, split)` asks
    the task a DataBundle names, and `TaskMetrics("classification", num_classes=10)` asks the task of that name with
    the options of its metric set (see `Task.metric_set`).

    Classification takes `output.logits` of shape (B, C) (or (B, 1) with `loss_name="bce"`, read as two classes) and
    `batch["y"]` class ids (B,). Regression takes (B, 1) outputs and (B,) targets, both standardized with
    `target_mean` and `target_std`; the metrics are computed after undoing that scaling. Forecast takes (B, H * T)
    outputs, `batch["y"]` and `batch["naive"]` of the same shape, horizon-major, scaled per target column with
    `target_mean` and `target_std` (lists of T; for min-max scaling the minimum and the range), and `mase_scale` per
    target column in original units. Language modeling takes (B, T, V) logits and `batch["labels"]` (B, T), -100
    ignored, and `chars_per_token` of the text (1 for characters; None: no bits per character).
    """

    task = ""
    num_classes: int | None = None
    loss_name = ""
    target_mean: float | list[float] = 0.0
    target_std: float | list[float] = 1.0

    def __init__(self, metrics: Metric):
        self.metrics = metrics
        self.updates = 0

    @classmethod
    def from_info(cls, info: dict[str, Any], loss_name: str = "cross_entropy", split: str = "val") -> TaskMetrics:
        """The metrics of a DataBundle's task, configured by that task from the bundle's `info` (classes, target
        scaling, MASE scale; for language modeling the characters per token of `split`)."""
        from dlforge.registry import create_task, list_tasks

        task = info.get("task")
        if task not in list_tasks():
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(list_tasks())}")
        return create_task(task).metrics(info, loss_name, split)

    @torch.no_grad()
    def update(self, output: Output, batch: dict[str, torch.Tensor]) -> None:
        """Add one batch: the model's `output.logits` against the batch's targets."""
        self._update(output.logits.detach(), batch)
        self.updates += 1

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The metrics over everything since the last `reset()`; empty if nothing was added."""
        if self.updates == 0:
            return {}
        return {name: float(value) for name, value in self.metrics.compute().items()}

    def confusion_matrix(self) -> list[list[int]] | None:
        """Counts with true classes as rows and predicted classes as columns; None for regression or before data."""
        return None

    def reset(self) -> None:
        """Forget everything added so far."""
        self.metrics.reset()
        self.updates = 0

    def to(self, device: torch.device | str) -> TaskMetrics:
        """Move the metric states to `device` (where the logits will be); returns self."""
        self.metrics.to(device)
        return self


class ClassificationMetrics(TaskMetrics):
    """Accuracy, macro precision/recall/F1, macro one-vs-rest AUROC, top-5 accuracy (> 5 classes), confusion."""

    task = "classification"

    def __init__(self, num_classes: int | None = None, loss_name: str = "cross_entropy"):
        if num_classes is None and loss_name == "bce":
            num_classes = 2
        if num_classes is None or num_classes < 2:
            raise ValueError(f"classification needs num_classes >= 2, got {num_classes}")
        if loss_name == "bce" and num_classes != 2:
            raise ValueError(f"loss 'bce' is binary: num_classes must be 2, got {num_classes}")
        super().__init__(MetricCollection(_classification_metrics(num_classes), compute_groups=False))
        self.num_classes, self.loss_name = num_classes, loss_name

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.metrics.update(to_probabilities(logits, self.loss_name), batch["y"].detach().long())  # (B, C), (B,)

    def compute(self) -> dict[str, float]:
        if self.updates == 0:
            return {}
        with warnings.catch_warnings():
            # Classes absent from the targets make torchmetrics warn about their ROC; `_macro_auroc` skips them.
            warnings.filterwarnings("ignore", message="No (positive|negative) samples in targets")
            values = self.metrics.compute()
        result = {}
        for name, value in values.items():
            if name == "confusion":
                continue
            if name == "auroc":
                result[name] = _macro_auroc(value, support=values["confusion"].sum(dim=1))
            else:
                result[name] = float(value)
        return result

    def confusion_matrix(self) -> list[list[int]] | None:
        if self.updates == 0:
            return None
        return self.metrics["confusion"].compute().long().tolist()


class RegressionMetrics(TaskMetrics):
    """MAE, RMSE and R², in the original units of the target."""

    task = "regression"

    def __init__(self, target_mean: float = 0.0, target_std: float = 1.0, loss_name: str = "mse"):
        super().__init__(MetricCollection({
            "mae": MeanAbsoluteError(),
            "rmse": MeanSquaredError(squared=False),
            "r2": R2Score(),
        }, compute_groups=False))
        self.target_mean, self.target_std, self.loss_name = target_mean, target_std, loss_name

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        pred = logits.float().squeeze(-1) * self.target_std + self.target_mean  # (B,)
        self.metrics.update(pred, batch["y"].detach().float() * self.target_std + self.target_mean)


class ForecastMetrics(TaskMetrics):
    """`ForecastErrors` of the model and of the seasonal-naive forecast carried in `batch["naive"]`."""

    task = "forecast"

    def __init__(self, target_mean: float | list[float] = 0.0, target_std: float | list[float] = 1.0,
                 mase_scale: float | list[float] | None = None, loss_name: str = "mse"):
        super().__init__(ForecastErrors(target_mean, target_std, mase_scale))
        self.target_mean, self.target_std, self.loss_name = target_mean, target_std, loss_name

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        naive = batch.get("naive")
        self.metrics.update(logits, batch["y"].detach(), None if naive is None else naive.detach())


class TokenMetrics(TaskMetrics):
    """`TokenPredictions` of (B, T, V) logits against `batch["labels"]` (B, T): language modeling, and translation's
    teacher-forced target tokens (without bits per character)."""

    def __init__(self, task: str = "language_modeling", chars_per_token: float | None = 1.0, loss_name: str = ""):
        super().__init__(TokenPredictions(chars_per_token))
        self.task, self.loss_name = task, loss_name

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.metrics.update(logits, batch["labels"].detach())


def _classification_metrics(num_classes: int) -> dict[str, Metric]:
    metrics: dict[str, Metric] = {
        "accuracy": MulticlassAccuracy(num_classes, average="micro"),
        "precision": MulticlassPrecision(num_classes, average="macro"),
        "recall": MulticlassRecall(num_classes, average="macro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
        "auroc": MulticlassAUROC(num_classes, average=None),  # per class; averaged over present classes in compute()
        "confusion": MulticlassConfusionMatrix(num_classes),
    }
    if num_classes > 5:
        metrics["top5_accuracy"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return metrics


def _macro_auroc(per_class: torch.Tensor, support: torch.Tensor) -> float:
    """Mean one-vs-rest AUROC over the classes present in the targets; nan if fewer than two are."""
    present = support > 0
    if int(present.sum()) < 2:
        return float("nan")
    return float(per_class[present].mean())


# --- forecasting -------------------------------------------------------------------------------------------------


class ForecastErrors(Metric):
    """Point-forecast errors in original units, of the model and of the seasonal-naive forecast, per target column.

    update(pred, target, naive): (B, H * T) scaled values, horizon-major (index h*T + j is target j); each is
    unscaled as value * std_j + mean_j. compute() gives, over every target value seen (all horizons):

    - mae, rmse: mean absolute error and root mean squared error, all target columns pooled;
    - mape: 100 * mean |error| / |actual|, percent; targets equal to 0 are skipped (nan if every one is 0);
    - smape: 100 * mean 2 |error| / (|actual| + |forecast|), percent; pairs that are both 0 are skipped;
    - mase: MAE / mase_scale per target column, averaged over the columns; mase_scale is the in-sample MAE of the
      seasonal-naive forecast on the training part (Hyndman & Koehler 2006), so below 1 beats that in-sample
      benchmark; only when `mase_scale` is given;
    - naive_mae, naive_rmse, naive_mape, naive_smape, naive_mase: the same for `naive`, when every update had it;
    - rel_mae = mae / naive_mae: below 1 beats the seasonal naive on these very targets.
    """

    full_state_update = False
    KINDS = ("abs", "sq", "ape", "ape_n", "sape", "sape_n", "n")

    def __init__(self, target_mean: float | list[float] = 0.0, target_std: float | list[float] = 1.0,
                 mase_scale: float | list[float] | None = None):
        super().__init__()
        mean, std = _per_column(target_mean), _per_column(target_std)
        if len(mean) != len(std):
            raise ValueError(f"target_mean has {len(mean)} columns, target_std {len(std)}")
        self.columns = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64), persistent=False)
        self.mase_scale = None
        if mase_scale is not None:
            self.mase_scale = _per_column(mase_scale)
            if len(self.mase_scale) != self.columns:
                raise ValueError(f"mase_scale has {len(self.mase_scale)} columns, expected {self.columns}")
        for prefix in ("", "naive_"):
            for kind in self.KINDS:
                self.add_state(prefix + kind, torch.zeros(self.columns, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("updates", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("naive_updates", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _unscale(self, values: torch.Tensor) -> torch.Tensor:
        if values.shape[-1] % self.columns:
            raise ValueError(f"forecast of width {values.shape[-1]} is not a multiple of {self.columns} target columns")
        return values.double().reshape(len(values), -1, self.columns) * self.std + self.mean  # (B, H, T)

    def _add(self, prefix: str, pred: torch.Tensor, actual: torch.Tensor) -> None:
        err = (pred - actual).abs()  # (B, H, T)
        nonzero = actual != 0
        denominator = actual.abs() + pred.abs()
        sums = {
            "abs": err, "sq": err**2, "n": torch.ones_like(err),
            "ape": torch.where(nonzero, err / actual.abs().clamp_min(1e-300), 0.0), "ape_n": nonzero.double(),
            "sape": torch.where(denominator > 0, 2 * err / denominator.clamp_min(1e-300), 0.0),
            "sape_n": (denominator > 0).double(),
        }  # fmt: skip
        for kind, values in sums.items():
            state = getattr(self, prefix + kind)
            setattr(self, prefix + kind, state + values.sum(dim=(0, 1)))

    def update(self, pred: torch.Tensor, target: torch.Tensor, naive: torch.Tensor | None = None) -> None:
        actual = self._unscale(target)
        self._add("", self._unscale(pred), actual)
        self.updates += 1
        if naive is not None:
            self._add("naive_", self._unscale(naive), actual)
            self.naive_updates += 1

    def _summary(self, prefix: str) -> dict[str, float]:
        s = {kind: getattr(self, prefix + kind) for kind in self.KINDS}
        n = float(s["n"].sum())
        out = {
            "mae": float(s["abs"].sum()) / n,
            "rmse": math.sqrt(float(s["sq"].sum()) / n),
            "mape": 100 * _ratio(s["ape"].sum(), s["ape_n"].sum()),
            "smape": 100 * _ratio(s["sape"].sum(), s["sape_n"].sum()),
        }
        if self.mase_scale is not None:
            per_column = s["abs"] / s["n"] / torch.tensor(self.mase_scale, dtype=torch.float64, device=s["n"].device)
            out["mase"] = float(per_column.mean())
        return {prefix + k: v for k, v in out.items()}

    def compute(self) -> dict[str, float]:
        if float(self.n.sum()) == 0:
            return {}
        result = self._summary("")
        if float(self.naive_updates) == float(self.updates):
            result.update(self._summary("naive_"))
            result["rel_mae"] = _ratio(result["mae"], result["naive_mae"])
        return result


def _per_column(value: float | list[float]) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list | tuple) else [float(value)]


def _ratio(a: float | torch.Tensor, b: float | torch.Tensor) -> float:
    a, b = float(a), float(b)
    return a / b if b != 0 else float("nan")


# --- language modeling -------------------------------------------------------------------------------------------


class TokenPredictions(Metric):
    """Next-token predictions over a split, every scored token weighted alike (labels of -100 are not scored).

    accuracy: the share of tokens whose argmax is the label; perplexity: exp(mean NLL), per token; bits_per_token:
    mean NLL / ln 2; bits_per_char: bits_per_token / chars_per_token, the text's average characters per token (1 for
    a character tokenizer; for BPE the split's characters over its tokens, so the whole split's bits are spread over
    its characters). Without `chars_per_token` there is no bits_per_char.
    """

    full_state_update = False

    def __init__(self, chars_per_token: float | None = 1.0):
        super().__init__()
        if chars_per_token is not None and not chars_per_token > 0:
            raise ValueError(f"chars_per_token must be > 0, got {chars_per_token}")
        self.chars_per_token = chars_per_token
        self.add_state("nll", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        flat, target = logits.float().flatten(0, -2), labels.flatten()  # (N, V), (N,)
        scored = target != -100
        self.nll += F.cross_entropy(flat, target, ignore_index=-100, reduction="sum").double()
        self.correct += ((flat.argmax(dim=-1) == target) & scored).sum().double()
        self.count += scored.sum().double()

    def compute(self) -> dict[str, float]:
        count = float(self.count)
        if count == 0:
            return {}
        mean_nll = float(self.nll) / count
        bits = mean_nll / math.log(2)
        result = {"accuracy": float(self.correct) / count, "perplexity": math.exp(mean_nll), "bits_per_token": bits}
        if self.chars_per_token is not None:
            result["bits_per_char"] = bits / self.chars_per_token
        return result
