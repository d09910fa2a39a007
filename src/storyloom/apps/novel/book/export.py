"""A book's chosen chapters as Markdown, plain text, EPUB 3 (ebooklib) or DOCX (python-docx).

Only chapters with a chosen version are exported, in order; a chapter without one is named in
`ExportResult.missing` so a caller can say the book is incomplete instead of hiding it.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from typing import Literal

from storyloom.apps.novel.book.view import ChapterState
from storyloom.apps.novel.projects import Project
from storyloom.errors import InputError

__all__ = ["FORMATS", "MEDIA_TYPES", "ExportFormat", "ExportResult", "export_book"]

ExportFormat = Literal["md", "txt", "epub", "docx"]
FORMATS: tuple[ExportFormat, ...] = ("md", "txt", "epub", "docx")
MEDIA_TYPES = {
    "md": "text/markdown; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "epub": "application/epub+zip",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


@dataclass(frozen=True, slots=True)
class ExportResult:
    data: bytes
    media_type: str
    chapters: int
    missing: list[int] = field(default_factory=list)


def _heading(chapter: ChapterState, language: str) -> str:
    if chapter.title.strip():
        return chapter.title.strip()
    return f"第{chapter.number}章" if language == "zh" else f"Chapter {chapter.number}"


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\r\n", "\n").split("\n") if p.strip()]


def export_book(
    book: Project, chapters: list[ChapterState], fmt: str, *, author: str = "storyloom"
) -> ExportResult:
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}.")
    written = [c for c in chapters if c.text]
    missing = [c.number for c in chapters if not c.text]
    language = "zh" if book.language == "zh" else "en"
    if fmt == "md":
        data = _markdown(book, written, language).encode()
    elif fmt == "txt":
        data = _plain(book, written, language).encode()
    elif fmt == "epub":
        data = _epub(book, written, language, author)
    else:
        data = _docx(book, written, language, author)
    return ExportResult(data=data, media_type=MEDIA_TYPES[fmt], chapters=len(written), missing=missing)


def _markdown(book: Project, chapters: list[ChapterState], language: str) -> str:
    parts = [f"# {book.title}\n"]
    for c in chapters:
        parts.append(f"## {_heading(c, language)}\n")
        parts.append("\n\n".join(_paragraphs(c.text or "")) + "\n")
    return "\n".join(parts)


def _plain(book: Project, chapters: list[ChapterState], language: str) -> str:
    parts = [book.title, "=" * max(4, len(book.title)), ""]
    for c in chapters:
        parts += [_heading(c, language), "", "\n\n".join(_paragraphs(c.text or "")), "", ""]
    return "\n".join(parts).rstrip() + "\n"


def _epub(book: Project, chapters: list[ChapterState], language: str, author: str) -> bytes:
    import tempfile
    from pathlib import Path

    from ebooklib import epub

    doc = epub.EpubBook()
    doc.set_identifier(f"urn:storyloom:{book.id}")
    doc.set_title(book.title)
    doc.set_language(language)
    doc.add_author(author)
    items = []
    for c in chapters:
        heading = html.escape(_heading(c, language))
        body = "".join(f"<p>{html.escape(p)}</p>" for p in _paragraphs(c.text or ""))
        item = epub.EpubHtml(
            title=_heading(c, language), file_name=f"chapter_{c.number:04d}.xhtml", lang=language
        )
        item.content = f"<h1>{heading}</h1>{body}"
        doc.add_item(item)
        items.append(item)
    if not items:  # an EPUB needs one content document; say plainly that nothing is written yet
        item = epub.EpubHtml(title=book.title, file_name="empty.xhtml", lang=language)
        item.content = f"<h1>{html.escape(book.title)}</h1><p>No chapter has been chosen yet.</p>"
        doc.add_item(item)
        items.append(item)
    doc.toc = items
    doc.add_item(epub.EpubNcx())
    doc.add_item(epub.EpubNav())
    doc.spine = ["nav", *items]
    with tempfile.TemporaryDirectory() as tmp:  # ebooklib writes to a path
        path = Path(tmp) / "book.epub"
        epub.write_epub(str(path), doc)
        return path.read_bytes()


def _docx(book: Project, chapters: list[ChapterState], language: str, author: str) -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = book.title
    document.core_properties.author = author
    document.core_properties.language = language
    document.add_heading(book.title, level=0)
    for c in chapters:
        document.add_heading(_heading(c, language), level=1)
        for p in _paragraphs(c.text or ""):
            document.add_paragraph(p)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
