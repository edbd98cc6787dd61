"""Turning files into searchable chunks: text extraction, then heading-aware chunking.

Each chunk carries the heading path it sits under ("Returns > Damaged items"), so a chunk
found by search still says what it is about, and neighbouring chunks of one section
overlap a little so a sentence cut at a boundary is whole in one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MAX_CHARS = 1200
OVERLAP_CHARS = 150

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    heading: str
    content: str


@dataclass(frozen=True)
class Extracted:
    title: str
    text: str  # Markdown-ish: headings as `#` lines


def extract(path: Path) -> Extracted:
    """The text of a Markdown, plain-text, HTML or PDF file. A file with no title of its
    own (a heading, an HTML or PDF title) is titled by its name, `returns.md`."""
    suffix = path.suffix.lower()
    if suffix in HTML_SUFFIXES:
        return _from_html(path.read_text(errors="replace"), path.name)
    if suffix in PDF_SUFFIXES:
        return _from_pdf(path)
    text = path.read_text(errors="replace")
    return Extracted(title=_first_heading(text) or path.name, text=text)


def extract_string(content: str, fmt: str, fallback_title: str) -> Extracted:
    """The same, for content that arrives as a string (the admin API)."""
    if fmt == "html":
        return _from_html(content, fallback_title)
    return Extracted(title=_first_heading(content) or fallback_title, text=content)


# Elements that never contain others, so they add no nesting.
_VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param"}
    | {"source", "track", "wbr"}
)


def html_depth(html: str, limit: int) -> int:
    """How deep `html`'s elements nest, counted up to `limit + 1` (then the scan stops).

    Parsing cost grows with the square of the nesting depth, so an upload is measured with
    the standard library's tokenizer (linear) before it is parsed. Unclosed elements count
    as nested, as the parser nests them.
    """
    from html.parser import HTMLParser

    class _Depth(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=False)
            self.depth = self.deepest = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag not in _VOID_ELEMENTS:
                self.depth += 1
                self.deepest = max(self.deepest, self.depth)
                if self.deepest > limit:
                    raise _TooDeep

        def handle_endtag(self, tag: str) -> None:
            if tag not in _VOID_ELEMENTS:
                self.depth = max(0, self.depth - 1)

    scanner = _Depth()
    try:
        scanner.feed(html)
        scanner.close()
    except _TooDeep:
        pass
    return scanner.deepest


class _TooDeep(Exception):
    pass


def _first_heading(text: str) -> str | None:
    for line in text.splitlines():
        match = _HEADING.match(line)
        if match:
            return match.group(2)
    return None


def _from_html(html: str, fallback_title: str) -> Extracted:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    for level in range(1, 7):
        for tag in soup.find_all(f"h{level}"):
            tag.replace_with(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n")
    for tag in soup.find_all(["p", "li", "br", "div", "tr", "section", "article"]):
        tag.insert_after("\n\n")
    body = soup.body or soup
    text = re.sub(r"\n{3,}", "\n\n", body.get_text()).strip()
    text = "\n".join(line.strip() for line in text.splitlines())
    return Extracted(title=title or _first_heading(text) or fallback_title, text=text)


def _from_pdf(path: Path) -> Extracted:
    from pypdf import PdfReader

    reader = PdfReader(path)
    pages = [page.extract_text() or "" for page in reader.pages]
    title = (reader.metadata.title if reader.metadata else None) or path.name
    return Extracted(title=str(title), text="\n\n".join(pages))


def chunk_text(
    text: str, *, max_chars: int = MAX_CHARS, overlap: int = OVERLAP_CHARS
) -> list[Chunk]:
    """Split into chunks of at most ~`max_chars`, each under its heading path."""
    chunks: list[Chunk] = []
    for heading, body in _sections(text):
        pieces = _pack(_paragraphs(body), max_chars)
        for i, piece in enumerate(pieces):
            if i > 0 and overlap:
                piece = _tail(pieces[i - 1], overlap) + " " + piece
            chunks.append(Chunk(heading=heading, content=piece))
    return chunks


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading path, body) for each run of text under one heading."""
    path: list[tuple[int, str]] = []
    sections: list[tuple[str, str]] = []
    body: list[str] = []

    def close() -> None:
        joined = "\n".join(body).strip()
        if joined:
            sections.append((" > ".join(title for _, title in path), joined))
        body.clear()

    for line in text.splitlines():
        match = _HEADING.match(line)
        if match:
            close()
            level = len(match.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level]
            path.append((level, match.group(2)))
        else:
            body.append(line)
    close()
    return sections


def _paragraphs(body: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", body) if p.strip()]


def _pack(paragraphs: list[str], max_chars: int) -> list[str]:
    """Greedy packing of paragraphs (split by sentence, then by word, when too long)."""
    units: list[str] = []
    for paragraph in paragraphs:
        if len(paragraph) <= max_chars:
            units.append(paragraph)
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            while len(sentence) > max_chars:
                cut = sentence.rfind(" ", 0, max_chars)
                cut = cut if cut > 0 else max_chars
                units.append(sentence[:cut])
                sentence = sentence[cut:].lstrip()
            if sentence:
                units.append(sentence)
    packed: list[str] = []
    for unit in units:
        if packed and len(packed[-1]) + 1 + len(unit) <= max_chars:
            packed[-1] += " " + unit
        else:
            packed.append(unit)
    return packed


def _tail(text: str, chars: int) -> str:
    """The last ~`chars` characters of `text`, starting at a word boundary."""
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    space = tail.find(" ")
    return tail[space + 1 :] if space >= 0 else tail
