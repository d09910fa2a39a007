"""An author in Chromium: a project from a premise, a chapter written in three versions that all
stream at once, a reload in the middle that continues with no gap and no repeat, a choice."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from support.web import Studio

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


def test_write_a_chapter_live_reload_midstream_and_choose(studio: Studio, page: Any) -> None:
    page.goto(studio.url + "/")
    page.fill(".new-project input[name=title]", "The Ferry")
    page.fill(".new-project textarea[name=premise]", "A courier on a river ferry learns the sword.")
    page.select_option(".new-project select[name=language]", "en")
    page.click(".new-project button[type=submit]")
    page.wait_for_selector("form.bible")

    page.fill(".write-form textarea[name=outline]", "Lin meets the old swordsman at the ferry.")
    page.fill(".write-form input[name=versions]", "3")
    page.fill(".write-form input[name=target_length]", "300")
    page.click(".write-form button[type=submit]")
    page.wait_for_selector("article.version[data-version='3']")
    job_id = page.evaluate("() => Object.keys(window.__studio.streams)[0]")

    # All three columns stream at once: each has text while the job still runs.
    page.wait_for_function(
        "() => [1, 2, 3].every((n) => document.querySelector(`.stream[data-version='${n}']`)"
        ".textContent.length > 40)",
        timeout=20_000,
    )
    assert page.text_content(".live .job-line .badge") == "running"
    before = {n: page.text_content(f".stream[data-version='{n}']") for n in (1, 2, 3)}
    seq_before = _stream(page, job_id)["restoredSeq"] + _stream(page, job_id)["applied"]

    page.reload()
    page.wait_for_selector("article.version[data-version='3']")
    resumed = _stream(page, job_id)
    # The page came back from its snapshot and asked only for what came after it.
    assert resumed["restoredSeq"] >= seq_before > 0
    page.wait_for_selector("[data-choose]", timeout=40_000)
    after = _stream(page, job_id)
    assert after["firstSeq"] == after["restoredSeq"] + 1, after  # resumed, not replayed
    assert after["gaps"] == 0 and after["repeats"] == 0, after
    # Every step's text on the page is the event log's, character for character.
    assert after["texts"] == {k: v for k, v in _server_texts(studio, job_id).items() if k in after["texts"]}
    for n in (1, 2, 3):
        assert page.get_attribute(f".stream[data-version='{n}']", "data-streamed-matches") == "true"
        text = page.text_content(f".stream[data-version='{n}']")
        assert text, n
        # What was on screen before the reload is still there where the same step went on.
        if before[n] and before[n][:40] in text:
            assert text.startswith(before[n][:40]) or before[n] in text

    # Timelines: every agent of every version ended, with its time, tokens and cost.
    for n in (1, 2, 3):
        rows = page.locator(f"article.version[data-version='{n}'] .timeline .agent")
        assert rows.count() == 8
        states = [rows.nth(i).get_attribute("data-state") for i in range(8)]
        assert set(states) <= {"done", "degraded"}, states
        plot = page.locator(f"article.version[data-version='{n}'] .timeline .agent").first
        assert plot.locator(".tokens").text_content() not in ("–", "0")
        assert plot.locator(".cost").text_content().startswith("$")
    # The director's plan and the judge's verdict with its reasons.
    assert page.locator(".plan-list dt").count() >= 3
    assert "version" in page.text_content(".judge-body .winner").lower()
    assert page.locator(".judge-body details.match").count() >= 1

    # Compare: measures side by side and a diff between two versions.
    assert page.locator("table.compare tbody tr").count() >= 5
    assert page.locator(".diff ins, .diff del").count() > 0

    pick = int(page.get_attribute("[data-choose]", "data-choose"))  # one the judge did not choose
    page.click(f"article.version[data-version='{pick}'] [data-choose]")
    page.wait_for_selector(f".chapter-text[data-chosen='{pick}']")
    chosen = page.text_content(".chapter-text")
    project_id = page.evaluate("() => location.hash.split('/')[2]")
    chapters = httpx.get(f"{studio.url}/api/projects/{project_id}/chapters").json()
    version = next(v for v in chapters[0]["versions"] if v["id"] == chapters[0]["current_version_id"])
    assert version["index"] == pick and version["text"] == chosen
    page.click("a.back")
    page.wait_for_selector(".chapter-row .badge[data-state='chosen']")
    assert not page.errors, page.errors
