"""Drift statistics against scipy (to 1e-9), the PSI anchors of the normal mean shift, Evidently's choice of test,
and a calibrated MMD permutation test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from dlforge.eval import drift


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("n_ref,n_cur", [(50, 70), (400, 300), (3000, 2500)])
def test_ks_and_wasserstein_equal_scipy(rng, n_ref, n_cur):
    ref, cur = rng.normal(size=n_ref).round(1), rng.normal(0.2, 1.3, size=n_cur).round(1)  # ties, within and across
    stat, p = drift.ks(ref, cur)
    want = stats.ks_2samp(ref, cur)
    assert stat == pytest.approx(want.statistic, abs=1e-9) and p == pytest.approx(want.pvalue, abs=1e-9)
    assert drift.wasserstein(ref, cur) == pytest.approx(stats.wasserstein_distance(ref, cur), abs=1e-9)
    assert drift.wasserstein_normed(ref, cur) == pytest.approx(
        stats.wasserstein_distance(ref, cur) / np.std(ref), abs=1e-9)


def test_chi_squared_z_test_and_jensen_shannon_equal_scipy(rng):
    ref = rng.choice(["a", "b", "c", "d"], p=[0.4, 0.3, 0.2, 0.1], size=900)
    cur = rng.choice(["a", "b", "c", "d", "e"], p=[0.3, 0.3, 0.2, 0.1, 0.1], size=400)  # "e": unseen
    _, ref_counts, cur_counts = drift.category_counts(ref, cur)
    observed, expected = drift.chi_squared_table(ref_counts, cur_counts)
    want = stats.chisquare(observed, expected)
    stat, p = drift.chi_squared(ref, cur)
    assert stat == pytest.approx(want.statistic, abs=1e-9) and p == pytest.approx(want.pvalue, abs=1e-9)
    assert expected[-1] / expected.sum() == pytest.approx(drift.EPS / (1 + drift.EPS))  # the unseen category
    p_ref, p_cur = drift._proportions(ref_counts), drift._proportions(cur_counts)
    assert drift.js_distance(p_ref, p_cur) == pytest.approx(jensenshannon(p_ref, p_cur), abs=1e-9)
    assert drift.jensen_shannon(ref, cur, True) == pytest.approx(jensenshannon(p_ref, p_cur), abs=1e-9)
    # the Z-test of two proportions is the chi-squared test of the 2x2 table without continuity correction: z^2 = chi2
    a, b = rng.choice([0, 1], p=[0.6, 0.4], size=500), rng.choice([0, 1], p=[0.5, 0.5], size=300)
    z, pz = drift.z_test(a, b)
    table = np.array([np.bincount(a), np.bincount(b)])
    chi2, p2, _, _ = stats.chi2_contingency(table, correction=False)
    assert z**2 == pytest.approx(chi2, abs=1e-9) and pz == pytest.approx(p2, abs=1e-9)


@pytest.mark.parametrize("shift,anchor", [(0.1, 0.010), (0.25, 0.060), (0.5, 0.239), (1.0, 0.930)])
def test_psi_anchors_of_a_normal_mean_shift(shift, anchor):
    # exact: the reference's deciles are the normal's, a shifted normal's mass in each decile bin
    z = stats.norm.ppf(np.linspace(0, 1, 11))
    q = np.diff(stats.norm.cdf(z - shift))
    exact = float(np.sum((q - 0.1) * np.log(q / 0.1)))
    assert exact == pytest.approx(anchor, abs=0.005)
    # and our PSI on large samples of the two normals
    rng = np.random.default_rng(1)
    measured = drift.psi(rng.normal(size=200_000), rng.normal(shift, 1, size=200_000))
    assert measured == pytest.approx(exact, rel=0.05, abs=0.001)


def test_psi_empty_bins_count_at_the_floor():
    ref = np.arange(100.0)
    cur = np.full(50, 1000.0)  # all in the top bin: the nine others empty
    p, q = np.full(10, 0.1), np.array([drift.EPS] * 9 + [1.0])
    assert drift.psi(ref, cur) == pytest.approx(float(np.sum((q - p) * np.log(q / p))), abs=1e-12)


def test_evidentlys_rule_picks_the_test_by_size_and_kind(rng):
    small = drift.column_drift(rng.normal(size=500), rng.normal(size=200))
    assert small["kind"] == "numeric" and small["test"] == "ks" and small["threshold"] == 0.05
    large = drift.column_drift(rng.normal(size=2000), rng.normal(1, 1, size=500))
    assert large["test"] == "wasserstein_normed" and large["drift"] and large["score"] > 0.5
    few = drift.column_drift(rng.integers(0, 4, size=300).astype(float), rng.integers(0, 4, size=300).astype(float))
    assert few["kind"] == "categorical" and few["test"] == "chi_squared"  # 4 distinct numbers: categories
    binary = drift.column_drift(rng.choice(["y", "n"], size=300), rng.choice(["y", "n"], size=300))
    assert binary["test"] == "z_test" and not binary["drift"]
    js = drift.column_drift(rng.choice(list("abc"), size=1500), np.array(["a"] * 400))
    assert js["test"] == "jensen_shannon" and js["drift"]


def test_mmd_permutation_test_is_calibrated_powerful_and_seeded():
    rng = np.random.default_rng(2)
    p_values = [drift.mmd_test(rng.normal(size=(100, 8)), rng.normal(size=(60, 8)), n_permutations=100,
                               seed=s)["p_value"] for s in range(60)]
    fpr = np.mean(np.array(p_values) < 0.05)
    assert fpr <= 0.12  # alpha 0.05 over 60 draws: a false-positive rate near it (binomial sd 0.028)
    assert np.mean(p_values) == pytest.approx(0.5, abs=0.12)  # and p roughly uniform (sd of the mean 0.037)
    ref = rng.normal(size=(100, 8))
    shifted = rng.normal(size=(60, 8)) + np.r_[1.5, np.zeros(7)]
    result = drift.mmd_test(ref, shifted, n_permutations=200, seed=0)
    assert result["drift"] and result["p_value"] == 1 / 201
    again = drift.mmd_test(ref, shifted[:30] * 0.9, n_permutations=200, seed=7)
    assert again["p_value"] == drift.mmd_test(ref, shifted[:30] * 0.9, n_permutations=200, seed=7)["p_value"]


def test_mmd_statistic_is_the_unbiased_estimate():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 1
    sigma = 1.3
    k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2))  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    want = ((kxx.sum() - 7) / 42 + (kyy.sum() - 5) / 20 - 2 * kxy.mean())
    assert drift.mmd_test(x, y, n_permutations=10, sigma=sigma)["mmd2"] == pytest.approx(want, abs=1e-12)
    pooled = np.concatenate([x, y])
    d2 = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)[np.triu_indices(12, 1)]
    assert drift.mmd_test(x, y, n_permutations=10)["sigma"] == pytest.approx(np.sqrt(np.median(d2) / 2))


def test_fashion_mnist_drift_ci_sized():
    """The acceptance study (scripts/studies/drift_power.py) in small: 20 resamples of 200 test images against 500
    other test images (the training file takes seconds to read), raw pixels projected on 20 principal components of
    the reference instead of a classifier's features."""
    import cv2

    from dlforge.data.idx import read_idx
    from dlforge.data.images import FASHION_DIR, FASHION_FILES

    files = [FASHION_DIR / name for name in FASHION_FILES["test"]]
    if not all(f.is_file() for f in files):
        pytest.fail("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist", pytrace=False)
    rng = np.random.default_rng(0)
    images, all_labels = read_idx(files[0]) / 255.0, read_idx(files[1])
    order = rng.permutation(len(images))
    held = images[order[:500]].reshape(500, -1)
    test, labels = images[order[500:]], all_labels[order[500:]]
    mean = held.mean(0)
    components = np.linalg.svd(held - mean, full_matrices=False)[2][:20]  # (20, 784)
    project = lambda images: (images.reshape(len(images), -1) - mean) @ components.T  # noqa: E731
    reference = project(held)
    turn = cv2.getRotationMatrix2D((13.5, 13.5), 15.0, 1.0)
    pools = {"no drift": test, "noise": np.clip(test + rng.normal(0, 0.2, test.shape), 0, 1),
             "rotation": np.stack([cv2.warpAffine(im, turn, (28, 28), flags=cv2.INTER_LINEAR) for im in test])}
    prior = np.where(labels == 0, 0.5 / np.sum(labels == 0), 0.5 / np.sum(labels != 0))
    rate = lambda pool, weights=None: drift.rejection_rate(  # noqa: E731
        reference, project(pool), 200, 20, n_permutations=100, weights=weights)["rate"]
    assert rate(pools["no drift"]) <= 0.15  # alpha 0.05; 20 resamples (binomial sd 0.05)
    assert rate(test, prior) >= 0.9 and rate(pools["noise"]) >= 0.9 and rate(pools["rotation"]) >= 0.9
