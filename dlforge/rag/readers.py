"""File types -> `Document`: the text to chunk, its title, and its sections (heading path + character span).

    doc = read_document(Path("guide.md"), raw_bytes)   # Document(text, title, sections, replaced)

Character offsets are into `Document.text`: for .txt, .md and .rst that is the file itself (decoded, line endings
made "\\n"); for .html, .pdf and .jsonl it is the extracted text, blocks separated by a blank line. Each section runs
from its heading line to the next heading, so chunks keep their heading with them. Headings:

- Markdown: ATX (`## Title`) and setext (underlined with === or ---) outside fenced code; front matter is skipped.
- reStructuredText: a line underlined (and maybe overlined) by one repeated punctuation character; levels in the
  order the styles first appear, as docutils assigns them.
- HTML: h1-h6. Navigation and tables of contents (nav/aside/footer, script/style, and elements whose class or id is
  toc, nav*, menu, sidebar, breadcrumb or footer) are dropped, so a page's table of contents does not compete with
  the sections it lists; so are Sphinx's and MkDocs' permalink anchors (class headerlink, the "¶" after a heading).
- PDF (pypdf): one section per page, "page N".
- JSONL: one section per line, headed by its `title` (or `id`, or "line N"); the other fields are kept as metadata.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from dlforge.data.corpus import jsonl_objects
from dlforge.errors import DataError

BLOCK_SEP = "\n\n"
TYPES = {".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".rst": "rst", ".html": "html",
         ".htm": "html", ".xhtml": "html", ".pdf": "pdf", ".jsonl": "jsonl"}


@dataclass
class Section:
    heading: tuple[str, ...]  # the heading path, outermost first; () before the first heading
    start: int  # character span in Document.text
    end: int
    meta: dict[str, Any] | None = None


@dataclass
class Document:
    text: str
    title: str
    sections: list[Section] = field(default_factory=list)
    replaced: bool = False  # bytes that were not UTF-8 were decoded as U+FFFD


def file_type(path: Path) -> str | None:
    """"md", "html"... for a supported suffix, else None."""
    return TYPES.get(path.suffix.lower())


def read_document(path: Path, data: bytes) -> Document:
    """Parse `data` (the bytes of `path`) by the file's type. Raises DataError naming the file for broken input."""
    kind = file_type(path)
    if kind == "pdf":
        return read_pdf(path, data)
    text, replaced = decode(data)
    reader = {"txt": read_txt, "md": read_markdown, "rst": read_rst, "html": read_html, "jsonl": read_jsonl}[kind]
    doc = reader(path, text)
    doc.replaced = replaced
    return doc


def decode(data: bytes) -> tuple[str, bool]:
    """UTF-8 (a BOM is dropped), invalid bytes as U+FFFD; line endings as "\\n". Returns (text, any replaced)."""
    try:
        text, replaced = data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        text, replaced = data.decode("utf-8-sig", errors="replace"), True
    return text.replace("\r\n", "\n").replace("\r", "\n"), replaced


def sections_from_headings(text: str, headings: list[tuple[int, int, str]], start: int = 0, shown: bool = True
                           ) -> list[Section]:
    """Sections from (offset, level, title) of each heading in `text`; text before the first heading is its own
    section. `shown`: the headings are lines of the text (not so for PDF pages); then a heading with nothing but
    sub-headings under it joins the next section, keeping the pair together."""
    sections, stack = [], []  # stack: (level, title) of the open headings
    bounds = [(start, ())]
    for offset, level, title in headings:
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        bounds.append((offset, tuple(t for _, t in stack)))
    for i, (begin, heading) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        if text[begin:end].strip():
            sections.append(Section(heading, begin, end))
    merged: list[Section] = []
    for s in sections:  # a section holding only its heading line: extend the next one back over it
        if shown and merged and merged[-1].heading and _only_heading(text[merged[-1].start:merged[-1].end]):
            s = Section(s.heading, merged.pop().start, s.end, s.meta)
        merged.append(s)
    return merged


def _only_heading(span: str) -> bool:
    lines = [line for line in span.strip().splitlines() if line.strip() and not re.fullmatch(r"[=\-~^\"'`#*+]+", line)]
    return len(lines) <= 1


# --- plain text, Markdown, reStructuredText: the text is the file -------------------------------------------------


