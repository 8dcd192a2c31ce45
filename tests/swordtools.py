"""Write small SWORD zText modules for tests: a .conf in mods.d and the .bzs / .bzv / .bzz files of each testament.

    root = write_ztext_module(tmp_path, "TinyKJV", {("Gen", 1, 1): "In the beginning", ("Rev", 22, 21): "Amen."})
    read_verses("TinyKJV", root=root)

Every index entry of the versification is written (most of them empty), verses grouped into one zlib block per
book, as osis2mod does with BlockType=BOOK.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from dlforge.data.sword import index_references


def write_ztext_module(root: Path, name: str, verses: dict[tuple[str, int, int], str], versification: str = "KJV",
                       lang: str = "en", abbreviation: str | None = None, encoding: str = "UTF-8") -> Path:
    """A module `name` under the SWORD folder `root` holding `verses` ((book, chapter, verse) -> markup)."""
    data_rel = f"modules/texts/ztext/{name.lower()}/"
    folder = root / data_rel
    folder.mkdir(parents=True, exist_ok=True)
    for testament in ("ot", "nt"):
        refs = index_references(versification, testament)
        blocks: list[bytes] = []
        current_book, block = None, bytearray()
        entries = []
        for ref in refs:
            text = verses.get(ref, "") if ref is not None else ""
            raw = text.encode("utf-8" if encoding == "UTF-8" else "latin-1")
            if ref is not None and ref[0] != current_book:  # a new book starts a new block
                if block:
                    blocks.append(bytes(block))
                current_book, block = ref[0], bytearray()
            if not raw:
                entries.append((0, 0, 0))
                continue
            entries.append((len(blocks), len(block), len(raw)))
            block += raw
        if block:
            blocks.append(bytes(block))
        bzz, bzs, offset = bytearray(), bytearray(), 0
        for b in blocks:
            packed = zlib.compress(b)
            bzs += struct.pack("<III", offset, len(packed), len(b))
            bzz += packed
            offset += len(packed)
        (folder / f"{testament}.bzs").write_bytes(bytes(bzs))
        (folder / f"{testament}.bzv").write_bytes(b"".join(struct.pack("<IIH", *e) for e in entries))
        (folder / f"{testament}.bzz").write_bytes(bytes(bzz))
    conf = root / "mods.d" / f"{name.lower()}.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"[{name}]\nDataPath=./{data_rel}\nModDrv=zText\nSourceType=OSIS\nEncoding={encoding}\n"
                    f"CompressType=ZIP\nBlockType=BOOK\nVersification={versification}\nLang={lang}\n"
                    f"Abbreviation={abbreviation or name}\nAbout=A test module \\\n  over two lines\n",
                    encoding="utf-8")
    return root
