"""Projects CRUD, chapter jobs built from the project, versions stored from the result, choose."""

from __future__ import annotations

from support.api_server import ActingWorker, Served, chapter_result


async def test_project_crud(api: Served) -> None:
    created = await api.client.post(
        "/api/projects",
        json={
            "title": "River Sword",
            "premise": "A courier learns.",
            "characters": [{"name": "Lin"}],
        },
    )
    assert created.status_code == 201
    project = created.json()
    pid = project["id"]
    assert project["characters"][0]["name"] == "Lin" and project["language"] == "zh"

    assert (await api.client.get(f"/api/projects/{pid}")).json()["title"] == "River Sword"
    patched = await api.client.patch(f"/api/projects/{pid}", json={"style": "terse", "language": "en"})
    assert patched.json()["style"] == "terse" and patched.json()["language"] == "en"
    assert patched.json()["premise"] == "A courier learns."
    assert [p["id"] for p in (await api.client.get("/api/projects")).json()] == [pid]
    # another tenant sees nothing
    assert (await api.client.get("/api/projects", headers={"X-Tenant": "other"})).json() == []
    assert (await api.client.get(f"/api/projects/{pid}", headers={"X-Tenant": "other"})).status_code == 404

    assert (await api.client.post("/api/projects", json={"title": ""})).status_code == 422
    assert (await api.client.post("/api/projects", json={"title": "x", "colour": "red"})).status_code == 422
    assert (await api.client.patch("/api/projects/nope", json={"title": "y"})).status_code == 404

    assert (await api.client.delete(f"/api/projects/{pid}")).status_code == 204
    assert (await api.client.get(f"/api/projects/{pid}")).status_code == 404
    assert (await api.client.delete(f"/api/projects/{pid}")).status_code == 404


async def test_chapter_job_versions_and_choose(api: Served) -> None:
    pid = (
        await api.client.post(
            "/api/projects",
            json={
                "title": "River Sword",
                "premise": "A courier learns the sword.",
                "outline": "Ten chapters on the river.",
                "characters": [{"name": "Lin", "role": "courier"}],
                "style": "terse",
                "genre": "wuxia",
                "language": "en",
            },
        )
    ).json()["id"]
    submitted = await api.client.post(
        f"/api/projects/{pid}/chapters",
        json={"outline": "Lin meets the swordsman.", "versions": 3, "priority": 8},
        headers={"Idempotency-Key": "ch1"},
    )
    assert submitted.status_code == 202
    chapter, job = submitted.json()["chapter"], submitted.json()["job"]
    assert chapter["index"] == 1 and job["status"] == "pending" and job["priority"] == 8
    again = await api.client.post(
        f"/api/projects/{pid}/chapters",
        json={"index": 1, "outline": "Lin meets the swordsman.", "versions": 3},
        headers={"Idempotency-Key": "ch1"},
    )
    assert again.json()["job"]["id"] == job["id"]

    stored = await api.queue.get(job["id"])
    assert stored.payload["input"]["versions"] == 3
    assert stored.payload["chapter_id"] == chapter["id"]
    assert stored.payload["input"]["characters"][0]["name"] == "Lin"
    assert "A courier learns the sword." in stored.payload["input"]["overall_outline"]
    assert stored.payload["input"]["language"] == "en"

    worker = ActingWorker(api)
    try:
        await worker.claim(job["id"])
        await worker.complete(job["id"], chapter_result(["one", "two", "three"], chosen=2))
    finally:
        await worker.close()

    view = (await api.client.get(f"/api/projects/{pid}/chapters/{chapter['id']}")).json()
    assert [v["text"] for v in view["versions"]] == ["one", "two", "three"]
    assert [v["scores"]["judge_pick"] for v in view["versions"]] == [False, True, False]
    assert view["summary"] == "Lin met the swordsman."
    assert view["jobs"][0]["status"] == "completed"
    # reading again does not store the versions twice
    versions = (await api.client.get(f"/api/projects/{pid}/chapters/{chapter['id']}/versions")).json()
    assert len(versions) == 3

    third = versions[2]["id"]
    chosen = await api.client.post(f"/api/projects/{pid}/chapters/{chapter['id']}/versions/{third}/choose")
    assert chosen.status_code == 200 and chosen.json()["chosen"] is True
    view = (await api.client.get(f"/api/projects/{pid}/chapters/{chapter['id']}")).json()
    assert view["current_version_id"] == third
    assert [v["chosen"] for v in view["versions"]] == [False, False, True]

    # the next chapter reads the previous chapter's summary when it runs, not when it is submitted
    # (test_novel_book_fixes runs it): nothing is frozen into its payload
    nxt = (await api.client.post(f"/api/projects/{pid}/chapters", json={"outline": "The duel."})).json()
    assert nxt["chapter"]["index"] == 2
    assert (await api.queue.get(nxt["job"]["id"])).payload["input"]["previous_summary"] is None
    listed = (await api.client.get(f"/api/projects/{pid}/chapters")).json()
    assert [c["index"] for c in listed] == [1, 2]

    missing = await api.client.post(f"/api/projects/{pid}/chapters/{chapter['id']}/versions/nope/choose")
    assert missing.status_code == 404
    assert (await api.client.get(f"/api/projects/{pid}/chapters/nope")).status_code == 404
    assert (await api.client.post("/api/projects/nope/chapters", json={"outline": "x"})).status_code == 404
    assert (await api.client.post(f"/api/projects/{pid}/chapters", json={"outline": ""})).status_code == 422
