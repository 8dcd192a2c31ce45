"""Fairness of a classifier across groups: per-group metrics, disparities and bootstrap intervals. Numbers in,
numbers out (numpy only).

    report = fairness_report(y_true, proba, {"female": sex, "black": race}, label_names=["no", "yes"])

Definitions follow Fairlearn (0.10+), so that `MetricFrame` and `fairlearn.metrics` give the same figures:
- per group: n, accuracy, F1 (sklearn's), selection rate P(pred = c), true positive rate P(pred = c | y = c),
  false positive rate P(pred = c | y != c); and calibration: the mean predicted probability of c, the observed
  rate of c, and the expected calibration error over 10 equal-width bins, sum_b n_b / n |rate_b - mean p_b| (the
  bins of sklearn's `calibration_curve(strategy="uniform")`).
- disparities, between groups: demographic parity difference max - min of the selection rates, ratio min / max;
  equalized odds difference the larger of the TPR and FPR differences, ratio the smaller of their ratios.
- a binary model is audited for its positive class (label id 1); a multiclass one class by class, one-vs-rest
  (c against the rest, the prediction being the argmax).
- 95% intervals: Fairlearn's bootstrap (`MetricFrame(n_boot=, ci_quantiles=, random_state=)`): each replicate
  resamples all rows with replacement (numpy's RandomState seeded from one default_rng(seed) draw per replicate,
  as pandas' `DataFrame.sample` does), and the interval is the 2.5th and 97.5th percentile over the replicates
  (linear interpolation, a replicate where a group is absent skipped).
One difference, on purpose: a rate with no rows to divide by (TPR in a group with no positives, F1 with neither
positives nor positive predictions) is reported as undefined (None), where sklearn and Fairlearn write 0; the
disparities skip undefined values, as pandas' min and max skip NaN.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from dlforge.errors import DataError

CLASS_METRICS = ("f1", "selection_rate", "tpr", "fpr", "mean_score", "observed_rate", "ece")
DISPARITIES = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
               "equalized_odds_ratio")
MAX_GROUPS = 50  # distinct values of one sensitive column: beyond that it is a number to bin first (age, income)
QUANTILES = (0.025, 0.975)


def expected_calibration_error(y_true: np.ndarray, score: np.ndarray, bins: int = 10) -> float:
    """ECE of one class's predicted probabilities `score` against `y_true` (0/1): sum over equal-width bins of
    n_b / n |observed rate_b - mean score_b| (the bins of sklearn's `calibration_curve`, strategy "uniform")."""
    codes = np.zeros(len(score), dtype=np.int64)
    return float(_ece(codes, 1, np.asarray(y_true, dtype=bool), np.asarray(score, dtype=np.float64), bins)[0])


def group_codes(columns: dict[str, Sequence[str]]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Each row's group (the combination of its values in `columns`, an intersection when there are several) as a
    code 0..G-1, and the groups in sorted order, each {column: value}."""
    names = list(columns)
    rows = list(zip(*(list(map(str, columns[c])) for c in names), strict=True))
    for name in names:
        distinct = {str(v) for v in columns[name]}
        if len(distinct) > MAX_GROUPS:
            raise DataError(f"--sensitive {name}: {len(distinct)} distinct values; a sensitive column is read as "
                            f"categories (at most {MAX_GROUPS}); bin it into a column of ranges first")
    keys = sorted(set(rows))
    index = {key: i for i, key in enumerate(keys)}
    return np.array([index[r] for r in rows], dtype=np.int64), [dict(zip(names, k, strict=True)) for k in keys]


def group_metrics(codes: np.ndarray, n_groups: int, y_true: np.ndarray, proba: np.ndarray, classes: Sequence[int],
                  bins: int = 10) -> dict[str, np.ndarray]:
    """The metrics of each group: "n" and "accuracy" (G,), and each of CLASS_METRICS (K, G) for the K `classes`
    audited one-vs-rest. `proba` (N, C) holds class probabilities; the prediction is its argmax. NaN where a
    metric is undefined (a group without rows, a rate without its denominator)."""
    y_pred = proba.argmax(axis=1)
    n = np.bincount(codes, minlength=n_groups).astype(np.float64)
    out: dict[str, Any] = {"n": n, "accuracy": _div(np.bincount(codes, y_true == y_pred, n_groups), n)}
    per_class: dict[str, list[np.ndarray]] = {m: [] for m in CLASS_METRICS}
    for c in classes:
        t, p, score = y_true == c, y_pred == c, proba[:, c].astype(np.float64)
        tp = np.bincount(codes, t & p, n_groups)
        fp = np.bincount(codes, ~t & p, n_groups)
        pos = np.bincount(codes, t, n_groups)
        per_class["f1"].append(_div(2 * tp, tp + pos + fp))  # 2tp / (2tp + fp + fn)
        per_class["selection_rate"].append(_div(tp + fp, n))
        per_class["tpr"].append(_div(tp, pos))
        per_class["fpr"].append(_div(fp, n - pos))
        per_class["mean_score"].append(_div(np.bincount(codes, score, n_groups), n))
        per_class["observed_rate"].append(_div(pos, n))
        per_class["ece"].append(_ece(codes, n_groups, t, score, bins))
    out.update({m: np.stack(v) for m, v in per_class.items()})
    return out


def disparities(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Between-group disparities per audited class (K,), from `group_metrics`' output: Fairlearn's
    demographic_parity_difference / _ratio and equalized_odds_difference / _ratio (agg "worst_case")."""
    sel, tpr, fpr = metrics["selection_rate"], metrics["tpr"], metrics["fpr"]
    return {
        "demographic_parity_difference": _spread(sel),
        "demographic_parity_ratio": _ratio(sel),
        "equalized_odds_difference": np.fmax(_spread(tpr), _spread(fpr)),  # fmax, fmin: NaN only if both are
        "equalized_odds_ratio": np.fmin(_ratio(tpr), _ratio(fpr)),
    }


def bootstrap_rows(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """`n_boot` resamples of n row indices with replacement, one at a time, drawn as Fairlearn's MetricFrame draws
    them: one uint32 seed per replicate from default_rng(seed), then RandomState(that).choice(n, n) (pandas'
    `DataFrame.sample(frac=1, replace=True)`)."""
    seeds = np.random.default_rng(seed).integers(0, np.iinfo(np.uint32).max, size=n_boot, dtype=np.uint32)
    for s in seeds:
        yield np.random.RandomState(s).choice(n, size=n, replace=True)


def fairness_report(y_true: Sequence[int], proba: np.ndarray, sensitive: dict[str, Sequence[str]],
                    label_names: Sequence[str], *, min_group: int = 30, n_boot: int = 1000, seed: int = 0,
                    bins: int = 10) -> dict[str, Any]:
    """Everything `dlforge fairness` reports, as plain data (JSON-ready).

    `y_true` (N,) class ids, `proba` (N, C) predicted probabilities, `sensitive` column -> (N,) group values (texts).
    With several columns: an analysis per column, then one of their intersection. Each analysis holds its groups
    (n, small = under `min_group`, accuracy and the per-class metrics, each {value, ci}), the disparities per class,
    and the names of the small groups; `overall` holds the same metrics over all rows.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or len(proba) != len(y_true) or not len(y_true):
        raise DataError(f"fairness: expected probabilities (N, C) for N = {len(y_true)} labels, got {proba.shape}")
    classes = [1] if proba.shape[1] == 2 else list(range(proba.shape[1]))
    class_names = [str(label_names[c]) for c in classes]
    views = [[c] for c in sensitive] + ([list(sensitive)] if len(sensitive) > 1 else [])
    grouped = [group_codes({c: sensitive[c] for c in view}) for view in views]
    grouped.append((np.zeros(len(y_true), dtype=np.int64), [{}]))  # the overall figures: one group of every row
    boot: list[list[dict[str, np.ndarray]]] = [[] for _ in grouped]
    for rows in bootstrap_rows(len(y_true), n_boot, seed):  # a resample at a time: n_boot x N indices can be big
        for replicates, (codes, groups) in zip(boot, grouped, strict=True):
            replicates.append(group_metrics(codes[rows], len(groups), y_true[rows], proba[rows], classes, bins))
    analyses = [_analysis(view, codes, groups, y_true, proba, classes, class_names, replicates, min_group, bins)
                for view, (codes, groups), replicates in zip([*views, []], grouped, boot, strict=True)]
    overall = analyses.pop()["groups"][0]
    return {"n": len(y_true), "labels": [str(x) for x in label_names], "classes": class_names,
            "sensitive": list(sensitive), "min_group": min_group, "bootstrap": n_boot, "seed": seed,
            "confidence": QUANTILES[1] - QUANTILES[0], "calibration_bins": bins, "overall": overall,
            "analyses": analyses}


def group_name(group: dict[str, str]) -> str:
    """'female=1, black=0'; 'all' for the group of every row."""
    return ", ".join(f"{k}={v}" for k, v in group.items()) or "all"


# --- helpers ------------------------------------------------------------------------------------------------------


def _analysis(view: list[str], codes: np.ndarray, groups: list[dict[str, str]], y_true: np.ndarray,
              proba: np.ndarray, classes: list[int], class_names: list[str], boot: list[dict[str, np.ndarray]],
              min_group: int, bins: int) -> dict[str, Any]:
    """One view's groups and disparities, each figure with its interval over the bootstrap replicates `boot`."""
    point = group_metrics(codes, len(groups), y_true, proba, classes, bins)
    gaps = disparities(point)
    lo_hi = {m: _interval([b[m] for b in boot]) for m in ("accuracy", *CLASS_METRICS)}
    boot_gaps = [disparities(b) for b in boot]
    gap_ci = {d: _interval([b[d] for b in boot_gaps]) for d in DISPARITIES}
    out_groups = []
    for j, group in enumerate(groups):
        per_class = {name: {m: _cell(point[m][k, j], lo_hi[m], (k, j)) for m in CLASS_METRICS}
                     for k, name in enumerate(class_names)}
        n = int(point["n"][j])
        out_groups.append({"group": group, "name": group_name(group), "n": n, "small": n < min_group,
                           "accuracy": _cell(point["accuracy"][j], lo_hi["accuracy"], (j,)), "classes": per_class})
    return {"columns": view, "groups": out_groups,
            "disparities": {name: {d: _cell(gaps[d][k], gap_ci[d], (k,)) for d in DISPARITIES}
                            for k, name in enumerate(class_names)},
            "flagged": [x["name"] for x in out_groups if x["small"]]}


def _cell(value: float, interval: np.ndarray | None, at: tuple[int, ...]) -> dict[str, Any]:
    ci = None
    if interval is not None and not np.isnan(interval[(slice(None), *at)]).any():
        ci = [float(interval[(0, *at)]), float(interval[(1, *at)])]
    return {"value": None if np.isnan(value) else float(value), "ci": ci}


def _interval(samples: list[np.ndarray]) -> np.ndarray | None:
    """The percentile interval over bootstrap replicates, (2, ...) ; NaN replicates skipped (Fairlearn's
    nanquantile); None without replicates."""
    if not samples:
        return None
    stacked = np.stack(samples)
    out = np.full((2, *stacked.shape[1:]), np.nan)
    defined = ~np.isnan(stacked).all(axis=0)
    if defined.any():  # nanquantile warns on a column of NaN only
        out[:, defined] = np.nanquantile(stacked[:, defined], QUANTILES, axis=0)
    return out


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _ece(codes: np.ndarray, n_groups: int, t: np.ndarray, score: np.ndarray, bins: int) -> np.ndarray:
    # sklearn's calibration_curve bins: searchsorted over the inner edges (a score on an edge goes to the lower
    # bin). Per group, sum_b n_b/n |rate_b - mean_b| = sum_b |positives_b - score sum_b| / n.
    inner = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    key = codes * bins + np.searchsorted(inner, score)
    positives = np.bincount(key, t, n_groups * bins).reshape(n_groups, bins)
    scores = np.bincount(key, score, n_groups * bins).reshape(n_groups, bins)
    return _div(np.abs(positives - scores).sum(axis=1), np.bincount(codes, minlength=n_groups))


def _spread(values: np.ndarray) -> np.ndarray:
    """max - min over groups (last axis), NaN skipped; NaN when no group has a value."""
    return _nan_reduce(values, np.max) - _nan_reduce(values, np.min)


def _ratio(values: np.ndarray) -> np.ndarray:
    """min / max over groups, NaN skipped; NaN when the max is 0 (0 / 0) or nothing is defined."""
    return _div(_nan_reduce(values, np.min), _nan_reduce(values, np.max))


def _nan_reduce(values: np.ndarray, fn: Any) -> np.ndarray:
    filled = np.where(np.isnan(values), -np.inf if fn is np.max else np.inf, values)
    out = fn(filled, axis=-1).astype(np.float64)
    out[np.isnan(values).all(axis=-1)] = np.nan
    return out
