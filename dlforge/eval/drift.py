"""Drift statistics: is the current sample drawn from the reference's distribution? Numbers in, numbers out.

    column_drift(ref_ages, cur_ages)            # every statistic, the one Evidently's rule picks, drift yes/no
    mmd_test(ref_embeddings, cur_embeddings)    # {"mmd2", "p_value", "sigma", ...}: representation drift

Per column, as Evidently (0.4 docs, "data drift algorithm") defines them:
- PSI: sum (q - p) ln(q / p) over 10 bins cut at the reference's deciles; a bin empty on either side gets the
  proportion 1e-4 (as Evidently's PSI does), so a value only one side has counts heavily but finitely.
- Kolmogorov-Smirnov: sup |F_ref - F_cur| and its two-sided p-value (scipy's exact / asymptotic choice).
- Wasserstein-1: the area between the two empirical CDFs; normed: divided by the reference's (population) std,
  at least 0.001.
- chi-squared: the current category counts against the reference proportions times n_current (a category the
  reference lacks gets the proportion 1e-4 and the proportions are renormalized, so the statistic stays finite).
- Z-test of two proportions (binary columns): pooled standard error, two-sided p.
- Jensen-Shannon distance (natural log, as scipy): on category proportions, or for numbers on common bins over
  both samples (numpy's "sturges" edges), empty bins at 1e-4, as Evidently.
Evidently's rule (`choose_test`): numbers with more than 5 distinct reference values are numeric, the rest
categorical; with at most 1000 reference rows, KS (drift at p < 0.05) for numbers, chi-squared (Z-test when
binary) for categories; with more, normed Wasserstein >= 0.1 for numbers, Jensen-Shannon >= 0.1 for categories.

MMD^2 (Gretton et al. 2012), the unbiased estimate, with the Gaussian kernel exp(-d^2 / (2 sigma^2)) and sigma^2 =
median(d^2) / 2 over the distinct pairs of the pooled sample (alibi-detect's median heuristic). Its permutation
test computes the kernel matrix once and reuses it for every relabelling: p = (1 + #{perm >= observed}) / (1 + n).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

EPS = 1e-4  # the proportion an empty bin or unseen category gets (Evidently's)
SMALL_REFERENCE = 1000  # Evidently's rule: at most this many reference rows -> statistical tests, else distances
CATEGORICAL_UNIQUE = 5  # numbers with at most this many distinct values are treated as categories
P_THRESHOLD, DISTANCE_THRESHOLD = 0.05, 0.1


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index on `bins` bins cut at the reference's quantiles (outer bins open-ended)."""
    ref, cur = _numbers(reference), _numbers(current)
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))  # ties merge bins of a lumpy column
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    p = _proportions(np.histogram(ref, edges)[0])
    q = _proportions(np.histogram(cur, edges)[0])
    return float(np.sum((q - p) * np.log(q / p)))


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: (statistic, two-sided p-value). The statistic is the largest gap between the
    two empirical CDFs, evaluated at every observed value; the p-value is scipy's (exact for small samples)."""
    from scipy import stats

    ref, cur = np.sort(_numbers(reference)), np.sort(_numbers(current))
    at = np.concatenate([ref, cur])
    gap = np.abs(np.searchsorted(ref, at, side="right") / len(ref) - np.searchsorted(cur, at, side="right") / len(cur))
    return float(gap.max()), float(stats.ks_2samp(ref, cur).pvalue)


def wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein-1 between the empirical distributions: the integral of |F_ref - F_cur| over the line."""
    ref, cur = np.sort(_numbers(reference)), np.sort(_numbers(current))
    points = np.sort(np.concatenate([ref, cur]))
    widths = np.diff(points)
    f_ref = np.searchsorted(ref, points[:-1], side="right") / len(ref)
    f_cur = np.searchsorted(cur, points[:-1], side="right") / len(cur)
    return float(np.sum(np.abs(f_ref - f_cur) * widths))


def wasserstein_normed(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein-1 over the reference's population std (at least 0.001), Evidently's scale-free version."""
    return wasserstein(reference, current) / max(float(np.std(_numbers(reference))), 0.001)


def category_counts(reference: Any, current: Any) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """The categories of both samples (the reference's first, in sorted order) and each sample's counts."""
    ref, cur = list(reference), list(current)
    seen = sorted(set(ref), key=str)
    categories = seen + sorted(set(cur) - set(seen), key=str)
    index = {c: i for i, c in enumerate(categories)}
    count = lambda values: np.bincount([index[v] for v in values], minlength=len(categories))  # noqa: E731
    return categories, count(ref), count(cur)


