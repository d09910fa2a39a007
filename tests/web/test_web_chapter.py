"""An author in Chromium, the issue's proof: a book from a premise with its outline generated, a
chapter written in three versions that all stream at once, a reload in the middle that continues
with no gap and no repeat, a choice, the chosen text edited, a passage rewritten (when the server
has the route), and the book exported as EPUB."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.web import Studio, new_book

pytestmark = pytest.mark.browser


def _server_texts(studio: Studio, job_id: str) -> dict[str, str]:
    """Each step's text as the job's event log has it: what the page must show, exactly."""
    texts: dict[str, str] = {}
    with httpx.stream("GET", f"{studio.url}/api/jobs/{job_id}/events", timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                ev = json.loads(line[5:])
                if ev["kind"] == "step.started":
                    texts[ev["step"]] = ""
                elif ev["kind"] == "step.delta":
                    texts[ev["step"]] = texts.get(ev["step"], "") + ev["data"]["text"]
    return texts


def _stream(page: Any, job_id: str) -> dict[str, Any]:
    stats: dict[str, Any] = page.evaluate(
        "(id) => { const s = window.__studio.streams[id]; return {...s, state: null,"
        " texts: Object.fromEntries(Object.entries(s.state.steps).map(([k, v]) => [k, v.text]))}; }",
        job_id,
    )
    return stats


def test_a_book_from_premise_to_epub(studio: Studio, page: Any) -> None:
    book_id = new_book(page, studio, "The Ferry", 3)
    assert page.locator(".plan-job .step[data-step='bible']").get_attribute("data-state") == "done"
    assert page.locator(".chapter-list .chapter-row").count() == 3
    assert page.get_attribute(".chapter-row[data-index='1'] .badge", "data-state") == "not_written"
    outline = httpx.get(f"{studio.url}/api/books/{book_id}/chapters").json()
    assert [c["number"] for c in outline] == [1, 2, 3] and all(c["title"] for c in outline)

    # Edit the outline of chapter 1.
    page.click(".outline-row[data-number='1'] button")
    page.fill(".outline-row[data-number='1'] input[name=title]", "The Ferry at Dawn")
    page.click(".outline-row[data-number='1'] button[type=submit]")
    page.wait_for_selector(".outline-row[data-number='1'] strong:has-text('The Ferry at Dawn')")

    page.click(".chapter-row[data-index='1'] a")
    page.wait_for_selector(".write-form")
    assert page.input_value(".write-form textarea[name=outline]")  # the outline's summary
    page.fill(".write-form input[name=versions]", "3")
    page.fill(".write-form input[name=target_length]", "300")
    page.click(".write-form button[type=submit]")
    page.wait_for_selector("article.version[data-version='3']")
    job_id = page.get_attribute("section.live", "data-job")
    # Layout shifts while the versions stream (the browser's own measure, CLS-style).
    page.evaluate(
        "() => { window.__shift = 0; new PerformanceObserver((list) => { for (const e of list.getEntries())"
        " if (!e.hadRecentInput) window.__shift += e.value; }).observe({type: 'layout-shift'}); }"
    )

    # All three columns stream at once: each has text while the job still runs.
    page.wait_for_function(
        "() => [1, 2, 3].every((n) => document.querySelector(`.stream[data-version='${n}']`)"
        ".textContent.length > 40)",
        timeout=30_000,
    )
    assert page.text_content(".live .job-line .badge") == "running"
    page.wait_for_timeout(1500)  # more text streams in
    assert page.evaluate("() => window.__shift") < 0.02  # nothing moves while text streams
    seq_before = _stream(page, job_id)["applied"]

    page.reload()
    page.wait_for_selector("article.version[data-version='3']")
    assert _stream(page, job_id)["restoredSeq"] >= seq_before > 0  # back from its snapshot
    page.wait_for_selector(".compare-section", timeout=60_000)
    after = _stream(page, job_id)
    assert after["firstSeq"] == after["restoredSeq"] + 1, after  # resumed, not replayed
    assert after["gaps"] == 0 and after["repeats"] == 0, after
    # Every step's text on the page is the event log's, character for character.
    server = _server_texts(studio, job_id)
    assert after["texts"] == {k: v for k, v in server.items() if k in after["texts"]}
    for n in (1, 2, 3):
        assert page.get_attribute(f".stream[data-version='{n}']", "data-streamed-matches") == "true"

    # Timelines: every agent of every version ended, with its time, tokens and cost.
    for n in (1, 2, 3):
        rows = page.locator(f"article.version[data-version='{n}'] .timeline .agent")
        assert rows.count() == 8
        states = {rows.nth(i).get_attribute("data-state") for i in range(8)}
        assert states <= {"done", "degraded"}, states
        assert rows.first.locator(".tokens").text_content() not in ("–", "0")
        assert rows.first.locator(".cost").text_content().startswith("$")
    assert page.locator(".plan-list dt").count() >= 3  # the director's plan
    assert "version" in page.text_content(".judge-body .winner").lower()
    assert page.locator(".judge-body details.match").count() >= 1
    assert page.locator("table.compare tbody tr").count() >= 5
    assert page.locator(".diff ins, .diff del").count() > 0

    # Choose another version than the judge's.
    pick = int(page.get_attribute("[data-choose]", "data-choose"))
    page.click(f"article.version[data-version='{pick}'] [data-choose]")
    page.wait_for_selector(f".chapter-text[data-chosen='{pick}']")
    chosen = page.text_content(".chapter-text")
    detail = httpx.get(f"{studio.url}/api/books/{book_id}/chapters/1").json()
    assert detail["chosen_version"] == pick and detail["text"] == chosen and detail["state"] == "chosen"

    # Edit the chosen text.
    page.wait_for_selector("textarea.chapter-edit")
    assert page.input_value("textarea.chapter-edit") == chosen
    edited = chosen + "\n\nThe ferry bell rang once, and Lin did not look back."
    page.fill("textarea.chapter-edit", edited)
    page.click("[data-save-text]")
    page.wait_for_selector(".toast:has-text('Saved')")
    assert httpx.get(f"{studio.url}/api/books/{book_id}/chapters/1").json()["text"] == edited

    spec = httpx.get(f"{studio.url}/openapi.json").json()
    if "/api/books/{book_id}/chapters/{number}/rewrite" in spec["paths"]:
        page.wait_for_selector("textarea.chapter-edit")
        page.evaluate(
            "() => { const t = document.querySelector('textarea.chapter-edit');"
            " t.focus(); t.setSelectionRange(0, 40); t.dispatchEvent(new Event('select')); }"
        )
        page.fill("input[name=instruction]", "more tension")
        page.click("[data-rewrite]")
        page.wait_for_selector(".candidate-list .candidate", timeout=30_000)
        page.click(".candidate[data-candidate='1'] button")
        page.wait_for_selector(".toast:has-text('rewrite')")
        assert httpx.get(f"{studio.url}/api/books/{book_id}/chapters/1").json()["text"] != edited
    else:  # a feature the server lacks is not offered
        assert page.locator("[data-rewrite]").count() == 0

    # Export the book as EPUB: the download is a valid EPUB holding the chapter's text.
    page.click("a.back")
    page.wait_for_selector("[data-export='epub']")
    with page.expect_download() as info:
        page.click("[data-export='epub']")
    download = info.value
    assert download.suggested_filename.endswith(".epub")
    with zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes())) as epub:
        assert epub.read("mimetype") == b"application/epub+zip"
        content = "".join(epub.read(n).decode() for n in epub.namelist() if n.endswith((".xhtml", ".html")))
    assert "The ferry bell rang once" in content
    assert "The Ferry" in content
    assert not page.errors, page.errors
