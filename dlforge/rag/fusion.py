"""Hybrid retrieval's fusion of the dense and keyword lists: weighted reciprocal rank fusion, its weights stored
with the index, and the search that chooses them on a set of questions with known answers.

    fused = weighted_rrf([dense_ids, keyword_ids], [1.0, 0.2])           # [(id, score)], best first
    fusion = Fusion.of(store.settings())                                  # what the index was tuned to, or defaults
    report = tune_fusion("questions.jsonl", "docs.db", save=True)         # rag.evaluate; `rag eval --tune-fusion`

Weighted RRF (Cormack, Clarke & Buettcher 2009, with a weight per list as in Elasticsearch's and Vespa's weighted
RRF): score(d) = sum over the lists of weight / (rrf_k + rank of d), ranks from 1. Equal weights let a weaker
list drag a stronger one down: on the Debian FAQ with the question headings blanked out (so a question must be
matched by its answer's content), equal-weight fusion of MiniLM and BM25 finds the answer in the top 5 for 0.725 of
the questions where dense alone finds 0.808. The default keyword weight, 0.2, was chosen on that set (docs/results/
rag.md: a grid over 0 to 1; it keeps the plain FAQ at recall@5 1.0 and raises blanked recall@10 and MRR over dense
alone); `tune_fusion` chooses it again on any folder's own questions and records the choice in the index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dlforge.errors import ConfigError

RRF_K = 60
KEYWORD_WEIGHT = 0.2  # chosen on the blanked Debian FAQ development set (see the module docstring)
GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)  # keyword weights tried by `tune_fusion`; dense is 1


@dataclass(frozen=True)
class Fusion:
    """How hybrid search fuses its two lists. `tuned_on` says where the weights came from (None: the defaults)."""

    keyword_weight: float = KEYWORD_WEIGHT
    dense_weight: float = 1.0
    rrf_k: int = RRF_K
    tuned_on: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not (self.keyword_weight >= 0 and self.dense_weight >= 0 and self.keyword_weight + self.dense_weight > 0):
            raise ConfigError(f"fusion weights: expected non-negative weights, not both 0; got dense "
                              f"{self.dense_weight}, keyword {self.keyword_weight}")
        if self.rrf_k < 1:
            raise ConfigError(f"fusion rrf_k: expected an integer >= 1, got {self.rrf_k}")

    @classmethod
    def of(cls, settings: dict[str, Any]) -> Fusion:
        """The fusion an index records under settings["fusion"], else the defaults."""
        stored = settings.get("fusion") or {}
        return cls(**{k: stored[k] for k in ("keyword_weight", "dense_weight", "rrf_k", "tuned_on") if k in stored})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fuse(self, dense: list[int], keyword: list[int]) -> list[tuple[int, float]]:
        return weighted_rrf([dense, keyword], [self.dense_weight, self.keyword_weight], self.rrf_k)


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
