"""Language modeling: the next token (GPT, char-RNN), a masked token (BERT), or an instruction-tuned answer.

Metrics: next-token accuracy, perplexity, bits per token and per character (`dlforge.eval.metrics.TokenMetrics`).
An instruction-tuned model (`info["chat"]`) is also scored by the exact match of its greedy answers on the
validation and test splits (`dlforge.llm.chat.answer_report`). Predict: a file of prompts to the model's greedy
continuation of each (an instruction-tuned model: its reply to each, as a message).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.eval.metrics import TokenMetrics
from dlforge.registry import register_task
from dlforge.tasks.base import Task

PROMPTS_PER_BATCH = 32  # prompts generated together in one left-padded batch


@register_task("language_modeling")
class LanguageModeling(Task):
    """The next (or a masked) token."""

    name = "language_modeling"
    report_key = "answers"
    varying_dims = (1,)
    generates = True

    def metric_set(self, chars_per_token: float | None = 1.0, loss_name: str = "") -> TokenMetrics:
        return TokenMetrics("language_modeling", chars_per_token, loss_name)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> TokenMetrics:
        per_split = info.get("chars_per_token")  # 1 (characters) when the info predates it
        chars_per_token = per_split.get(split) if isinstance(per_split, dict) else 1.0
        return TokenMetrics("language_modeling", chars_per_token, loss_name)

    def decoded_scores(self, model: torch.nn.Module, dataset: Any, info: dict[str, Any], tokenizer: Any,
                       model_meta: dict[str, Any], train: Any = None) -> tuple[dict[str, float], dict[str, Any]] | None:
        if not info.get("chat"):  # instruction tuning only: greedy answers against the references
            return None
        from dlforge.data.sft import records_of
        from dlforge.llm.chat import answer_report

        return answer_report(model, tokenizer, records_of(dataset))

    def predict(self, model: torch.nn.Module, input_path: Path) -> list[dict[str, Any]]:
        """The greedy continuation of each prompt of a text file (one per line) or a .jsonl file ({"prompt": ...}
        or {"text": ...} records); for an instruction-tuned model, its reply to each as a chat message."""
        from dlforge.data.corpus import read_text_lines
        from dlforge.llm.chat import chat_batch
        from dlforge.llm.generate import generate_batch
        from dlforge.text.tokenizer import model_tokenizer

        prompts = read_text_lines(input_path, ("prompt", "text"))
        tokenizer = model_tokenizer(model.meta, where="the model folder")
        generate = chat_batch if _is_chat(model.meta) else generate_batch
        rows = []
        for start in range(0, len(prompts), PROMPTS_PER_BATCH):
            chunk = prompts[start:start + PROMPTS_PER_BATCH]
            results = generate(model, tokenizer, [text for _, text in chunk], temperature=0.0)
            rows += [{"line": number, "prompt": text, "completion": r.completion, "stop_reason": r.stop_reason,
                      "tokens": len(r.tokens)} for (number, text), r in zip(chunk, results, strict=True)]
        return rows

    def predict_input(self, preprocessing: dict[str, Any]) -> tuple[str, str] | None:
        what = "the model's reply to each, as a chat message" if preprocessing.get("kind") == "chat" else \
            "the model's greedy continuation of each (sample with dlforge generate)"
        return "prompts.txt", f'prompts, one per line, or a .jsonl file of {{"prompt": ...}} records; gives {what}'


def _is_chat(meta: dict[str, Any]) -> bool:
    """An instruction-tuned model: trained on chat-templated conversations."""
    return (meta["extra"].get("preprocessing.json") or {}).get("kind") == "chat"
