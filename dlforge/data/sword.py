"""Bibles from SWORD modules (the zText format of Debian's sword-text-* packages), as plain-text verses.

    for v in read_verses("KJV"):            # a module name, its abbreviation, a .conf file or a SWORD folder
        v.book, v.chapter, v.verse, v.text  # "Gen", 1, 1, "In the beginning God created the heaven and the earth."
    pairs = aligned_verses("KJV", "RV1909", max_words=20)   # [(kjv_verse, rv_verse), ...], both with text

A module is described by `<root>/mods.d/<name>.conf` (an INI-like file: `DataPath=`, `ModDrv=zText`,
`CompressType=ZIP`, `Versification=`, `Encoding=`, ...) and stored under `<root>/<DataPath>` as, per testament
(`ot`, `nt`), three files:

    .bzs   one record per compressed block, `<III`: offset in .bzz, compressed size, uncompressed size
    .bzv   one record per index entry, `<IIH`: block number, offset in the uncompressed block, length in bytes
    .bzz   the zlib-compressed blocks, one after another

Index entry i maps to a (book, chapter, verse) by the module's versification (`dlforge.data.versification`);
heading entries (module, testament, book, chapter) are skipped. Verse text is OSIS (or ThML / GBF) markup: tags go,
their words stay; notes, section titles and GBF footnotes go with their content; entities are unescaped, the
pilcrow is dropped and whitespace collapses to single spaces. Nothing is cached to disk; a whole Bible reads in
about a second.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dlforge.data.versification import VERSIFICATIONS
from dlforge.errors import DataError

SWORD_ROOT = Path("/usr/share/sword")
# the modules the Debian packages install, by the names and abbreviations a user may give
PACKAGES = {"engkjv2006eb": "sword-text-kjv", "kjv": "sword-text-kjv", "engweb2015eb": "sword-text-web",
            "web": "sword-text-web", "sparv1909eb": "sword-text-sparv", "rv1909": "sword-text-sparv"}
TESTAMENTS = ("ot", "nt")
# Whole books held out of training, for the Bible corpora and the verse-aligned translation pairs alike: each split
# holds about 5% of the text and of the short KJV / RV1909 verse pairs, from both testaments and several genres
# (history, lament, gospel, letter, prophecy). Every other book (the deuterocanon included) is training.
HELD_OUT_BOOKS = {"val": ("Josh", "Ezra", "Lam", "Mark"), "test": ("Judg", "Hos", "John", "Eph")}
_BLOCK = struct.Struct("<III")  # offset, compressed size, uncompressed size
_ENTRY = struct.Struct("<IIH")  # block, offset in block, length


@dataclass(frozen=True)
class Verse:
    book: str  # OSIS id: Gen, Exod, ..., Rev
    chapter: int
    verse: int
    text: str

    @property
    def ref(self) -> str:
        """The OSIS reference, e.g. Gen.1.1."""
        return f"{self.book}.{self.chapter}.{self.verse}"


@dataclass(frozen=True)
class SwordModule:
    """An installed module: its name, parsed .conf and data folder."""

    name: str
    conf: dict[str, str]
    conf_path: Path
    data_path: Path

    @property
    def versification(self) -> str:
        return self.conf.get("Versification", "KJV")

    @property
    def language(self) -> str:
        return self.conf.get("Lang", "")

    @property
    def abbreviation(self) -> str:
        return self.conf.get("Abbreviation", self.name)

    def verses(self, include_empty: bool = False) -> Iterator[Verse]:
        """Every verse in canonical order, as plain text; empty verses only with `include_empty`."""
        encoding = "utf-8" if self.conf.get("Encoding", "").upper().replace("-", "") == "UTF8" else "latin-1"
        for testament in TESTAMENTS:
            if not (self.data_path / f"{testament}.bzv").exists():
                continue  # a module of one testament only
            for ref, raw in _entries(self, testament):
                markup = raw.decode(encoding, errors="replace")
                end = _BOOK_END.search(markup)  # back matter after a book's end (the WEB's glossary) is no verse
                text = strip_markup(markup[:end.start()] if end else markup)
                if text or include_empty:
                    yield Verse(*ref, text)


# --- finding modules -----------------------------------------------------------------------------------------------


def parse_conf(path: Path) -> tuple[str, dict[str, str]]:
    """(module name, {key: value}) of a .conf file; a repeated key keeps its last value, a trailing backslash
    continues a value on the next line."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    name, conf, key = None, {}, None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if key is not None:  # a continued value
            conf[key] += "\n" + stripped.removesuffix("\\")
            key = key if stripped.endswith("\\") else None
            continue
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]") and name is None:
            name = stripped[1:-1]
        elif "=" in stripped:
            k, v = stripped.split("=", 1)
            conf[k.strip()] = v.strip().removesuffix("\\")
            key = k.strip() if v.strip().endswith("\\") else None
        else:
            raise DataError(f"{path}:{number}: expected [ModuleName] or Key=Value, got {stripped[:60]!r}")
    if name is None:
        raise DataError(f"{path}: no [ModuleName] line; not a SWORD module .conf file")
    return name, conf


