"""Masked language modeling (BERT pretraining): the tokens hidden behind [MASK], from both sides of them.

Metrics: accuracy and perplexity over the masked tokens only (`dlforge.eval.metrics.TokenMetrics`; the data marks
every other label -100), without bits per character since only some tokens are scored.
"""

from __future__ import annotations

from typing import Any

from dlforge.eval.metrics import TokenMetrics
from dlforge.registry import register_task
from dlforge.tasks.language_modeling import LanguageModeling


@register_task("masked_lm")
class MaskedLM(LanguageModeling):
    """The masked tokens of a text."""

    name = "masked_lm"

    def metric_set(self, chars_per_token: float | None = None, loss_name: str = "") -> TokenMetrics:
        return TokenMetrics("masked_lm", chars_per_token, loss_name)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> TokenMetrics:
        return TokenMetrics("masked_lm", None, loss_name)
