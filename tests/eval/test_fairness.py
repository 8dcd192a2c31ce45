"""dlforge.eval.fairness against Fairlearn (MetricFrame, its bootstrap, the demographic-parity and equalized-odds
functions) and sklearn's calibration_curve, to 1e-9; and what it does where they differ on purpose."""

from __future__ import annotations

import fairlearn.metrics as fairlearn_metrics  # the dev extra
import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, f1_score

from dlforge.errors import DataError
from dlforge.eval.fairness import (
    bootstrap_rows,
    expected_calibration_error,
    fairness_report,
    group_codes,
)

TOL = 1e-9
N_BOOT = 12  # Fairlearn's bootstrap is slow (a groupby per resample); the draws are the same for any


def rates():
    return {"accuracy": accuracy_score, "f1": f1_score, "selection_rate": fairlearn_metrics.selection_rate,
            "tpr": fairlearn_metrics.true_positive_rate, "fpr": fairlearn_metrics.false_positive_rate}


def sample(n=500, classes=2, seed=1):
    """Labels, probabilities with some skill and a group effect, and two sensitive columns (texts)."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["f", "m"], n)
    race = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y] + 0.8 * (race == "b")[:, None] * np.eye(
        classes)[0]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba, {"sex": sex, "race": race}


def close(a, b):
    return a is not None and abs(a - float(b)) < TOL


def test_groups_values_intervals_and_disparities_equal_fairlearn():
    y, proba, sensitive = sample()
    report = fairness_report(y, proba, sensitive, ["no", "yes"], n_boot=N_BOOT, seed=7)
    pred = proba.argmax(axis=1)
    assert [a["columns"] for a in report["analyses"]] == [["sex"], ["race"], ["sex", "race"]]
    for analysis in report["analyses"]:
        features = {c: sensitive[c] for c in analysis["columns"]}
        frame = fairlearn_metrics.MetricFrame(metrics=rates(), y_true=y, y_pred=pred, sensitive_features=features,
                                              n_boot=N_BOOT, ci_quantiles=[0.025, 0.975], random_state=7)
        low, high = frame.by_group_ci
        assert len(analysis["groups"]) == len(frame.by_group)
        for group in analysis["groups"]:
            key = tuple(group["group"].values())
            key = key[0] if len(key) == 1 else key
            mine = {"accuracy": group["accuracy"], **group["classes"]["yes"]}
            assert group["n"] == int((np.all([features[c] == v for c, v in group["group"].items()], axis=0)).sum())
            for metric in rates():
                assert close(mine[metric]["value"], frame.by_group.loc[key, metric]), (key, metric)
                assert close(mine[metric]["ci"][0], low.loc[key, metric]), (key, metric)
                assert close(mine[metric]["ci"][1], high.loc[key, metric]), (key, metric)
        gaps = analysis["disparities"]["yes"]
        for name in ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
                     "equalized_odds_ratio"):
            assert close(gaps[name]["value"], getattr(fairlearn_metrics, name)(y, pred, sensitive_features=features))
        # the interval of a disparity: Fairlearn's, from the same resamples
        assert close(gaps["demographic_parity_difference"]["ci"][0], frame.difference_ci()[0]["selection_rate"])
        assert close(gaps["demographic_parity_ratio"]["ci"][1], frame.ratio_ci()[1]["selection_rate"])
    overall = fairlearn_metrics.MetricFrame(metrics=rates(), y_true=y, y_pred=pred, sensitive_features=sensitive["sex"])
    for metric in rates():
        figure = report["overall"]["accuracy"] if metric == "accuracy" else report["overall"]["classes"]["yes"][metric]
        assert close(figure["value"], overall.overall[metric])


def test_calibration_equals_sklearn_calibration_curve():
    y, proba, sensitive = sample(n=800, seed=3)
    score = proba[:, 1]
    score[:5] = [0.0, 0.1, 0.5, 0.9, 1.0]  # on the bin edges: sklearn puts them in the lower bin
    report = fairness_report(y, proba, {"sex": sensitive["sex"]}, ["no", "yes"], n_boot=0)
    for group in report["analyses"][0]["groups"]:
        rows = sensitive["sex"] == group["group"]["sex"]
        observed, predicted = calibration_curve(y[rows], score[rows], n_bins=10, strategy="uniform")
        counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], score[rows]), minlength=10)
        ece = float(np.sum(counts[counts > 0] / rows.sum() * np.abs(observed - predicted)))
        figures = group["classes"]["yes"]
        assert close(figures["ece"]["value"], ece)
        assert close(figures["mean_score"]["value"], score[rows].mean())
        assert close(figures["observed_rate"]["value"], y[rows].mean())
        assert figures["ece"]["ci"] is None  # --bootstrap 0: no intervals
    assert close(expected_calibration_error(y, score), report["overall"]["classes"]["yes"]["ece"]["value"])
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0


def test_multiclass_is_one_vs_rest_per_class():
    y, proba, sensitive = sample(n=600, classes=3, seed=5)
    report = fairness_report(y, proba, {"race": sensitive["race"]}, ["x", "y", "z"], n_boot=0)
    assert report["classes"] == ["x", "y", "z"]
    pred = proba.argmax(axis=1)
    analysis = report["analyses"][0]
    for c, name in enumerate("xyz"):
        frame = fairlearn_metrics.MetricFrame(metrics=rates(), y_true=(y == c).astype(int),
                                              y_pred=(pred == c).astype(int), sensitive_features=sensitive["race"])
        for group in analysis["groups"]:
            for metric in ("f1", "selection_rate", "tpr", "fpr"):
                assert close(group["classes"][name][metric]["value"], frame.by_group.loc[group["group"]["race"],
                                                                                          metric])
        assert close(analysis["disparities"][name]["equalized_odds_difference"]["value"],
                     fairlearn_metrics.equalized_odds_difference((y == c).astype(int), (pred == c).astype(int),
                                                                 sensitive_features=sensitive["race"]))
    for group in analysis["groups"]:  # accuracy stays the multiclass accuracy
        rows = sensitive["race"] == group["group"]["race"]
        assert close(group["accuracy"]["value"], accuracy_score(y[rows], pred[rows]))


def test_small_groups_are_flagged_and_undefined_rates_are_none_not_zero():
    y = np.array([1, 0, 1, 0, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.4, 0.7, 0.8, 0.6, 0.1, 0.3, 0.6, 0.2])
    group = np.array(["a"] * 6 + ["b"] * 4)  # b has no positives: its TPR has nothing to divide by
    report = fairness_report(y, np.stack([1 - p, p], axis=1), {"g": group}, ["0", "1"], min_group=5, n_boot=30)
    analysis = report["analyses"][0]
    a, b = analysis["groups"]
    assert (a["n"], a["small"], b["n"], b["small"]) == (6, False, 4, True)
    assert analysis["flagged"] == ["g=b"]
    assert b["classes"]["1"]["tpr"] == {"value": None, "ci": None}
    assert b["classes"]["1"]["f1"]["value"] == 0.0  # no positives, but one positive prediction: defined, 0
    assert close(b["classes"]["1"]["fpr"]["value"], 0.25)
    # Fairlearn counts b's TPR as 0 (sklearn's normalized confusion matrix); here it is skipped, so the TPR spread
    # is 0 (one group) and the equalized-odds difference is the FPR spread
    frame = fairlearn_metrics.MetricFrame(metrics=rates(), y_true=y, y_pred=(p > 0.5).astype(int),
                                          sensitive_features=group)
    assert frame.by_group.loc["b", "tpr"] == 0.0
    fpr_gap = abs(frame.by_group.loc["a", "fpr"] - frame.by_group.loc["b", "fpr"])
    assert close(analysis["disparities"]["1"]["equalized_odds_difference"]["value"], fpr_gap)


def test_f1_undefined_only_without_positives_or_positive_predictions():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.9, 0.8])
    report = fairness_report(y, np.stack([1 - p, p], axis=1), {"g": ["a", "a", "b", "b"]}, ["0", "1"], n_boot=0)
    a, b = report["analyses"][0]["groups"]
    assert a["classes"]["1"]["f1"]["value"] is None and a["classes"]["1"]["tpr"]["value"] is None
    assert b["classes"]["1"]["f1"]["value"] == 1.0 and b["classes"]["1"]["fpr"]["value"] is None
    assert report["analyses"][0]["disparities"]["1"]["demographic_parity_ratio"]["value"] == 0.0


def test_intersections_are_sorted_combinations_and_numbers_are_refused():
    codes, groups = group_codes({"a": ["2", "1", "2", "1"], "b": ["x", "x", "y", "x"]})
    assert groups == [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}, {"a": "2", "b": "y"}]
    assert codes.tolist() == [1, 0, 2, 0]
    with pytest.raises(DataError, match=r"^--sensitive age: 60 distinct values; .*bin it"):
        group_codes({"age": [str(i) for i in range(60)]})


def test_bootstrap_rows_are_seeded_resamples():
    rows = np.stack(list(bootstrap_rows(50, 20, seed=3)))
    assert rows.shape == (20, 50) and rows.min() >= 0 and rows.max() < 50
    assert np.array_equal(rows, np.stack(list(bootstrap_rows(50, 20, seed=3))))
    assert not np.array_equal(rows, np.stack(list(bootstrap_rows(50, 20, seed=4))))
    assert list(bootstrap_rows(50, 0, seed=3)) == []
