"""Fixtures of the studio's browser tests: one server and one Chromium for the session (each test makes
its own project or job, so they do not see each other's data), a fresh browser context per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from support.web import CHROMIUM, Studio, start_serve, stop_serve

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="session")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    tmp = tmp_path_factory.mktemp("studio")
    proc, url = start_serve(tmp)
    try:
        yield Studio(url=url, data_dir=tmp / "data")
    finally:
        stop_serve(proc)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh context (its own storage) in English, with page errors collected: a test fails on any."""
    context = browser.new_context(
        viewport={"width": 1360, "height": 950}, locale="en-US", accept_downloads=True
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # A stream that has ended answers 204 on the reconnect, which Chromium logs: not our error.
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and "EventSource" not in m.text and "Failed to load resource" not in m.text
            else None
        ),
    )
    page.errors = errors
    try:
        yield page
    finally:
        context.close()