def list_modules(root: str | Path = SWORD_ROOT) -> list[SwordModule]:
    """The modules whose .conf files are in `root`/mods.d, by name."""
    folder = Path(root) / "mods.d"
    return [_module(p, Path(root)) for p in sorted(folder.glob("*.conf"))] if folder.is_dir() else []


def find_module(module: str | Path | SwordModule, root: str | Path = SWORD_ROOT) -> SwordModule:
    """A module by name or abbreviation (case-insensitive) in `root`, or by the path of its .conf file."""
    if isinstance(module, SwordModule):
        return module
    path = Path(module)
    if path.suffix == ".conf" and path.is_file():
        sword_root = path.parent.parent if path.parent.name == "mods.d" else path.parent
        return _module(path, sword_root)
    wanted = str(module).lower()
    found = list_modules(root)
    for m in found:
        if wanted in (m.name.lower(), m.abbreviation.lower()):
            return m
    package = PACKAGES.get(wanted)
    hint = f"; install the Debian package {package} (apt-get install {package})" if package else ""
    installed = ", ".join(f"{m.name} ({m.abbreviation})" for m in found) or "none"
    raise DataError(f"SWORD module {str(module)!r} not found in {Path(root) / 'mods.d'} (installed: {installed}){hint}")


def _module(conf_path: Path, root: Path) -> SwordModule:
    name, conf = parse_conf(conf_path)
    driver = conf.get("ModDrv", "")
    if driver.lower() != "ztext":
        raise DataError(f"{conf_path}: ModDrv={driver}; dlforge reads zText Bible modules only")
    if conf.get("CompressType", "ZIP").upper() != "ZIP":
        raise DataError(f"{conf_path}: CompressType={conf['CompressType']}; dlforge reads ZIP (zlib) blocks only")
    if conf.get("Versification", "KJV") not in VERSIFICATIONS:
        raise DataError(f"{conf_path}: Versification={conf['Versification']} is not supported; "
                        f"expected one of {', '.join(VERSIFICATIONS)}")
    if "DataPath" not in conf:
        raise DataError(f"{conf_path}: no DataPath= line")
    return SwordModule(name, conf, conf_path, (root / conf["DataPath"]).resolve())


# --- the index -----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def index_references(versification: str, testament: str) -> tuple[tuple[str, int, int] | None, ...]:
    """(book, chapter, verse) of each index entry of a testament; None for the heading entries."""
    refs: list[tuple[str, int, int] | None] = [None, None]  # module and testament headings
    for book, _, chapters in VERSIFICATIONS[versification][testament]:
        refs.append(None)  # book heading
        for chapter, verses in enumerate(chapters, start=1):
            refs.append(None)  # chapter heading
            refs.extend((book, chapter, verse) for verse in range(1, verses + 1))
    return tuple(refs)


def verse_index(book: str, chapter: int, verse: int, versification: str = "KJV") -> tuple[str, int]:
    """(testament, index entry) of a verse, e.g. ("ot", 4) for Gen 1:1 and ("nt", 4) for Matt 1:1."""
    for testament in TESTAMENTS:
        try:
            return testament, index_references(versification, testament).index((book, chapter, verse))
        except ValueError:
            continue
    raise KeyError(f"{book} {chapter}:{verse} is not a verse of the {versification} versification")


def _entries(module: SwordModule, testament: str) -> Iterator[tuple[tuple[str, int, int], bytes]]:
    """(reference, raw verse bytes) of every verse entry of one testament."""
    files = {ext: module.data_path / f"{testament}.{ext}" for ext in ("bzs", "bzv", "bzz")}
    for path in files.values():
        if not path.is_file():
            raise DataError(f"{path}: missing; the module {module.name} is incomplete")
    blocks = files["bzs"].read_bytes()
    entries = files["bzv"].read_bytes()
    compressed = files["bzz"].read_bytes()
    refs = index_references(module.versification, testament)
    if len(entries) != _ENTRY.size * len(refs):
        raise DataError(f"{files['bzv']}: {len(entries)} bytes, but the {module.versification} versification of the "
                        f"{testament.upper()} has {len(refs)} entries of {_ENTRY.size} bytes")
    if len(blocks) % _BLOCK.size:
        raise DataError(f"{files['bzs']}: {len(blocks)} bytes, not a whole number of {_BLOCK.size}-byte records")
    n_blocks = len(blocks) // _BLOCK.size
    current, data = -1, b""
    for i, (block, offset, length) in enumerate(_ENTRY.iter_unpack(entries)):
        ref = refs[i]
        if ref is None:
            continue
        if length == 0:
            yield ref, b""
            continue
        if block != current:
            if block >= n_blocks:
                raise DataError(f"{files['bzv']}: {_name(ref)} points to block {block}, but there are {n_blocks}")
            start, size, usize = _BLOCK.unpack_from(blocks, block * _BLOCK.size)
            try:
                data = zlib.decompress(compressed[start:start + size])
            except zlib.error as exc:
                raise DataError(f"{files['bzz']}: block {block} (byte offset {start}) is damaged ({exc})") from None
            if len(data) != usize:
                raise DataError(f"{files['bzz']}: block {block} holds {len(data)} bytes, {files['bzs'].name} says "
                                f"{usize}")
            current = block
        if offset + length > len(data):
            raise DataError(f"{files['bzv']}: {_name(ref)} runs past the end of block {block}")
        yield ref, data[offset:offset + length]


