"""The generic app page: a form made from an app's input JSON Schema runs a non-novel app (the
haiku app of docs/EXTENDING.md) and shows its steps and result as they come."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from support.web import Studio

pytestmark = pytest.mark.browser


def test_run_the_haiku_app_from_its_schema_form(studio: Studio, page: Any) -> None:
    page.goto(studio.url + "/#/apps")
    page.click("a[href='#/apps/haiku']")
    topic = page.locator("form.app-form [name=topic]")
    assert topic.get_attribute("required") is not None  # the schema's required field
    topic.fill("rain on the ferry")
    page.click("form.app-form button[type=submit]")
    page.wait_for_selector(".result[data-done]", timeout=30_000)
    assert page.get_attribute(".result", "data-done") == "completed"
    job_id = page.evaluate("() => location.hash.split('/').pop()")
    job = httpx.get(f"{studio.url}/api/jobs/{job_id}").json()
    assert job["status"] == "completed" and job["app"] == "haiku"
    assert job["result"] is not None
    # Each step of the flow, in order, ended; the last one's text is the job's text.
    steps = page.locator(".steps .agent")
    assert [steps.nth(i).get_attribute("data-step") for i in range(steps.count())] == ["draft", "polish"]
    assert {steps.nth(i).get_attribute("data-state") for i in range(steps.count())} == {"done"}
    assert page.text_content(".steps [data-step='polish'] .step-text") == job["text"]
    assert page.text_content(".result .result-text") == job["text"]
    assert not page.errors, page.errors


def test_a_wrong_input_is_refused_with_the_servers_sentence(studio: Studio, page: Any) -> None:
    page.goto(studio.url + "/#/apps/haiku")
    page.wait_for_selector("form.app-form")
    page.fill("form.app-form [name=priority]", "12")  # the form's own bound stops it...
    page.evaluate("() => document.querySelector('form.app-form [name=priority]').removeAttribute('max')")
    page.fill("form.app-form [name=topic]", "x")
    page.click("form.app-form button[type=submit]")  # ...and without it the server's 422 is shown
    page.wait_for_selector(".toast.error")
    assert "priority" in page.text_content(".toast.error").lower()
