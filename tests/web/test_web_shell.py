"""The studio's shell in Chromium: language (the browser's by default, a switch), every string in
both languages, keyboard use, a phone's width."""

from __future__ import annotations

from typing import Any

import pytest

from support.web import Studio

pytestmark = pytest.mark.browser


def test_the_browsers_language_by_default_and_a_switch(studio: Studio, browser: Any) -> None:
    context = browser.new_context(locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(studio.url + "/")
        page.wait_for_selector(".new-project")
        assert page.text_content("nav a[href='#/projects']") == "作品"
        assert page.get_attribute("html", "lang") == "zh-CN"
        page.click("button.lang")
        page.wait_for_function(
            "() => document.querySelector(\"nav a[href='#/projects']\").textContent === 'Projects'"
        )
        assert page.get_attribute("html", "lang") == "en"
        page.reload()  # the choice is kept
        page.wait_for_selector(".new-project")
        assert page.text_content("nav a[href='#/projects']") == "Projects"
        missing = page.evaluate("async () => (await import('/studio/js/i18n.js')).missingKeys()")
        assert missing == {"zh": [], "en": []}
    finally:
        context.close()


def test_keyboard_reaches_the_navigation_and_the_forms(studio: Studio, page: Any) -> None:
    page.goto(studio.url + "/")
    page.wait_for_selector(".new-project")
    focused = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(
            page.evaluate("() => document.activeElement.getAttribute('href') || document.activeElement.name")
        )
    assert "#/apps" in focused and "title" in focused and "premise" in focused
    page.focus(".new-project input[name=title]")
    page.keyboard.type("Keyboard only")
    page.focus(".new-project button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_selector("form.bible")
    assert page.text_content("h1") == "Keyboard only"


def test_readable_on_a_phone(studio: Studio, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, locale="en-US")
    try:
        page = context.new_page()
        for path in ("/", "/#/apps", "/#/ops"):
            page.goto(studio.url + path)
            page.wait_for_selector("main h1")
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, (path, overflow)
    finally:
        context.close()
