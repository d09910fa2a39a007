"""The studio with `serve --auth`: sign in with a key (kept for the tab), a member's view, an
admin's operations page with a retry, and streams that carry the key (a fetch reader: EventSource
cannot send an Authorization header)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.web import Studio, create_key, start_serve, stop_serve

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Studio, str, str]]:
    tmp = tmp_path_factory.mktemp("studio-auth")
    alice = create_key(tmp, "alice")
    admin = create_key(tmp, "ops", "admin")
    proc, url = start_serve(tmp, "--auth")
    try:
        yield Studio(url=url, data_dir=tmp / "data"), alice, admin
    finally:
        stop_serve(proc)


def _sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url + "/")
    page.wait_for_selector("form.signin")
    page.fill("#signin-key", key)
    page.press("#signin-key", "Enter")
    page.wait_for_selector(".new-project")


def test_a_member_signs_in_works_and_streams_with_the_key(authed: tuple[Studio, str, str], page: Any) -> None:
    studio, alice, _ = authed
    page.goto(studio.url + "/")
    page.wait_for_selector("form.signin")
    page.fill("#signin-key", "slk_000000000000_" + "x" * 43)
    page.press("#signin-key", "Enter")
    page.wait_for_selector("form.signin .error:has-text('refused')")
    _sign_in(page, studio.url, alice)
    assert "alice · member" in page.text_content(".who")
    assert page.locator("nav a[href='#/ops']").count() == 0  # not an operator
    page.reload()  # the key is kept for this tab
    page.wait_for_selector(".new-project")
    assert page.evaluate("() => sessionStorage.getItem('storyloom.key')") == alice

    page.goto(studio.url + "/#/apps/haiku")
    page.fill("form.app-form [name=topic]", "keys and locks")
    page.click("form.app-form button[type=submit]")
    page.wait_for_selector(".result[data-done]", timeout=30_000)
    assert page.get_attribute(".result", "data-done") == "completed"
    job_id = page.evaluate("() => location.hash.split('/').pop()")
    stats = page.evaluate(
        "(id) => { const s = window.__studio.streams[id]; return [s.gaps, s.repeats, s.applied]; }", job_id
    )
    assert stats[0] == 0 and stats[1] == 0 and stats[2] > 4
    page.goto(studio.url + "/#/ops")
    page.wait_for_selector("main .error")
    assert "admin" in page.text_content("main .error")

    page.click("button:has-text('Sign out')")
    page.wait_for_selector("form.signin")
    assert page.evaluate("() => sessionStorage.getItem('storyloom.key')") is None
    assert not page.errors, page.errors


def test_an_admin_sees_operations_and_retries_a_job(authed: tuple[Studio, str, str], page: Any) -> None:
    studio, _, admin = authed
    auth = {"Authorization": f"Bearer {admin}"}
    r = httpx.post(
        f"{studio.url}/api/apps/haiku/jobs", json={"input": {"topic": "x"}, "priority": 9}, headers=auth
    )
    job_id = r.json()["id"]
    httpx.delete(f"{studio.url}/api/jobs/{job_id}", headers=auth)
    _sign_in(page, studio.url, admin)
    page.click("nav a[href='#/ops']")
    page.wait_for_selector(".jobs table")
    assert page.text_content(".cards .stat .big")  # live workers
    assert page.locator(".bars tr").count() == 10  # priorities 9..0
    page.select_option(".filters select >> nth=0", "cancelled")
    page.wait_for_selector(f"tr[data-job='{job_id}'] [data-retry]")
    page.click(f"tr[data-job='{job_id}'] [data-retry]")
    page.wait_for_selector(".toast:has-text('queued again')")
    assert httpx.get(f"{studio.url}/api/jobs/{job_id}", headers=auth).json()["status"] != "cancelled"
    assert not page.errors, page.errors
