"""The SWORD reader: index layout and versification, markup stripping, damaged modules, and the installed Bibles."""

from __future__ import annotations

import struct
import zlib

import pytest
from swordtools import write_ztext_module

from dlforge.data.sword import (
    HELD_OUT_BOOKS,
    SWORD_ROOT,
    align_verses,
    aligned_verses,
    book_split,
    find_module,
    index_references,
    parse_conf,
    read_verses,
    strip_markup,
    verse_index,
    word_count,
)
from dlforge.data.versification import VERSIFICATIONS
from dlforge.errors import DataError

# --- the index --------------------------------------------------------------------------------------------------


def test_index_layout_matches_hand_counted_positions():
    # entry 0 module heading, 1 testament heading, 2 Genesis heading, 3 chapter 1 heading, 4 Gen 1:1 ...
    assert verse_index("Gen", 1, 1) == ("ot", 4) and verse_index("Gen", 1, 2) == ("ot", 5)
    assert verse_index("Gen", 2, 1) == ("ot", 4 + 31 + 1)  # Genesis 1 has 31 verses, then chapter 2's heading
    # Genesis: 50 chapter headings + 1533 verses after its own heading at 2; Exodus' heading is 1586
    assert verse_index("Exod", 1, 1) == ("ot", 1588)
    assert verse_index("Mal", 4, 6) == ("ot", 24114) and verse_index("Matt", 1, 1) == ("nt", 4)
    assert verse_index("Rev", 22, 21) == ("nt", 8245) and verse_index("Rev", 22, 21, "NRSVA") == ("nt", 8247)
    assert verse_index("Tob", 1, 1, "NRSVA")[0] == "ot"
    with pytest.raises(KeyError, match="Tob 1:1 is not a verse of the KJV"):
        verse_index("Tob", 1, 1)


def test_versification_totals():
    for testament, books, chapters, verses, entries in (("ot", 39, 929, 23145, 24115), ("nt", 27, 260, 7957, 8246)):
        table = VERSIFICATIONS["KJV"][testament]
        assert len(table) == books and sum(len(c) for _, _, c in table) == chapters
        assert sum(sum(c) for _, _, c in table) == verses and len(index_references("KJV", testament)) == entries
    assert len(index_references("NRSVA", "ot")) == 31027 and len(index_references("NRSVA", "nt")) == 8248
    assert [b for b, _, _ in VERSIFICATIONS["NRSVA"]["ot"]][:39] == [b for b, _, _ in VERSIFICATIONS["KJV"]["ot"]]


# --- markup -----------------------------------------------------------------------------------------------------


def test_strip_markup_keeps_words_and_drops_notes_titles_and_tags():
    osis = ('<div type="x-milestone" subType="x-preverse" sID="pv1"/><title type="section">The Fall</title>'
            '¶ <w lemma="strong:H0430">God</w><note placement="foot"><reference>1:1 </reference>Heb. <hi>Elohim</hi>'
            '</note><w lemma="strong:H1254">created</w> the <transChange type="added">heaven</transChange>'
            '<note n="a">x</note>. A &amp; B &lt;said&gt;, “yes”<lb/>and<l>no</l> <divineName>LORD</divineName>')
    assert strip_markup(osis) == "God created the heaven. A & B <said>, “yes” and no LORD"
    assert strip_markup("plain  text\n with   spaces ") == "plain text with spaces"
    assert strip_markup("a < b and <RF>a footnote<Rf> c") == "a < b and c"
    assert strip_markup('<note type="x">only a note</note>') == ""


# --- a module written by the test ------------------------------------------------------------------------------------


VERSES = {
    ("Gen", 1, 1): '<w lemma="strong:H7225">In the beginning</w> God created.',
    ("Gen", 1, 2): "And the earth was without form.",
    ("Gen", 50, 26): 'So Joseph died. <div eID="gen2" osisID="Gen" type="book"/> back matter is not a verse',
    ("Exod", 1, 1): "Now these are the names",
    ("Ps", 119, 176): "I have gone astray like a lost sheep",
    ("Mal", 4, 6): "lest I come and smite the earth",
    ("Matt", 1, 1): "The book of the generation",
    ("John", 3, 16): "For God so loved the world",
    ("Rev", 22, 21): "The grace of our Lord Jesus Christ be with you all. Amen.",
}


@pytest.fixture
def tiny_root(tmp_path):
    return write_ztext_module(tmp_path, "TinyKJV", VERSES, abbreviation="TKJV")


def test_reads_back_exactly_the_verses_written_with_their_references(tiny_root):
    verses = list(read_verses("TinyKJV", root=tiny_root))
    assert [(v.book, v.chapter, v.verse) for v in verses] == list(VERSES)  # canonical order, empty verses skipped
    assert verses[0].text == "In the beginning God created." and verses[0].ref == "Gen.1.1"
    assert verses[2].text == "So Joseph died."  # what follows the book's end marker is not verse text
    assert verses[-1].text == VERSES[("Rev", 22, 21)]
    assert len(list(read_verses("tkjv", root=tiny_root, include_empty=True))) == 31102  # by abbreviation, any case
    module = find_module(tiny_root / "mods.d" / "tinykjv.conf")
    assert module.name == "TinyKJV" and module.versification == "KJV" and module.language == "en"
    assert module.conf["About"] == "A test module \nover two lines"