def _name(ref: tuple[str, int, int]) -> str:
    return f"{ref[0]} {ref[1]}:{ref[2]}"


# --- markup ------------------------------------------------------------------------------------------------------

_BOOK_END = re.compile(r"<div\b(?=[^>]*\beID=)(?=[^>]*\btype=\"book\")[^>]*>")
_INLINE = ("w", "transchange", "divinename", "hi", "q", "foreign", "seg", "name", "rdg", "catchword", "reference",
           "abbr", "index", "a", "font", "span", "i", "b", "fi", "fr", "fo", "sup", "sub", "wh", "wg", "wt")
_ATTRS = r"""(?:[^>"']|"[^"]*"|'[^']*')*"""  # a tag's attributes, quoted values may hold '>'
# OSIS / ThML notes and titles and GBF footnotes (<RF>...<Rf>) go with their text; they do not nest
_SKIPPED = re.compile(rf"<(note|title)\b{_ATTRS}?(?<!/)>.*?</\1\s*>|<RF>.*?<Rf>", re.S | re.I)
_INLINE_TAG = re.compile(rf"</?(?:{'|'.join(_INLINE)})\b{_ATTRS}>", re.I)  # words, italics, divine names: no gap
_TAG = re.compile(rf"</?[A-Za-z][\w:.-]*{_ATTRS}>")  # lines, paragraphs, milestones: a word boundary
_GAP = re.compile(r"(\w)\x00+(?=\w)")


def strip_markup(markup: str) -> str:
    """Plain text of a verse's markup: words kept, tags dropped, notes and titles dropped with their content."""
    text = _SKIPPED.sub("\x00", markup)
    text = _INLINE_TAG.sub("", text)
    text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    # where a note was, letters on both sides are two words ("God<note>..</note>created"), punctuation joins
    text = _GAP.sub(r"\1 ", text).replace("\x00", "").replace("\u00b6", " ")
    return " ".join(text.split())


# --- several modules -----------------------------------------------------------------------------------------------


def read_verses(module: str | Path | SwordModule, root: str | Path = SWORD_ROOT,
                include_empty: bool = False) -> Iterator[Verse]:
    """Every verse of a module (by name, abbreviation or .conf path) as plain text, in canonical order."""
    return find_module(module, root).verses(include_empty)


def book_split(book: str) -> str:
    """"train", "val" or "test": the split a book belongs to (see HELD_OUT_BOOKS)."""
    for split, books in HELD_OUT_BOOKS.items():
        if book in books:
            return split
    return "train"


def word_count(text: str) -> int:
    """Words of a verse: runs of characters between whitespace."""
    return len(text.split())


def aligned_verses(module_a: str | Path | SwordModule, module_b: str | Path | SwordModule,
                   root: str | Path = SWORD_ROOT, max_words: int | None = None) -> list[tuple[Verse, Verse]]:
    """(verse of a, verse of b) for every reference that both modules have text for, in a's order; with
    `max_words`, only pairs where both sides have at most that many words. Verses are matched by reference, so
    modules of different versifications pair where their numbering agrees."""
    return align_verses(read_verses(module_a, root), read_verses(module_b, root), max_words)


def align_verses(verses_a: Iterable[Verse], verses_b: Iterable[Verse],
                 max_words: int | None = None) -> list[tuple[Verse, Verse]]:
    """`aligned_verses` of verses already read."""
    b_verses = {(v.book, v.chapter, v.verse): v for v in verses_b}
    pairs = []
    for va in verses_a:
        vb = b_verses.get((va.book, va.chapter, va.verse))
        if vb is None:
            continue
        if max_words is not None and (word_count(va.text) > max_words or word_count(vb.text) > max_words):
            continue
        pairs.append((va, vb))
    return pairs
