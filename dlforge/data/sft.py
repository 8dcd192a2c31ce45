"""Instruction tuning data: conversations from JSONL, rendered with a chat template, loss on the answers only.

    data: {name: sft_jsonl, path: shakespeare_qa, tokenizer: latest:gpt-shakespeare-bpe, max_length: 128}
    data: {name: sft_jsonl, path: my_chats.jsonl, tokenizer: runs/base-.../model, chat_template: my.jinja}

`path`: `shakespeare_qa` (questions about the plays, shipped with dlforge: `dlforge/data/instructions/`), a folder
holding `train.jsonl` (and `val.jsonl`, `test.jsonl`), or one .jsonl file whose last `val_fraction` of records is
the validation split. Each line is one of

    {"prompt": "Who speaks first in Hamlet?", "completion": "BERNARDO"}      a user turn and the assistant's answer
    {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}

and may carry other fields (kept for reports, e.g. `template`). A wrong line is a DataError naming the file, line
and field. The tokenizer is the base model's (`tokenizer`: a run such as `latest:NAME`, a model folder or a
tokenizer folder) with a chat template added (`chat_template`: `default`, a Jinja file or string; by default the
tokenizer's own, else `dlforge.text.chat.DEFAULT_CHAT_TEMPLATE`): the vocabulary is the base's, the hash is new, and
the fine-tuned model's folder keeps the tokenizer with its template, which `dlforge generate --chat` uses.

A conversation becomes tokens through `dlforge.text.chat.encode_chat`: every assistant turn (with its end-of-turn
token) is learned, every system and user token and every generation prompt is not. Labels are the next token where
that token is learned and -100 elsewhere, so prompt tokens add nothing to the loss. Sequences longer than
`max_length` tokens are cut (counted in `info["truncated"]`); one left with nothing to learn is dropped (counted in
`info["dropped"]`). Batches are right-padded to their longest row: `input_ids`, `attention_mask` (1 real, 0 padding)
and `labels` (-100 on padding), each (B, T).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch.utils.data import Dataset, Subset

from dlforge.config import DataConfig
from dlforge.data.corpus import jsonl_objects
from dlforge.data.dataset import DataBundle
from dlforge.errors import DataError
from dlforge.registry import register_dataset

SPLITS = ("train", "val", "test")
INSTRUCTIONS = Path(__file__).resolve().parent / "instructions"
BUILTIN = {"shakespeare_qa": INSTRUCTIONS / "shakespeare_qa"}


class SFTConfig(DataConfig):
    """Conversations from JSONL for instruction tuning, loss on the assistant's turns only."""

    path: str = Field(description="shakespeare_qa, a folder with train.jsonl (val.jsonl, test.jsonl), or a .jsonl file")
    tokenizer: str = Field(description="the base model's tokenizer: a run (latest:NAME), model folder or tokenizer")
    chat_template: str | None = Field(None, description="default, a Jinja file, or the template; default: the "
                                      "tokenizer's own, else dlforge's Question/Answer template")
    max_length: int = Field(256, ge=2, description="tokens per sequence at most (longer ones are cut)")
    val_fraction: float = Field(0.1, ge=0, lt=0.5, description="one .jsonl file: the share of records for validation")


class ChatDataset(Dataset):
    """Tokenized conversations; `ds[i]` is one sequence, `ds.__getitems__(idx)` a right-padded batch. `records`
    keeps each conversation ({"messages", "where", ...}) for answer evaluation."""

    def __init__(self, ids: list[list[int]], labels: list[list[int]], records: list[dict[str, Any]], pad_id: int):
        self.ids, self.labels, self.records, self.pad_id = ids, labels, records, pad_id
        self.lengths = [len(i) for i in ids]  # for train.group_by_length

    def __len__(self) -> int:
        return len(self.ids)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        t = max(self.lengths[i] for i in indices)
        ids = torch.full((len(indices), t), self.pad_id, dtype=torch.long)
        labels = torch.full((len(indices), t), -100, dtype=torch.long)
        mask = torch.zeros(len(indices), t, dtype=torch.long)
        for row, i in enumerate(indices):
            n = self.lengths[i]
            ids[row, :n] = torch.tensor(self.ids[i])
            labels[row, :n] = torch.tensor(self.labels[i])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}  # (B, T) each

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0, : self.lengths[i]] for k, v in self.__getitems__([i]).items()}


def records_of(ds: Dataset) -> list[dict[str, Any]]:
    """The conversations of a ChatDataset, or of a Subset of one, in order."""
    if isinstance(ds, Subset):
        inner = records_of(ds.dataset)
        return [inner[i] for i in ds.indices]
    return list(ds.records)


# --- reading -------------------------------------------------------------------------------------------------------


def read_conversations(path: str | Path) -> list[dict[str, Any]]:
    """The records of a .jsonl file as {"messages", "where": "file:line", **other fields}; `prompt`/`completion`
    records become a user and an assistant message."""
    from dlforge.text.chat import check_messages

    path = Path(path)
    records = []
    for number, record in jsonl_objects(path, expected="a JSON object with prompt and completion, or messages"):
        where = f"{path}:{number}"
        has_pair, has_messages = "prompt" in record or "completion" in record, "messages" in record
        if has_pair == has_messages:
            raise DataError(f"{where}: expected either prompt and completion, or messages (not both, not neither)")
        if has_pair:
            for key in ("prompt", "completion"):
                if not isinstance(record.get(key), str):
                    raise DataError(f"{where}: {key}: expected a string, got {type(record.get(key)).__name__}")
            messages = [{"role": "user", "content": record["prompt"]},
                        {"role": "assistant", "content": record["completion"]}]
        else:
            messages = check_messages(record["messages"], where)
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{where}: messages: no assistant message, so nothing to learn")
        rest = {k: v for k, v in record.items() if k not in ("prompt", "completion", "messages")}
        records.append({**rest, "messages": messages, "where": where})
    if not records:
        raise DataError(f"{path}: no records (an empty file)")
    return records


