"""RAG reading and chunking: every file type from small files, heading paths, offsets, token-counted chunks."""

from __future__ import annotations

from pathlib import Path

import pytest
from ragtools import pdf_bytes
from tokenizers import Tokenizer

from dlforge.errors import DataError
from dlforge.rag.chunk import Chunker, embedding_text
from dlforge.rag.embed import default_model_folder
from dlforge.rag.readers import read_document


def read(name: str, content: str | bytes):
    return read_document(Path(name), content.encode() if isinstance(content, str) else content)


def by_heading(doc):
    return {s.heading: doc.text[s.start:s.end].strip() for s in doc.sections}


def test_markdown_headings_setext_fences_and_front_matter():
    text = ("---\ntitle: x\n---\nIntro line.\n\n# Install\n\nRun the installer.\n\n## Linux\n\n```sh\n# not a heading\n"
            "make\n```\n\nSetext title\n============\n\nBody under setext.\n")
    doc = read("guide.md", text)
    assert doc.text == text and doc.title == "Install"  # offsets are into the file itself
    sections = by_heading(doc)
    assert sections[()] == "Intro line."  # the front matter is not a section
    assert sections[("Install",)] == "# Install\n\nRun the installer."
    assert sections[("Install", "Linux")].endswith("make\n```")  # '# not a heading' stays inside the fence
    assert sections[("Setext title",)] == "Setext title\n============\n\nBody under setext."


def test_markdown_heading_without_body_joins_its_first_subsection():
    doc = read("a.md", "# Chapter\n\n## Question?\n\nAnswer.\n")
    assert [s.heading for s in doc.sections] == [("Chapter", "Question?")]
    assert doc.text[doc.sections[0].start:].startswith("# Chapter")


def test_rst_levels_follow_first_appearance_with_overlines():
    text = "=====\nTitle\n=====\n\nIntro.\n\nPart\n----\n\nText.\n\nSub\n~~~\n\nMore.\n\nPart two\n--------\n\nEnd.\n"
    doc = read("x.rst", text)
    assert doc.title == "Title"
    assert list(by_heading(doc)) == [("Title",), ("Title", "Part"), ("Title", "Part", "Sub"), ("Title", "Part two")]


def test_html_headings_drop_navigation_and_tables_of_contents():
    html = ("<html><head><title>Page</title><style>p{}</style></head><body>"
            "<div class='navheader'>Prev Next</div><h1>Chapter 1</h1><div class='toc'>1.1 Q? 1.2 R?</div>"
            "<h2>1.1. What is it?</h2><p>It is a <b>thing</b> &amp; more.</p><ul><li>one</li><li>two</li></ul>"
            "<pre>  keep\n    spacing</pre><nav>menu</nav>"
            "<h2>1.2. Why?<a class='headerlink' href='#why'>\u00b6</a></h2><p>Because.</p><script>x()</script>"
            "</body></html>")
    doc = read("page.html", html)
    assert doc.title == "Page"
    for dropped in ("Prev", "1.1 Q?", "menu", "x()", "p{}", "\u00b6"):  # navigation, scripts, permalink marks
        assert dropped not in doc.text
    sections = by_heading(doc)
    assert list(sections) == [("Chapter 1", "1.1. What is it?"), ("Chapter 1", "1.2. Why?")]
    first = sections[("Chapter 1", "1.1. What is it?")]
    assert "It is a thing & more." in first and "- one\n\n- two" in first and "  keep\n    spacing" in first


def test_pdf_pages_are_sections(tmp_path):
    doc = read("report.pdf", pdf_bytes(["Quarterly report\nRevenue grew (a lot).", "Second page text."]))
    assert doc.title == "Quarterly report"
    assert by_heading(doc) == {("page 1",): "Quarterly report\nRevenue grew (a lot).",
                               ("page 2",): "Second page text."}
    with pytest.raises(DataError, match=r"bad\.pdf: not a PDF"):
        read("bad.pdf", b"hello")
    with pytest.raises(DataError, match=r"broken\.pdf: unreadable PDF"):
        read("broken.pdf", b"%PDF-1.4\n1 0 obj garbage")


def test_jsonl_records_with_metadata_and_errors():
    doc = read("n.jsonl", '{"text": "Alpha text.", "title": "A", "lang": "en"}\n\n{"text": "Beta.", "id": 7}\n')
    assert [s.heading for s in doc.sections] == [("A",), ("7",)]
    assert doc.sections[0].meta == {"title": "A", "lang": "en", "line": 1} and doc.sections[1].meta["line"] == 3
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        read("bad.jsonl", '{"text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1: expected a JSON object with a 'text' string"):
        read("bad.jsonl", '{"body": "no text"}\n')


def test_txt_and_non_utf8_decoding():
    doc = read("plain.txt", "caf\u00e9 ok\r\nsecond line\n".encode())
    assert doc.text == "caf\u00e9 ok\nsecond line\n" and not doc.replaced and doc.title == "plain"
    latin = read("latin.txt", "caf\u00e9 au lait".encode("latin-1"))
    assert latin.replaced and latin.text == "caf\ufffd au lait"


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer.from_file(str(default_model_folder() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def test_chunks_respect_the_token_limit_overlap_and_offsets(tokenizer):
    paragraphs = [f"Paragraph {i} talks about topic number {i}. " + "It has several plain sentences. " * 6
                  for i in range(12)]
    text = "# Long section\n\n" + "\n\n".join(paragraphs) + "\n\n# Short\n\nTiny body.\n"
    doc = read("long.md", text)
    chunks = Chunker(tokenizer, max_tokens=64, overlap=16).chunk(doc)
    long = [c for c in chunks if c.heading == ("Long section",)]
    assert len(long) > 5 and chunks[-1].heading == ("Short",) and chunks[-1].text == "# Short\n\nTiny body."
    for c in chunks:
        assert c.text == doc.text[c.start:c.end]
        assert c.tokens == len(tokenizer.encode(c.text, add_special_tokens=False).ids) <= 64
    for a, b in zip(long, long[1:], strict=False):
        assert a.start < b.start < a.end <= b.end  # neighbours overlap
        assert doc.text[b.start - 1] in " \n"  # and start at a word or sentence start
    assert long[0].first and not long[1].first


def test_a_section_that_fits_is_one_chunk_with_its_heading(tokenizer):
    doc = read("faq.html", "<h1>FAQ</h1><h2>2.1. How do I start?</h2><p>Press the button.</p><p>Then wait.</p>")
    (chunk,) = Chunker(tokenizer, max_tokens=64, overlap=8).chunk(doc)
    assert chunk.text == "FAQ\n\n2.1. How do I start?\n\nPress the button.\n\nThen wait."
    assert chunk.heading == ("FAQ", "2.1. How do I start?") and chunk.start == 0
    assert embedding_text(chunk, "t") == "FAQ\n\n" + chunk.text  # only the headings above its own


def test_chunker_rejects_bad_sizes(tokenizer):
    from dlforge.errors import ConfigError

    with pytest.raises(ConfigError, match="--chunk-overlap 40: expected 0 <= overlap < chunk tokens / 2 = 32"):
        Chunker(tokenizer, max_tokens=64, overlap=40)