def chi_squared(reference: Any, current: Any) -> tuple[float, float]:
    """(statistic, p-value) of the current counts against the reference proportions times n_current."""
    from scipy import stats

    _, ref, cur = category_counts(reference, current)
    observed, expected = chi_squared_table(ref, cur)
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, len(observed) - 1))


def chi_squared_table(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(observed, expected): the current counts, and the reference proportions (unseen ones at 1e-4, renormalized)
    times the current total."""
    share = ref_counts / ref_counts.sum()
    share = np.where(share > 0, share, EPS)
    return cur_counts.astype(np.float64), share / share.sum() * cur_counts.sum()


def z_test(reference: Any, current: Any) -> tuple[float, float]:
    """Two-proportion Z-test for a binary column: (z, two-sided p-value) on the share of the reference's first
    category (pooled standard error)."""
    from scipy import stats

    _, ref, cur = category_counts(reference, current)
    n1, n2 = ref.sum(), cur.sum()
    p1, p2 = ref[0] / n1, cur[0] / n2
    pooled = (ref[0] + cur[0]) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = float((p1 - p2) / se)
    return z, float(2 * stats.norm.sf(abs(z)))


def jensen_shannon(reference: Any, current: Any, categorical: bool) -> float:
    """Jensen-Shannon distance (natural log) between the two samples' proportions: of categories, or of numbers on
    common "sturges" bins over both samples; empty bins at 1e-4."""
    if categorical:
        _, ref, cur = category_counts(reference, current)
    else:
        a, b = _numbers(reference), _numbers(current)
        edges = np.histogram_bin_edges(np.concatenate([a, b]), bins="sturges")
        ref, cur = np.histogram(a, edges)[0], np.histogram(b, edges)[0]
    return js_distance(_proportions(ref), _proportions(cur))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """sqrt((KL(p || m) + KL(q || m)) / 2), m = (p + q) / 2, of two probability vectors (normalized here)."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    kl = lambda a: np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / m), 0.0))  # noqa: E731
    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def is_categorical(reference: Any) -> bool:
    """Evidently's typing: texts are categories, and so are numbers with at most 5 distinct values."""
    values = np.asarray(list(reference), dtype=object)
    if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return True
    return len(np.unique(values.astype(np.float64))) <= CATEGORICAL_UNIQUE


def choose_test(n_reference: int, categorical: bool, n_categories: int) -> str:
    """The statistic Evidently's default rule uses for a column (see the module docstring)."""
    if n_reference <= SMALL_REFERENCE:
        if categorical:
            return "z_test" if n_categories <= 2 else "chi_squared"
        return "ks"
    return "jensen_shannon" if categorical else "wasserstein_normed"


def column_drift(reference: Any, current: Any, categorical: bool | None = None) -> dict[str, Any]:
    """Every statistic that fits the column, the one Evidently's rule picks (`test`, its `score`, `threshold`) and
    `drift`: p < 0.05 for a test, distance >= 0.1 for a distance."""
    ref, cur = list(reference), list(current)
    if not ref or not cur:
        raise ValueError("column_drift: both samples need at least one value")
    categorical = is_categorical(ref) if categorical is None else categorical
    out: dict[str, Any] = {"kind": "categorical" if categorical else "numeric", "n_reference": len(ref),
                           "n_current": len(cur)}
    if categorical:
        categories, _, _ = category_counts(ref, cur)
        stat, p = chi_squared(ref, cur)
        out["statistics"] = {"chi_squared": {"statistic": stat, "p_value": p},
                             "jensen_shannon": jensen_shannon(ref, cur, True)}
        if len(categories) <= 2:
            z, pz = z_test(ref, cur)
            out["statistics"]["z_test"] = {"statistic": z, "p_value": pz}
        n_categories = len(categories)
    else:
        stat, p = ks(ref, cur)
        out["statistics"] = {"psi": psi(ref, cur), "ks": {"statistic": stat, "p_value": p},
                             "wasserstein": wasserstein(ref, cur), "wasserstein_normed": wasserstein_normed(ref, cur),
                             "jensen_shannon": jensen_shannon(ref, cur, False)}
        n_categories = 0
    test = choose_test(len(ref), categorical, n_categories)
    value = out["statistics"][test]
    if isinstance(value, dict):
        out.update(test=test, score=value["p_value"], threshold=P_THRESHOLD, drift=value["p_value"] < P_THRESHOLD)
    else:
        out.update(test=test, score=value, threshold=DISTANCE_THRESHOLD, drift=value >= DISTANCE_THRESHOLD)
    return out


# --- representations: MMD ---------------------------------------------------------------------------------------


def median_sigma(sq_dists: torch.Tensor) -> float:
    """sigma with 2 sigma^2 = the median squared distance between distinct points (the median heuristic)."""
    n = sq_dists.shape[0]
    upper = sq_dists.cpu().numpy()[np.triu_indices(n, 1)]
    return float(max(float(np.median(upper)), 1e-12) / 2) ** 0.5  # numpy's median: the mean of the middle two


def mmd_test(reference: Any, current: Any, n_permutations: int = 500, seed: int = 0, sigma: float | None = None,
             alpha: float = 0.05) -> dict[str, Any]:
    """Unbiased MMD^2 between two samples of vectors (N, D) with a Gaussian kernel, and its permutation p-value.
    One kernel matrix of the pooled sample; each permutation relabels which rows are "reference" (a seeded torch
    generator: the same seed gives the same p)."""
    x = torch.as_tensor(np.asarray(reference), dtype=torch.float64).reshape(len(reference), -1)
    y = torch.as_tensor(np.asarray(current), dtype=torch.float64).reshape(len(current), -1)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"mmd_test: both samples need at least 2 rows, got {m} and {n}")
    pooled = torch.cat([x, y])
    sq = torch.cdist(pooled, pooled).pow(2)  # (N, N)
    sigma = median_sigma(sq) if sigma is None else float(sigma)
    kernel = torch.exp(-sq / (2 * sigma**2))
    kernel.fill_diagonal_(0.0)  # the unbiased estimate leaves out k(x, x)
    observed = _mmd2(kernel, torch.cat([torch.ones(m), torch.zeros(n)]).double()[None], m, n)[0]
    gen = torch.Generator().manual_seed(seed)
    exceed, done = 0, 0
    while done < n_permutations:  # in chunks: a (P, N) label matrix times the kernel
        chunk = min(128, n_permutations - done)
        order = torch.argsort(torch.rand(chunk, m + n, generator=gen), dim=1)
        labels = (order < m).double()  # (P, N): 1 where a row is drawn as "reference"
        exceed += int((_mmd2(kernel, labels, m, n) >= observed - 1e-12).sum())
        done += chunk
    p = (1 + exceed) / (1 + n_permutations)
    return {"mmd2": float(observed), "p_value": p, "sigma": sigma, "n_permutations": n_permutations,
            "n_reference": m, "n_current": n, "threshold": alpha, "drift": p < alpha}


