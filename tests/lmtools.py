"""Helpers for language-model tests: a small deterministic corpus and the config of a tiny GPT trained on it."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the king and queen speak of love and war in the court while the fool sings of rain and wind "
         "who speaks first in the play romeo juliet hamlet answer question comedy tragedy history").split()


def write_corpus(folder: Path, seed: int = 0, docs: int = 4, lines: int = 60) -> Path:
    """A folder of small text files of the words above, deterministic."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(docs):
        text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(9)) for _ in range(lines))
        (folder / f"doc{i}.txt").write_text(text + "\n", encoding="utf-8")
    return folder


def tiny_lm_config(root: Path, corpus: Path, **train) -> dict:
    """A config dict: a GPT of 2 blocks, 32 wide, a window of 64, trained on windows of 16 BPE tokens of `corpus`, a
    few quiet steps."""
    return {"name": "tiny-base", "runs_dir": str(root / "runs"),
            "data": {"name": "lm_text", "corpus": str(corpus), "tokenizer": "bpe:300", "context": 16},
            "model": {"name": "gpt", "context": 64, "dim": 32, "n_layers": 2, "n_heads": 2},
            "train": {"max_steps": 4, "batch_size": 8, "lr": 3e-3, "progress": False, "tensorboard": False,
                      "eval_every": 4, "checkpoint_every": None, "seed": 0, **train}}
