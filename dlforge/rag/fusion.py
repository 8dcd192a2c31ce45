"""Hybrid retrieval's fusion of the dense and keyword lists: score-normalised linear fusion (the default) or weighted
reciprocal rank fusion, the method and weights stored with the index, and chosen on questions with known answers.

    fused = linear_fusion([dense, keyword], [1.0, 0.3])        # lists of (id, score), best first -> [(id, score)]
    fused = weighted_rrf([dense_ids, keyword_ids], [1.0, 0.2])  # ranks only
    fusion = Fusion.of(store.settings())                        # what the index was tuned to, or the defaults
    report = tune_fusion("questions.jsonl", "docs.db", save=True)   # rag.evaluate; `rag eval --tune-fusion`

Linear (as Weaviate's relativeScoreFusion): each list's scores min-max scaled to [0, 1] over that list (cosine for
dense, BM25 for keyword), then score(d) = dense weight x scaled dense score + keyword weight x scaled keyword score,
a chunk missing from a list getting 0 from it. Weighted RRF (Cormack, Clarke & Buettcher 2009, with a weight per
list as in Elasticsearch's and Vespa's): score(d) = sum over the lists of weight / (rrf_k + rank of d), ranks from 1.

Why linear with keyword weight 0.3 is the default (docs/results/retrieval.md, chosen on the blanked Debian FAQ, where
each question's text is removed from the pages so it must be matched by its answer's content): equal-weight RRF
dragged recall@5 from dense's 0.808 down to 0.725; weighted RRF (keyword 0.2) held 0.808 there but fell to 0.930 on
the held-out Python FAQ where dense alone finds 0.968, because ranks throw away how sure each list is. Linear fusion
keeps that: a clear dense winner stays first unless BM25 is as sure, so it held dense's recall@5 on both sets (0.808,
0.968) with a better MRR on all three (blanked 0.669 against dense 0.627). `tune_fusion` chooses the method and
weight again on any folder's own questions and records the choice in the index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dlforge.errors import ConfigError

METHODS = ("linear", "rrf")
RRF_K = 60
KEYWORD_WEIGHT = 0.3  # linear fusion's, chosen on the blanked Debian FAQ development set (see the module docstring)
GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)  # keyword weights tried by `tune_fusion`; dense is 1


@dataclass(frozen=True)
class Fusion:
    """How hybrid search fuses its two lists. `tuned_on` says where the weights came from (None: the defaults)."""

    method: str = "linear"
    keyword_weight: float = KEYWORD_WEIGHT
    dense_weight: float = 1.0
    rrf_k: int = RRF_K
    tuned_on: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"fusion method {self.method!r}: expected one of {', '.join(METHODS)}")
        if not (self.keyword_weight >= 0 and self.dense_weight >= 0 and self.keyword_weight + self.dense_weight > 0):
            raise ConfigError(f"fusion weights: expected non-negative weights, not both 0; got dense "
                              f"{self.dense_weight}, keyword {self.keyword_weight}")
        if self.rrf_k < 1:
            raise ConfigError(f"fusion rrf_k: expected an integer >= 1, got {self.rrf_k}")

    @classmethod
    def of(cls, settings: dict[str, Any]) -> Fusion:
        """The fusion an index records under settings["fusion"], else the defaults. A record without a method is
        from before linear fusion existed: weighted RRF."""
        stored = settings.get("fusion") or {}
        if stored and "method" not in stored:
            stored = {**stored, "method": "rrf"}
        return cls(**{k: stored[k] for k in ("method", "keyword_weight", "dense_weight", "rrf_k", "tuned_on")
                      if k in stored})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fuse(self, dense: list[tuple[int, float]], keyword: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """The two (id, score) lists, best first, fused: [(id, fused score)], best first."""
        weights = [self.dense_weight, self.keyword_weight]
        if self.method == "linear":
            return linear_fusion([dense, keyword], weights)
        return weighted_rrf([[i for i, _ in dense], [i for i, _ in keyword]], weights, self.rrf_k)


def linear_fusion(lists: list[list[tuple[int, float]]], weights: list[float] | None = None
                  ) -> list[tuple[int, float]]:
    """Fuse (id, score) lists: each list's scores min-max scaled to [0, 1] (all equal: 1), then [(id, sum of weight x
    scaled score)], best first, a list missing an id adding 0; ties keep the order first seen. A list with weight 0
    adds nothing, not even its ids."""
    weights = [1.0] * len(lists) if weights is None else weights
    if len(weights) != len(lists):
        raise ValueError(f"{len(lists)} lists, {len(weights)} weights")
    scores: dict[int, float] = {}
    for pairs, weight in zip(lists, weights, strict=True):
        if weight == 0 or not pairs:
            continue
        values = [s for _, s in pairs]
        low, span = min(values), max(values) - min(values)
        for item, value in pairs:
            scaled = (value - low) / span if span > 0 else 1.0
            scores[item] = scores.get(item, 0.0) + weight * scaled
    return sorted(scores.items(), key=lambda kv: -kv[1])  # sorted() is stable


def weighted_rrf(rankings: list[list[int]], weights: list[float] | None = None, rrf_k: int = RRF_K
                 ) -> list[tuple[int, float]]:
    """Fuse ranked id lists: [(id, sum of weight / (rrf_k + rank))], best first; ties keep the order first seen.
    A list with weight 0 adds nothing, not even its ids."""
    weights = [1.0] * len(rankings) if weights is None else weights
    if len(weights) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings, {len(weights)} weights")
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if weight == 0:
            continue
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])  # sorted() is stable
