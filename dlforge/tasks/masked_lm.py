"""Masked language modeling (BERT pretraining): the tokens hidden behind [MASK], from both sides of them.

Metrics: accuracy and perplexity over the masked tokens only (`dlforge.eval.metrics.TokenMetrics`; the data marks
every other label -100), without bits per character since only some tokens are scored. Predict: texts with [MASK]
in place of some words to the text filled with the likeliest tokens, and the likeliest candidates for each mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.errors import DataError
from dlforge.eval.metrics import TokenMetrics
from dlforge.registry import register_task
from dlforge.tasks.inputs import encode_texts, forward_in_batches
from dlforge.tasks.language_modeling import LanguageModeling

CANDIDATES = 3  # the likeliest tokens shown for each mask
TEXTS_PER_BATCH = 8  # a forward pass gives (texts, tokens, vocabulary) logits, 8 x 128 x 30522 floats: 125 MB


@register_task("masked_lm")
class MaskedLM(LanguageModeling):
    """The masked tokens of a text."""

    name = "masked_lm"
    generates = False  # a mask is filled from one forward

    def metric_set(self, chars_per_token: float | None = None, loss_name: str = "") -> TokenMetrics:
        return TokenMetrics("masked_lm", chars_per_token, loss_name)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> TokenMetrics:
        return TokenMetrics("masked_lm", None, loss_name)

    def predict(self, model: torch.nn.Module, input_path: Path) -> list[dict[str, Any]]:
        """Each text of a file (one per line, or .jsonl {"text": ...} records) with its [MASK] tokens filled by the
        likeliest token, and the likeliest candidates for each mask with their probabilities."""
        pre = model.meta["extra"]["preprocessing.json"]
        batch, lines, tokenizer = encode_texts(model, pre, Path(input_path))
        mask_token = tokenizer.id_to_token(tokenizer.mask_id)
        rows = []
        for start in range(0, len(lines), TEXTS_PER_BATCH):
            part = {k: v[start:start + TEXTS_PER_BATCH] for k, v in batch.items()}
            logits = forward_in_batches(model, part)  # (B, T, V)
            for i, (number, text) in enumerate(lines[start:start + TEXTS_PER_BATCH]):
                ids = part["input_ids"][i][part["attention_mask"][i].bool()]
                masks = (ids == tokenizer.mask_id).nonzero().squeeze(1)
                if len(masks) == 0:
                    raise DataError(f"{input_path}:{number}: no {mask_token} among the tokens the model reads; put "
                                    f"{mask_token} in place of a word to guess it")
                probs, top = logits[i, masks].softmax(-1).topk(CANDIDATES, dim=-1)  # (M, k)
                filled = ids.clone()
                filled[masks] = top[:, 0]
                candidates = [", ".join(f"{tokenizer.id_to_token(t)} {p:.3f}" for t, p in zip(ts, ps, strict=True))
                              for ts, ps in zip(top.tolist(), probs.tolist(), strict=True)]
                rows.append({"line": number, "text": text, "prediction": tokenizer.decode(filled[1:-1].tolist()),
                             "candidates": " | ".join(candidates)})
        return rows

    def predict_input(self, preprocessing: dict[str, Any]) -> tuple[str, str] | None:
        return ("masked.txt", 'texts with [MASK] in place of the words to guess, one per line, or a .jsonl file of '
                              '{"text": ...} records; gives each text filled in, and the likeliest tokens per mask')
