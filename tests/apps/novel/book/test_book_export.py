"""Exports of a book: Markdown, text, DOCX, and an EPUB 3 that epubcheck accepts."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from storyloom.apps.novel.book.export import export_book
from storyloom.apps.novel.book.view import ChapterState
from storyloom.apps.novel.projects import Project
from storyloom.errors import InputError


def _book(language: str = "en") -> Project:
    return Project(
        id="b1",
        tenant="default",
        title="The Salt Road & Co",
        premise="p",
        outline="",
        characters=[],
        style="",
        genre="",
        language=language,
        created_at=0.0,
        updated_at=0.0,
    )


def _chapter(n: int, text: str | None) -> ChapterState:
    return ChapterState(
        number=n,
        title=f"Oasis <{n}>",
        state="chosen" if text else "outlined",
        chosen_version=1 if text else None,
        length=0,
        cost_usd=0.0,
        stale_reason=None,
        memory_stale=False,
        chapter_id=f"c{n}",
        outline="",
        summary=None,
        text=text,
    )


CHAPTERS = [
    _chapter(1, "Dawn at the well.\n\nShe counted the salt & the coins."),
    _chapter(2, "Night. Wind."),
    _chapter(3, None),
]


def test_markdown_and_text_hold_the_chosen_chapters_in_order() -> None:
    md = export_book(_book(), CHAPTERS, "md")
    text = md.data.decode()
    assert text.startswith("# The Salt Road & Co") and text.index("## Oasis <1>") < text.index("## Oasis <2>")
    assert "She counted the salt & the coins." in text and md.chapters == 2 and md.missing == [3]
    plain = export_book(_book(), CHAPTERS, "txt").data.decode()
    assert "Dawn at the well." in plain and "#" not in plain


def _epubcheck() -> list[str] | None:
    """Debian's epubcheck is a jar behind /usr/bin/epubcheck (run it with java when it is not exec'able)."""
    found = shutil.which("epubcheck")
    if found is None:
        return None
    if Path(found).resolve().suffix == ".jar":
        java = shutil.which("java")
        return [java, "-jar", str(Path(found).resolve())] if java else None
    return [found]


@pytest.mark.slow  # epubcheck is a JVM: tens of seconds on a busy machine
@pytest.mark.skipif(_epubcheck() is None, reason="epubcheck is not installed")
@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_epub_is_valid_per_epubcheck(tmp_path: Path, language: str) -> None:
    result = export_book(_book(language), CHAPTERS, "epub", author="A. Writer")
    path = tmp_path / "book.epub"
    path.write_bytes(result.data)
    command = _epubcheck()
    assert command is not None
    check = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    with zipfile.ZipFile(io.BytesIO(result.data)) as z:
        opf = next(z.read(n).decode() for n in z.namelist() if n.endswith(".opf"))
        nav = next(z.read(n).decode() for n in z.namelist() if n.endswith("nav.xhtml"))
    assert "The Salt Road &amp; Co" in opf and f"<dc:language>{language}</dc:language>" in opf
    assert (
        "A. Writer" in opf and "Oasis &lt;1&gt;" in nav and "Oasis &lt;2&gt;" in nav
    )  # the table of contents


def test_docx_opens_with_its_chapters() -> None:
    import docx

    document = docx.Document(io.BytesIO(export_book(_book(), CHAPTERS, "docx").data))
    texts = [p.text for p in document.paragraphs]
    assert "Oasis <1>" in texts and "She counted the salt & the coins." in texts
    assert document.core_properties.title == "The Salt Road & Co"


def test_an_unknown_format_is_a_sentence() -> None:
    with pytest.raises(InputError, match="format must be one of md, txt, epub, docx"):
        export_book(_book(), CHAPTERS, "pdf")
