"""/api/books without a worker: tenancy, validation and errors in the documented shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.api_server import Served, serve_app

A = {"X-Tenant": "alice"}
B = {"X-Tenant": "bob"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_app(tmp_path) as served:
        yield served


async def _book(api: Served, chapters: int = 3) -> str:
    r = await api.client.post(
        "/api/books",
        headers=A,
        json={"title": "Salt Road", "premise": "A courier.", "chapters": chapters, "generate": False},
    )
    assert r.status_code == 201, r.text
    assert r.json()["job"] is None and r.json()["chapters"] == chapters
    return str(r.json()["id"])


async def test_another_tenants_book_is_404_everywhere(api: Served) -> None:
    book = await _book(api)
    for method, path, body in [
        ("GET", f"/api/books/{book}", None),
        ("GET", f"/api/books/{book}/chapters", None),
        ("GET", f"/api/books/{book}/chapters/1", None),
        ("PUT", f"/api/books/{book}/chapters/1/text", {"text": "Mine now."}),
        ("PUT", f"/api/books/{book}/outline/1", {"summary": "Another plan."}),
        ("PUT", f"/api/books/{book}/bible", {"premise": "x"}),
        ("POST", f"/api/books/{book}/runs", {"first": 1, "last": 2}),
        ("GET", f"/api/books/{book}/export?format=md", None),
        ("GET", f"/api/books/{book}/memory", None),
        ("DELETE", f"/api/books/{book}", None),
    ]:
        r = await api.client.request(method, path, headers=B, json=body)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["detail"] == r.json()["message"] and book in r.json()["detail"]
    assert [b["id"] for b in (await api.client.get("/api/books", headers=B)).json()] == []
    assert (await api.client.get(f"/api/books/{book}/chapters/1", headers=A)).json()[
        "text"
    ] is None  # untouched


async def test_the_author_edits_and_exports(api: Served) -> None:
    book = await _book(api)
    r = await api.client.put(
        f"/api/books/{book}/outline/2", headers=A, json={"title": "The Well", "summary": "Water."}
    )
    assert r.status_code == 200 and r.json()["title"] == "The Well" and r.json()["outline"] == "Water."
    outline = (await api.client.get(f"/api/books/{book}/outline", headers=A)).json()
    assert [c["number"] for c in outline["chapters"]] == [1, 2, 3] and outline["chapters"][1][
        "title"
    ] == "The Well"
    for n, text in ((1, "Dawn."), (2, "Noon at the well."), (3, "Dusk.")):
        r = await api.client.put(f"/api/books/{book}/chapters/{n}/text", headers=A, json={"text": text})
        assert r.status_code == 200 and r.json()["state"] == "chosen" and r.json()["chosen_version"] == 1
    r = await api.client.put(f"/api/books/{book}/chapters/1/text", headers=A, json={"text": "Dawn, again."})
    states = {c["number"]: c for c in (await api.client.get(f"/api/books/{book}/chapters", headers=A)).json()}
    assert states[1]["chosen_version"] == 2 and states[1]["memory_stale"]
    assert states[2]["state"] == states[3]["state"] == "stale" and "chapter 1" in states[2]["stale_reason"]
    r = await api.client.post(f"/api/books/{book}/chapters/1/choose", headers=A, json={"version": 1})
    assert r.status_code == 200 and r.json()["text"] == "Dawn."
    md = await api.client.get(f"/api/books/{book}/export?format=md", headers=A)
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert md.text.index("Dawn.") < md.text.index("Noon at the well.") and "## The Well" in md.text
    epub = await api.client.get(f"/api/books/{book}/export?format=epub", headers=A)
    assert epub.headers["content-type"] == "application/epub+zip" and epub.content[:2] == b"PK"
    summary = (await api.client.get(f"/api/books/{book}", headers=A)).json()
    assert summary["written"] == 3 and summary["stale"] == 2


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/runs", {"first": 2, "last": 9}, 400, "chapter 4 is not in the outline"),
        ("/runs", {"first": 1, "versions": 11}, 422, "versions"),
        ("/runs", {"first": True}, 422, "first"),
        ("/chapters/1/choose", {}, 400, "exactly one of 'version'"),
        ("/chapters/1/choose", {"version": 3}, 404, "no version 3"),
        ("/chapters/1/rewrite", {"start": 0, "end": 5, "instruction": "shorter"}, 400, "no chosen text"),
        ("/regenerate", {"from_chapter": 1}, 409, "is stale"),
    ],
)
async def test_bad_requests_answer_a_sentence(
    api: Served, path: str, body: dict[str, object], status: int, says: str
) -> None:
    book = await _book(api)
    r = await api.client.post(f"/api/books/{book}{path}", headers=A, json=body)
    assert r.status_code == status, r.text
    assert says in str(r.json()["message"])


async def test_an_unknown_export_format_is_422(api: Served) -> None:
    book = await _book(api)
    r = await api.client.get(f"/api/books/{book}/export?format=pdf", headers=A)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "format"
