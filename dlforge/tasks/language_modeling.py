"""Language modeling: the next token (GPT, char-RNN), a masked token (BERT), or an instruction-tuned answer.

Metrics: next-token accuracy, perplexity, bits per token and per character (`dlforge.eval.metrics.TokenMetrics`).
An instruction-tuned model (`info["chat"]`) is also scored by the exact match of its greedy answers on the
validation and test splits (`dlforge.llm.chat.answer_report`).
"""

from __future__ import annotations

from typing import Any

import torch

from dlforge.eval.metrics import TokenMetrics
from dlforge.registry import register_task
from dlforge.tasks.base import Task


@register_task("language_modeling")
class LanguageModeling(Task):
    """The next (or a masked) token."""

    name = "language_modeling"
    report_key = "answers"
    varying_dims = (1,)

    def metric_set(self, chars_per_token: float | None = 1.0, loss_name: str = "") -> TokenMetrics:
        return TokenMetrics("language_modeling", chars_per_token, loss_name)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> TokenMetrics:
        per_split = info.get("chars_per_token")  # 1 (characters) when the info predates it
        chars_per_token = per_split.get(split) if isinstance(per_split, dict) else 1.0
        return TokenMetrics("language_modeling", chars_per_token, loss_name)

    def decoded_scores(self, model: torch.nn.Module, dataset: Any, info: dict[str, Any], tokenizer: Any,
                       model_meta: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]] | None:
        if not info.get("chat"):  # instruction tuning only: greedy answers against the references
            return None
        from dlforge.data.sft import records_of
        from dlforge.llm.chat import answer_report

        return answer_report(model, tokenizer, records_of(dataset))
