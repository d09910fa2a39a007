"""Book runs in Chromium: write chapters k..n with progress, cost against the cap, pause and
resume; an outline edit marks the written chapter stale, and regenerating it clears that; the
story bible edited in its form."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from support.web import Studio, new_book

pytestmark = pytest.mark.browser


def test_a_run_pauses_resumes_and_a_stale_chapter_is_regenerated(studio: Studio, page: Any) -> None:
    book_id = new_book(page, studio, "The Long River", 2)
    page.fill(".run-form input[name=first]", "1")
    page.fill(".run-form input[name=last]", "1")
    page.fill(".run-form input[name=versions]", "1")
    page.fill(".run-form input[name=cost_cap_usd]", "2")
    page.click(".run-form button[type=submit]")
    page.wait_for_selector("li.run[data-run-state='running'] [data-action='pause']")
    page.click("li.run [data-action='pause']")
    page.wait_for_selector("li.run[data-run-state='paused'] [data-action='resume']")
    run = httpx.get(f"{studio.url}/api/books/{book_id}/runs").json()[0]
    assert run["status"] == "paused" and run["cost_cap_usd"] == 2
    page.click("li.run [data-action='resume']")
    page.wait_for_selector("li.run[data-run-state='completed']", timeout=90_000)
    line = page.text_content("li.run .small")
    assert line.startswith("1/1") and "/ $2.0000" in line  # done of all, cost against the cap
    assert page.get_attribute("li.run progress", "value") == "100"
    page.wait_for_selector(".chapter-row[data-index='1'] .badge[data-state='chosen']")

    # An outline edit of a written chapter makes it stale, with the reason.
    page.click(".outline-row[data-number='1'] button")
    page.fill(".outline-row[data-number='1'] textarea[name=summary]", "Lin crosses the river at night.")
    page.click(".outline-row[data-number='1'] button[type=submit]")
    page.wait_for_selector(".stale [data-stale='1']")
    assert "outline" in page.text_content(".stale [data-stale='1']")
    page.wait_for_selector(".chapter-row[data-index='1'] .badge[data-state='stale']")
    page.click("[data-regenerate]")
    page.wait_for_selector(".stale p.muted", timeout=90_000)  # nothing stale any more
    states = {c["number"]: c["state"] for c in httpx.get(f"{studio.url}/api/books/{book_id}/chapters").json()}
    assert states[1] == "chosen"

    # The story bible in forms: a new world setting is saved, and the written chapter goes stale.
    page.fill(".story-bible textarea[name=world_setting]", "A river delta of ferries and toll gates.")
    page.click("[data-save-bible]")
    page.wait_for_selector(".stale [data-stale='1']")
    assert "bible" in page.text_content(".stale [data-stale='1']")
    bible = httpx.get(f"{studio.url}/api/books/{book_id}/bible").json()
    assert bible["world"]["setting"] == "A river delta of ferries and toll gates."
    assert bible["characters"]  # the generated characters were kept as they were
    assert not page.errors, page.errors
