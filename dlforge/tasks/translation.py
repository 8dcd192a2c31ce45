"""Translation: a target sentence for a source sentence (an encoder-decoder Transformer).

Metrics: the teacher-forced target tokens' accuracy and perplexity (`dlforge.eval.metrics.TokenMetrics`), and on the
validation and test splits BLEU and chrF of beam search and greedy decoding (`dlforge.llm.translate`), with the
tokenizers of the model folder. Predict: a file of source sentences to their translations (beam search).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.eval.metrics import TokenMetrics
from dlforge.registry import register_task
from dlforge.tasks.base import Task


@register_task("translation")
class Translation(Task):
    """A target sentence per source sentence."""

    name = "translation"
    report_key = "translation"
    varying_dims = (1,)
    generates = True

    def metric_set(self, chars_per_token: float | None = None, loss_name: str = "") -> TokenMetrics:
        return TokenMetrics("translation", chars_per_token, loss_name)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> TokenMetrics:
        return TokenMetrics("translation", None, loss_name)  # no bits per character

    def decoded_scores(self, model: torch.nn.Module, dataset: Any, info: dict[str, Any], tokenizer: Any,
                       model_meta: dict[str, Any], train: Any = None) -> tuple[dict[str, float], dict[str, Any]] | None:
        """BLEU and chrF with beam search and greedy decoding, with the tokenizers of the model folder that
        `model_meta` describes (as `load_model` gives it)."""
        from dlforge.data.translation import translation_tokenizers
        from dlforge.llm.translate import evaluate_translation

        return evaluate_translation(model, *translation_tokenizers(model_meta, where="model"), dataset)

    def predict(self, model: torch.nn.Module, input_path: Path) -> list[dict[str, Any]]:
        """The translation (beam search) of each sentence of a text file (one per line) or a .jsonl file
        ({"source": ...} or {"text": ...} records)."""
        from dlforge.data.corpus import read_text_lines
        from dlforge.data.translation import translation_tokenizers
        from dlforge.llm.translate import translate

        sentences = read_text_lines(input_path, ("source", "text"))
        tokenizers = translation_tokenizers(model.meta, where="the model folder")
        out = translate(model, *tokenizers, [text for _, text in sentences])
        return [{"line": number, "source": t.source, "translation": t.translation, "finished": t.finished}
                for (number, _), t in zip(sentences, out, strict=True)]

    def predict_input(self, preprocessing: dict[str, Any]) -> tuple[str, str] | None:
        return ("sentences.txt", 'source sentences, one per line, or a .jsonl file of {"source": ...} records; gives '
                                 "the translation of each (beam search; dlforge translate sets the beam)")