def read_txt(path: Path, text: str) -> Document:
    return Document(text, path.stem, [Section((), 0, len(text))] if text.strip() else [])


ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def read_markdown(path: Path, text: str) -> Document:
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    first = 0
    if lines and lines[0].strip() == "---":  # YAML front matter
        for i in range(1, len(lines)):
            if lines[i].strip() in ("---", "..."):
                first = i + 1
                break
    headings, fence = [], None
    for i in range(first, len(lines)):
        line = lines[i].rstrip("\n")
        m = FENCE.match(line)
        if m:
            fence = None if fence and m.group(1)[0] == fence else (fence or m.group(1)[0])
            continue
        if fence:
            continue
        m = ATX.match(line)
        if m:
            headings.append((offsets[i], len(m.group(1)), m.group(2)))
        elif (i + 1 < len(lines) and line.strip() and not line.startswith((" " * 4, "\t", "-", "*", ">"))
              and re.fullmatch(r" {0,3}(=+|-+)[ \t]*", lines[i + 1].rstrip("\n"))
              and (i == first or not lines[i - 1].strip() or headings and headings[-1][0] == offsets[i - 1])):
            headings.append((offsets[i], 1 if "=" in lines[i + 1] else 2, line.strip()))
    title = headings[0][2] if headings else path.stem
    return Document(text, title, sections_from_headings(text, headings, offsets[first]))


RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.!_])\1{2,}[ \t]*$")


def read_rst(path: Path, text: str) -> Document:
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    styles: list[tuple[str, bool]] = []  # (character, overlined) in order of first appearance = level
    headings, i = [], 0
    while i + 1 < len(lines):
        over = RST_UNDERLINE.match(lines[i].rstrip("\n"))
        if over and i + 2 < len(lines) and lines[i + 1].strip():  # overline, title, underline
            under = RST_UNDERLINE.match(lines[i + 2].rstrip("\n"))
            if under and under.group(1) == over.group(1):
                style, title, at, i = (over.group(1), True), lines[i + 1].strip(), offsets[i], i + 3
                styles += [style] if style not in styles else []
                headings.append((at, styles.index(style) + 1, title))
                continue
        title = lines[i].rstrip("\n")
        under = RST_UNDERLINE.match(lines[i + 1].rstrip("\n"))
        if (under and title.strip() and not RST_UNDERLINE.match(title) and not title.startswith((" ", "\t"))
                and len(lines[i + 1].rstrip()) >= len(title.rstrip())):
            style = (under.group(1), False)
            styles += [style] if style not in styles else []
            headings.append((offsets[i], styles.index(style) + 1, title.strip()))
            i += 2
            continue
        i += 1
    title = headings[0][2] if headings else path.stem
    return Document(text, title, sections_from_headings(text, headings))


# --- extracted text: HTML, PDF, JSONL ---------------------------------------------------------------------------


class _Builder:
    """Assembles extracted blocks into one text with headings: blocks are separated by a blank line."""

    def __init__(self):
        self.parts: list[str] = []
        self.length = 0
        self.headings: list[tuple[int, int, str]] = []
        self.meta: list[tuple[int, dict[str, Any] | None]] = []
        self.shown = True
        self._marker: tuple[int, str, dict[str, Any] | None] | None = None

    def block(self, text: str, pre: bool = False) -> int:
        """Append a block (whitespace trimmed; preformatted text keeps its indentation); returns its offset."""
        text = text.strip("\n").rstrip() if pre else text.strip()
        if not text.strip():
            return self.length
        if self.parts:
            self.parts.append(BLOCK_SEP)
            self.length += len(BLOCK_SEP)
        at = self.length
        self.parts.append(text)
        self.length += len(text)
        if self._marker:  # a section started by `marker` begins with this block
            level, title, meta = self._marker
            self._marker = None
            self.headings.append((at, level, title))
            self.meta.append((at, meta))
        return at

    def heading(self, level: int, text: str, meta: dict[str, Any] | None = None) -> None:
        """A heading line in the text, starting a section."""
        text = " ".join(text.split())
        if text:
            at = self.block(text)
            self.headings.append((at, level, text))
            self.meta.append((at, meta))

    def marker(self, level: int, text: str, meta: dict[str, Any] | None = None) -> None:
        """A section boundary whose heading is not part of the text (a PDF page number)."""
        self.shown = False
        self._marker = (level, text, meta)

    def document(self, title: str) -> Document:
        text = "".join(self.parts)
        sections = sections_from_headings(text, self.headings, shown=self.shown)
        meta = dict(self.meta)
        for s in sections:
            s.meta = meta.get(s.start)
        return Document(text, title, sections)