def rejection_rate(reference: Any, pool: Any, size: int, resamples: int, seed: int = 0, n_permutations: int = 200,
                   alpha: float = 0.05, weights: np.ndarray | None = None) -> dict[str, Any]:
    """The share of `resamples` draws of `size` rows from `pool` (without replacement; with probabilities `weights`
    when given, e.g. to shift the class prior) that `mmd_test` against `reference` calls drifted at `alpha`: the
    false-positive rate when the pool is the reference's distribution, the power when it is not."""
    pool = np.asarray(pool)
    rng = np.random.default_rng(seed)
    p_values = []
    for i in range(resamples):
        rows = rng.choice(len(pool), size=size, replace=False, p=weights)
        p_values.append(mmd_test(reference, pool[rows], n_permutations, seed=seed * 100_003 + i)["p_value"])
    rate = float(np.mean(np.array(p_values) < alpha))
    return {"rate": rate, "resamples": resamples, "size": size, "alpha": alpha, "n_permutations": n_permutations,
            "p_values": p_values}


def _mmd2(kernel: torch.Tensor, labels: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """Unbiased MMD^2 for each labelling (P, N) of the pooled rows, given the kernel with a zero diagonal."""
    row_sums = kernel.sum(1)  # (N,)
    total = row_sums.sum()
    kz = labels @ kernel  # (P, N)
    s_xx = (kz * labels).sum(1)
    s_xy = (labels * row_sums).sum(1) - s_xx  # sum over x of k(x, everything) minus the x-x part
    s_yy = total - 2 * s_xy - s_xx
    return s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2 * s_xy / (m * n)


def _numbers(values: Any) -> np.ndarray:
    a = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).reshape(-1)
    if len(a) == 0:
        raise ValueError("a drift statistic needs at least one value on each side")
    return a


def _proportions(counts: np.ndarray) -> np.ndarray:
    share = counts / max(counts.sum(), 1)
    return np.where(share > 0, share, EPS)
