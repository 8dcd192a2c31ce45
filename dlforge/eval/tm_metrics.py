"""The torchmetrics side of `dlforge.eval`: the `Metric` subclasses and collections the task metric sets accumulate
in. Importing torchmetrics takes seconds (it pulls in transformers and scipy), so `dlforge.eval.metrics` and
`dlforge.eval.segmentation` import this module only when a metric set is built, never at module level: a CLI command
that computes no metric never loads it.

- `classification_metrics(num_classes)`, `regression_metrics()`: torchmetrics collections, see `ClassificationMetrics`
  and `RegressionMetrics`;
- `ForecastErrors`: point-forecast errors of the model and of the seasonal-naive forecast (`ForecastMetrics`);
- `TokenPredictions`: next-token accuracy, perplexity, bits per token and per character (`TokenMetrics`);
- `PixelConfusion`: a (K, K) confusion matrix of pixels (`SegmentationMetrics`).
"""

from __future__ import annotations

import math

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

from dlforge.layers.dice import IGNORE_INDEX

# --- classification and regression -------------------------------------------------------------------------------


def classification_metrics(num_classes: int) -> MetricCollection:
    """Accuracy (micro), macro precision/recall/F1, per-class AUROC (averaged over the present classes by
    `ClassificationMetrics.compute`), the confusion matrix, and top-5 accuracy when there are more than 5 classes."""
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
    return MetricCollection(metrics, compute_groups=False)


def regression_metrics() -> MetricCollection:
    """MAE, RMSE and R² of the values given to `update` (the caller unscales them first)."""
    return MetricCollection({
        "mae": MeanAbsoluteError(),
        "rmse": MeanSquaredError(squared=False),
        "r2": R2Score(),
    }, compute_groups=False)


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


# --- segmentation ------------------------------------------------------------------------------------------------


class PixelConfusion(Metric):
    """Pixel counts (K, K) int64, rows the true class, columns the predicted one; target pixels of -100 skipped."""

    full_state_update = False

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.add_state("matrix", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred and target: class maps of the same shape, e.g. (B, H, W)."""
        k = self.num_classes
        valid = target != IGNORE_INDEX
        t, p = target[valid].long(), pred[valid].long()
        if len(t) and (int(t.min()) < 0 or int(t.max()) >= k):
            bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
            raise ValueError(f"target class {bad} outside 0..{k - 1} (and not the ignored {IGNORE_INDEX})")
        self.matrix += torch.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def compute(self) -> torch.Tensor:
        return self.matrix
