"""What `dlforge predict` reads for a model fed with features, by the kind of its preprocessing (the `kind` of its
preprocessing.json): rows of a table, image files, consecutive days, or texts. Each kind has a reader, which
prepares new inputs exactly as the training inputs were, and a sentence for the model card on the file it reads.

    logits, keys = predict_logits(model, Path("new_rows.csv"))   # (N, C) and [{"line": 2}, {"line": 3}, ...]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlforge.errors import DlforgeError, warn
from dlforge.tasks.base import device_of

PREDICT_BATCH = 256  # inputs per forward pass: a large file never needs all its activations at once

Batch = dict[str, torch.Tensor]
Keys = list[dict[str, Any]]  # where each input came from: {"line": 7}, {"line": "img/3.png"}, ...


@dataclass(frozen=True)
class InputKind:
    example: str  # the input's file name in the model card's command
    describe: Callable[[dict[str, Any]], str]  # what that file holds, from preprocessing.json
    read: Callable[[torch.nn.Module, dict[str, Any], Path], tuple[Batch, Keys]]


def _table(model: torch.nn.Module, pre: dict[str, Any], path: Path) -> tuple[Batch, Keys]:
    from dlforge.data.tabular import prepare_inputs

    x, _, lines = prepare_inputs(pre, path, with_target=False)
    return {"x": x}, [{"line": line} for line in lines]


def _images(model: torch.nn.Module, pre: dict[str, Any], path: Path) -> tuple[Batch, Keys]:
    from dlforge.data.images import input_images, prepare_images

    files = input_images(path)
    return {"x": prepare_images(pre, files)}, [{"line": str(f)} for f in files]


def _days(model: torch.nn.Module, pre: dict[str, Any], path: Path) -> tuple[Batch, Keys]:
    from dlforge.data.weather_sequences import prepare_days

    x, keys = prepare_days(pre, path)
    return {"x": x}, keys


def _texts(model: torch.nn.Module, pre: dict[str, Any], path: Path) -> tuple[Batch, Keys]:
    batch, lines, _ = encode_texts(model, pre, path)
    return batch, [{"line": number} for number, _ in lines]


def encode_texts(model: torch.nn.Module, pre: dict[str, Any], path: Path
                 ) -> tuple[Batch, list[tuple[int, str]], Any]:
    """The texts of a file (one per line, or .jsonl {"text": ...} records) as a BERT reads them: [CLS] ids [SEP],
    padded to the model's max_length (input_ids, attention_mask), with a warning when some are cut; their (line,
    text) and the model's tokenizer."""
    from dlforge.data.corpus import read_text_lines
    from dlforge.data.masked_lm import frame
    from dlforge.text.tokenizer import model_tokenizer

    lines = read_text_lines(path)
    tokenizer = model_tokenizer(model.meta, where="the model folder")
    ids = tokenizer.encode_batch([text for _, text in lines])
    length = pre["max_length"]
    cut = sum(len(row) > length - 2 for row in ids)
    if cut:
        warn(f"{path}: {cut} of {len(ids)} texts are longer than the {length} tokens the model reads ([CLS] and "
             f"[SEP] included); each is cut to its first {length - 2}, as in training")
    return frame(ids, tokenizer, length), lines, tokenizer


def _describe_table(pre: dict[str, Any]) -> str:
    columns = ", ".join(spec["name"] for spec in pre["features"])
    return f"a CSV or Parquet file with the feature columns {columns} (a {pre['target']} column may be there; it is " \
           "not read)"


def _describe_images(pre: dict[str, Any]) -> str:
    return "an image file, or a folder of them (PNG, JPEG...), prepared as the training images"


def _describe_days(pre: dict[str, Any]) -> str:
    columns = ", ".join([pre["date_column"], *pre["measurements"]])
    return f"a CSV or Parquet file of consecutive days, columns {columns} and {pre['label_column']}; each run of " \
           f"{pre['window']} days gives the next day's class"


def _describe_texts(pre: dict[str, Any]) -> str:
    return 'a text file, one text per line, or a .jsonl file of {"text": ...} records'


KINDS: dict[str, InputKind] = {
    "tabular": InputKind("input.csv", _describe_table, _table),
    "image": InputKind("images/", _describe_images, _images),
    "sequence": InputKind("recent_days.csv", _describe_days, _days),
    "bert_text": InputKind("texts.txt", _describe_texts, _texts),
}


def _kind(pre: dict[str, Any]) -> InputKind:
    name = pre.get("kind", "tabular")  # the first tabular runs did not record their kind
    if name not in KINDS:
        raise DlforgeError(f"dlforge predict: cannot read inputs for a model of {name!r} inputs; expected one of "
                           f"{', '.join(KINDS)}")
    return KINDS[name]


def input_usage(pre: dict[str, Any]) -> tuple[str, str] | None:
    """(example file name, what it holds) of what `predict` reads for a model with this preprocessing.json."""
    kind = KINDS.get(pre.get("kind", "tabular"))
    return None if kind is None else (kind.example, kind.describe(pre))


def predict_logits(model: torch.nn.Module, path: Path) -> tuple[torch.Tensor, Keys]:
    """The model's logits (N, ...) for the inputs at `path`, read as its preprocessing.json says, and where each
    input came from."""
    pre = model.meta["extra"]["preprocessing.json"]
    batch, keys = _kind(pre).read(model, pre, Path(path))
    return forward_in_batches(model, batch), keys


@torch.no_grad()
def forward_in_batches(model: torch.nn.Module, batch: Batch, size: int = PREDICT_BATCH) -> torch.Tensor:
    """`model(batch).logits` computed `size` rows at a time on the model's device; float32 on the CPU."""
    device = device_of(model)  # the CPU for a model without parameters (an ONNX stand-in)
    n = len(next(iter(batch.values())))
    parts = []
    for start in range(0, n, size):
        part = {k: v[start:start + size].to(device) for k, v in batch.items()}
        parts.append(model(part).logits.float().cpu())
    return torch.cat(parts)