def test_aligned_verses_pair_by_reference_where_both_have_text(tmp_path):
    write_ztext_module(tmp_path, "A", {("Gen", 1, 1): "one two three", ("Gen", 1, 2): "only in a",
                                       ("John", 3, 16): "a b c d e f"})
    write_ztext_module(tmp_path, "B", {("Gen", 1, 1): "uno dos tres", ("John", 3, 16): "a b",
                                       ("Rev", 1, 1): "only in b"}, lang="es")
    pairs = aligned_verses("A", "B", root=tmp_path)
    assert [(a.ref, a.text, b.text) for a, b in pairs] == [("Gen.1.1", "one two three", "uno dos tres"),
                                                           ("John.3.16", "a b c d e f", "a b")]
    assert [a.ref for a, _ in aligned_verses("A", "B", root=tmp_path, max_words=3)] == ["Gen.1.1"]
    assert word_count("  a  b\nc ") == 3


def test_book_split_holds_out_whole_books():
    assert book_split("Gen") == "train" and book_split("Mark") == "val" and book_split("John") == "test"
    assert not set(HELD_OUT_BOOKS["val"]) & set(HELD_OUT_BOOKS["test"])


def test_damaged_and_missing_modules_are_named(tiny_root, tmp_path):
    with pytest.raises(DataError, match=r"SWORD module 'kjv' not found in .*mods.d .*install the Debian package "
                                        r"sword-text-kjv"):
        find_module("kjv", root=tmp_path / "empty")
    data = tiny_root / "modules/texts/ztext/tinykjv"
    bzv = data / "nt.bzv"
    bzv.write_bytes(bzv.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"nt.bzv: 82450 bytes, but the KJV versification of the NT has 8246 entries"):
        list(read_verses("TinyKJV", root=tiny_root))
    bzz = data / "ot.bzz"
    bzz.write_bytes(b"\x00" * 8 + bzz.read_bytes()[8:])
    with pytest.raises(DataError, match=r"ot.bzz: block 0 \(byte offset 0\) is damaged"):
        list(read_verses("TinyKJV", root=tiny_root))
    conf = tiny_root / "mods.d" / "tinykjv.conf"
    conf.write_text(conf.read_text().replace("ModDrv=zText", "ModDrv=RawText"))
    with pytest.raises(DataError, match="ModDrv=RawText; dlforge reads zText Bible modules only"):
        find_module("TinyKJV", root=tiny_root)
    bad = tmp_path / "bad.conf"
    bad.write_text("[X]\nDataPath=./x\nthis is not a key\n")
    with pytest.raises(DataError, match=r"bad.conf:3: expected \[ModuleName\] or Key=Value"):
        parse_conf(bad)


def test_a_block_pointer_past_the_blocks_is_refused(tmp_path):
    root = write_ztext_module(tmp_path, "T", {("Gen", 1, 1): "x"})
    bzv = root / "modules/texts/ztext/t/ot.bzv"
    raw = bytearray(bzv.read_bytes())
    raw[40:50] = struct.pack("<IIH", 7, 0, 1)  # Gen 1:1 (entry 4) points to block 7 of 1
    bzv.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="Gen 1:1 points to block 7, but there are 1"):
        list(read_verses("T", root=root))
    assert zlib.decompress((root / "modules/texts/ztext/t/ot.bzz").read_bytes()) == b"x"


# --- the installed Bibles (apt sword-text-kjv, sword-text-sparv, sword-text-web) -------------------------------------


@pytest.fixture(scope="module")
def installed():
    try:  # a missing module's error names the Debian package to install
        for name in ("KJV", "RV1909", "WEB"):
            find_module(name)
    except DataError as exc:
        pytest.fail(f"these tests need the SWORD Bibles of {SWORD_ROOT}: {exc}")
    return {name: list(read_verses(name)) for name in ("KJV", "RV1909")}


def test_installed_kjv_and_reina_valera(installed):
    kjv, rv = installed["KJV"], installed["RV1909"]
    assert len(kjv) == 31102 and len(rv) == 31084
    assert kjv[0].text == "In the beginning God created the heaven and the earth."
    assert rv[0].text.startswith("EN el principio crió Dios los cielos y la tierra")
    john = next(v for v in kjv if (v.book, v.chapter, v.verse) == ("John", 3, 16))
    assert john.text.startswith("For God so loved the world")
    assert not any("<" in v.text or "¶" in v.text or "  " in v.text for v in kjv + rv)
    pairs = align_verses(kjv, rv)
    assert len(pairs) == 31084  # every Reina-Valera verse has its King James counterpart
    assert all(a.ref == b.ref for a, b in pairs)
    assert sum(word_count(a.text) <= 20 for a, _ in pairs) == 12175  # English side of at most 20 words
    assert len(align_verses(kjv, rv, max_words=20)) == 11739  # both sides


def test_installed_world_english_bible_uses_nrsva():
    module = find_module("WEB")
    assert module.versification == "NRSVA"
    verses = list(module.verses())
    books = {v.book for v in verses}
    assert len(books) == 80 and {"Tob", "Sir", "1Macc"} <= books  # 66 books and the deuterocanon
    assert verses[0].text == "In the beginning, God created the heavens and the earth."
    assert verses[-1].text == "The grace of the Lord Jesus Christ be with all the saints. Amen."  # no glossary
    assert 4_500_000 < sum(len(v.text) for v in verses) < 5_000_000