def split_files(path: str, val_fraction: float) -> dict[str, list[dict[str, Any]]]:
    """Records per split from a built-in name, a folder (train.jsonl, val.jsonl, test.jsonl) or one .jsonl file."""
    folder = BUILTIN.get(path, Path(path))
    if folder.is_dir():
        if not (folder / "train.jsonl").is_file():
            raise DataError(f"{folder}: no train.jsonl in this folder (expected train.jsonl, val.jsonl, test.jsonl)")
        return {s: read_conversations(folder / f"{s}.jsonl") for s in SPLITS if (folder / f"{s}.jsonl").is_file()}
    if not folder.is_file():
        raise DataError(f"data.path: {path}: no such file or folder, and not a built-in set ({', '.join(BUILTIN)})")
    records = read_conversations(folder)
    n_val = int(len(records) * val_fraction)
    return {"train": records[: len(records) - n_val], "val": records[len(records) - n_val:]}


# --- the data set --------------------------------------------------------------------------------------------------


def encode_records(tok: Any, records: list[dict[str, Any]], max_length: int
                   ) -> tuple[list[list[int]], list[list[int]], list[dict[str, Any]], dict[str, int]]:
    """(input ids, labels, the records kept, counts) of conversations: labels are the next token where it is
    learned, -100 elsewhere; sequences are cut to `max_length`."""
    from dlforge.text.chat import encode_chat

    ids, labels, kept = [], [], []
    counts = {"truncated": 0, "dropped": 0, "tokens": 0, "learned_tokens": 0}
    for record in records:
        try:
            tokens, learned = encode_chat(tok, record["messages"])
        except DataError as exc:
            raise DataError(f"{record['where']}: {exc}") from None
        if len(tokens) > max_length + 1:
            counts["truncated"] += 1
            tokens, learned = tokens[: max_length + 1], learned[: max_length + 1]
        row_labels = [t if keep else -100 for t, keep in zip(tokens[1:], learned[1:], strict=True)]
        if all(label == -100 for label in row_labels):
            counts["dropped"] += 1
            continue
        ids.append(tokens[:-1])
        labels.append(row_labels)
        kept.append(record)
        counts["tokens"] += len(tokens) - 1
        counts["learned_tokens"] += sum(label != -100 for label in row_labels)
    return ids, labels, kept, counts


@register_dataset(SFTConfig)
def sft_jsonl(config: SFTConfig) -> DataBundle:
    """Conversations from JSONL (prompt/completion or messages), chat-templated, loss on the answers only."""
    from dlforge.text.chat import read_template
    from dlforge.text.tokenizer import tokenizer_from_ref, with_chat_template

    base = tokenizer_from_ref(config.tokenizer)
    template = read_template(config.chat_template) if config.chat_template or not base.chat_template else None
    tok = with_chat_template(base, template) if template is not None else base
    if tok.eos_id is None and "eos_token" in tok.chat_template:
        raise DataError(f"data.tokenizer {config.tokenizer}: has no end-of-text token, which the chat template ends "
                        "each answer with; use a tokenizer with one (bpe) or give data.chat_template")
    per_split = split_files(config.path, config.val_fraction)
    pad_id = tok.pad_id if tok.pad_id is not None else tok.eos_id if tok.eos_id is not None else 0
    datasets, counts = {}, {}
    fingerprint = hashlib.sha256(tok.hash.encode())
    for split, records in per_split.items():
        ids, labels, kept, counts[split] = encode_records(tok, records, config.max_length)
        if kept:
            datasets[split] = ChatDataset(ids, labels, kept, pad_id)
            fingerprint.update(json.dumps([ids, labels]).encode())
    if "train" not in datasets:
        raise DataError(f"{config.path}: no training conversation has anything to learn within data.max_length "
                        f"{config.max_length}")
    info: dict[str, Any] = {
        "task": "language_modeling", "chat": True, "num_classes": None, "label_names": None, "source": config.path,
        "vocab_size": tok.vocab_size, "context": config.max_length, "tokenizer_type": tok.type,
        "tokenizer_hash": tok.hash, "records": {s: len(r) for s, r in per_split.items()},
        **{key: {s: c[key] for s, c in counts.items()} for key in ("tokens", "learned_tokens", "truncated",
                                                                     "dropped")},
        "chars_per_token": {s: None for s in per_split},  # the loss is over answers: no bits per character
    }  # fmt: skip
    preprocessing = {"kind": "chat", "tokenizer_hash": tok.hash, "tokenizer_type": tok.type,
                     "max_length": config.max_length, "source": config.path}
    return DataBundle(datasets["train"], datasets.get("val"), datasets.get("test"), info=info,
                      model_defaults={"vocab_size": tok.vocab_size}, preprocessing=preprocessing,
                      fingerprint=fingerprint.hexdigest()[:16], tokenizer=tok)