SKIP_TAGS = {"script", "style", "head", "noscript", "template", "svg", "nav", "aside", "footer", "iframe", "object"}
SKIP_CLASS = re.compile(r"^(toc|nav\w*|menu|sidebar|breadcrumbs?|footer|skip-?links?|headerlink)$", re.I)
BLOCK_TAGS = {"p", "div", "section", "article", "main", "li", "dt", "dd", "tr", "table", "pre", "blockquote", "ul",
              "ol", "dl", "br", "hr", "figure", "figcaption", "header", "form", "fieldset", "address", "details",
              "summary", "caption"}
VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "track", "wbr"}
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


class _HTMLText(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out = _Builder()
        self.buffer: list[str] = []
        self.skip: tuple[str, int] | None = None  # (tag, nesting) of the element being dropped
        self.heading: tuple[int, list[str]] | None = None
        self.pre = 0
        self.title: list[str] | None = None
        self.page_title = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":  # inside <head>, which is otherwise dropped
            self.title = []
            return
        if self.skip:
            if tag == self.skip[0] and tag not in VOID_TAGS:
                self.skip = (tag, self.skip[1] + 1)
            return
        names = " ".join(v or "" for k, v in attrs if k in ("class", "id", "role")).split()
        if tag in SKIP_TAGS or any(SKIP_CLASS.match(n) for n in names) or ("role", "navigation") in attrs:
            if tag not in VOID_TAGS:
                self.skip = (tag, 1)
            return
        if tag in HEADINGS:
            self.flush()
            self.heading = (HEADINGS[tag], [])
        elif tag in BLOCK_TAGS:
            self.flush()
            if tag == "li":
                self.buffer.append("- ")
            if tag == "pre":
                self.pre += 1
        elif tag in ("td", "th"):
            self.buffer.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self.title is not None:
            self.page_title, self.title = " ".join("".join(self.title).split()), None
        elif self.skip:
            if tag == self.skip[0]:
                self.skip = (tag, self.skip[1] - 1) if self.skip[1] > 1 else None
        elif tag in HEADINGS and self.heading:
            level, parts = self.heading
            self.heading = None
            self.out.heading(level, "".join(parts))
        elif tag in BLOCK_TAGS:
            self.flush()
            if tag == "pre" and self.pre:
                self.pre -= 1

    def handle_data(self, data: str) -> None:
        if self.title is not None:
            self.title.append(data)
        elif self.skip:
            return
        elif self.heading:
            self.heading[1].append(data)
        else:
            self.buffer.append(data)

    def flush(self) -> None:
        text = "".join(self.buffer)
        self.buffer = []
        if self.pre:
            self.out.block(text, pre=True)
        else:
            self.out.block(" ".join(text.split()))


def read_html(path: Path, text: str) -> Document:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    parser.flush()
    headings = parser.out.headings
    return parser.out.document(parser.page_title or (headings[0][2] if headings else path.stem))


def read_pdf(path: Path, data: bytes) -> Document:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError as exc:
        raise DataError(f"{path}: reading PDF needs pypdf: pip install 'dlforge[rag]'") from exc
    if not data.startswith(b"%PDF-"):
        raise DataError(f"{path}: not a PDF file (no %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DataError(f"{path}: the PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(f"{path}: unreadable PDF ({type(exc).__name__}: {exc})") from exc
    out = _Builder()
    for number, page in enumerate(pages, 1):
        page = page.replace("\r\n", "\n").strip()
        if page:
            out.marker(1, f"page {number}")
            for block in re.split(r"\n\s*\n", page):
                out.block(block)
    first_line = next((line.strip() for p in pages for line in p.splitlines() if line.strip()), path.stem)
    return out.document(str(meta_title).strip() if meta_title else first_line[:200])


def read_jsonl(path: Path, text: str) -> Document:
    out = _Builder()
    expected = "a JSON object with a 'text' string"
    for number, record in jsonl_objects(path, text, expected):
        if not isinstance(record.get("text"), str):
            raise DataError(f"{path}:{number}: expected {expected}")
        if not record["text"].strip():
            continue
        meta = {k: v for k, v in record.items() if k != "text" and isinstance(v, str | int | float | bool)}
        meta["line"] = number
        out.heading(1, str(record.get("title") or record.get("id") or f"line {number}"), meta)
        out.block(record["text"])
    return out.document(path.stem)
