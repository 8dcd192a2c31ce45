"""What a run starts from: train.transfer's backbone or every weight of train.init_from, loaded into a new model and
recorded resolved (the model folder it named then, and its weights' SHA-256) in the run's run.json, so that
re-running a config whose init_from says `latest:NAME` can be checked against what the run really used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.artifacts import load_model, read_json, weights_sha256
from dlforge.config import Config
from dlforge.errors import ConfigError, DlforgeError, note
from dlforge.runs.rundir import model_dir

RUN_FILE = "run.json"  # what a run resolved when it started (its init_from), beside the config.yaml it was given


def load_start(model: torch.nn.Module, cfg: Config, tokenizer: Any) -> dict[str, str] | None:
    """Load what a fresh run starts from (train.transfer's backbone, or every weight of train.init_from) and return
    it resolved, as run.json and the model card record it: the key and reference as written, the model folder it
    names now, and the SHA-256 of that folder's weights. None for a run from scratch."""
    t = cfg.train
    if t.transfer is not None:
        key, ref = "train.transfer.init_from", t.transfer.init_from
        folder = transfer_backbone(model, ref, cfg.runs_dir, tokenizer)
    elif t.init_from is not None:
        key, ref = "train.init_from", t.init_from
        folder = init_from(model, ref, cfg.runs_dir, tokenizer=tokenizer)
    else:
        return None
    record = {"key": key, "ref": ref, "path": str(folder.resolve()), "weights_sha256": weights_sha256(folder)}
    note(f"{key} {ref}: {record['path']} (weights SHA-256 {record['weights_sha256']})")
    return record


def recorded_start(run_path: Path) -> dict[str, str] | None:
    """What a run started from, as `load_start` recorded it (None for a run from scratch or one without run.json)."""
    path = run_path / RUN_FILE
    return read_json(path).get("started_from") if path.is_file() else None


def transfer_backbone(model: torch.nn.Module, ref: str, runs_dir: str, tokenizer: Any = None) -> Path:
    """Load the backbone of the source `ref` into `model`; return the source's folder. Text data must be tokenized
    with the tokenizer the source model was trained with."""
    from dlforge.train import transfer

    try:
        source, source_tokenizer, folder = _transfer_source(ref, runs_dir)
    except DlforgeError as exc:
        from dlforge.text.minilm import minilm_hint

        raise ConfigError(f"train.transfer.init_from: {exc}{minilm_hint(ref)}") from None
    if tokenizer is not None and source_tokenizer is not None:
        from dlforge.text.tokenizer import check_tokenizer

        check_tokenizer(tokenizer, source_tokenizer, f"train.transfer.init_from {ref}")
    transfer.load_backbone(model, source)
    return folder


def init_from(model: torch.nn.Module, ref: str, runs_dir: str | Path = "runs", tokenizer: Any = None) -> Path:
    """Load every weight of the run or model folder `ref` into `model` (the same architecture and shapes); return
    the source's model folder. Text data must use the tokenizer the source was trained with: the same vocabulary,
    checked by hash; only a chat template may be added (instruction tuning), and the new run records the new hash."""
    from dlforge.train import transfer

    where = f"train.init_from {ref}"
    try:
        folder = model_dir(ref, runs_dir)
        source, meta = load_model(folder)
    except DlforgeError as exc:
        raise ConfigError(f"train.init_from: {exc}") from None
    trained_with = tokenizer_hash(meta["extra"].get("preprocessing.json"))
    if tokenizer is not None and trained_with is not None and tokenizer.hash != trained_with:
        from dlforge.text.tokenizer import check_tokenizer, model_tokenizer, same_vocabulary

        if not same_vocabulary(tokenizer, model_tokenizer(meta, str(folder))):
            check_tokenizer(tokenizer, trained_with, where)  # raises, naming both hashes
    transfer.load_all(model, source, where)
    return folder


def _transfer_source(ref: str, runs_dir: str) -> tuple[torch.nn.Module, str | None, Path]:
    """The model to take a backbone from, the hash of its tokenizer if it has one, and its folder: a transformers
    BERT folder or 'minilm' (`dlforge.llm.bert_weights`), or a dlforge run or model folder."""
    from dlforge.llm.bert_weights import find_bert_folder, load_hf_bert

    folder = find_bert_folder(ref)
    if folder is not None:
        from dlforge.text.tokenizer import load_tokenizer

        has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()
        return load_hf_bert(folder, head="none"), load_tokenizer(folder).hash if has_tokenizer else None, folder
    folder = model_dir(ref, runs_dir)
    source, meta = load_model(folder)
    return source, tokenizer_hash(meta["extra"].get("preprocessing.json")), folder


def tokenizer_hash(preprocessing: dict[str, Any] | None) -> str | None:
    """The hash of the tokenizer a model was trained with, from its preprocessing.json (older runs: inside it)."""
    pre = preprocessing or {}
    if isinstance(pre.get("tokenizer_hash"), str):
        return pre["tokenizer_hash"]
    inside = pre.get("tokenizer")
    return inside.get("hash") if isinstance(inside, dict) else None


def prepare_pruning(model: torch.nn.Module, cfg: Config, data: Any, fresh: bool) -> None:
    """train.prune: masks on the model, or its channels cut (`dlforge.deploy.prune`). The channels to cut depend
    on the source weights alone, so a resume loads them again to cut the same ones (its checkpoint then fills the
    smaller layers)."""
    from dlforge.data.dataset import collate_batch
    from dlforge.deploy.prune import prepare
    from dlforge.tasks.base import TARGET_KEYS

    p, source = cfg.train.prune, cfg.train.init_from
    if p.structured and not fresh and source is not None:
        init_from(model, source, cfg.runs_dir, tokenizer=data.tokenizer)
    example = {k: v for k, v in collate_batch([data.train[0], data.train[1]]).items() if k not in TARGET_KEYS}
    channels = prepare(model, p, example, has_source=source is not None or cfg.train.transfer is not None)
    if channels:
        note("train.prune: channels kept " + ", ".join(f"{k} {v['after']}/{v['before']}" for k, v in channels.items()))
