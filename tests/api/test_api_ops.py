"""/api/me and the operator's routes (/api/ops/*, /api/jobs/{id}/usage) over real HTTP, with
authentication on: figures of every tenant for an admin key only; a job's usage only for its own
tenant. And the studio's page and assets: public, and under 300 KB compressed on first load."""

from __future__ import annotations

import gzip
import re
import time

from storyloom.jobs.usage import usage_row
from storyloom.llm.types import Usage
from storyloom.store.schema import usage
from support.api_server import Keys, Served, novel_input


async def test_me_names_the_keys_tenant_and_role(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    r = await served.client.get("/api/me", headers=keys.auth("alice"))
    assert r.json() == {"tenant": "alice", "role": "member", "authenticated": True}
    r = await served.client.get("/api/me", headers=keys.auth("admin"))
    assert r.json() == {"tenant": "ops", "role": "admin", "authenticated": True}
    assert (await served.client.get("/api/me")).status_code == 401


async def test_me_without_auth_is_the_local_operator(api: Served) -> None:
    r = await api.client.get("/api/me", headers={"X-Tenant": "studio"})
    assert r.json() == {"tenant": "studio", "role": "admin", "authenticated": False}


async def test_ops_routes_need_an_admin_key(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    for path in ("/api/ops/overview", "/api/ops/limits", "/api/ops/usage"):
        r = await served.client.get(path, headers=keys.auth("alice"))
        assert r.status_code == 403, path
        assert "admin key" in r.json()["message"]
        assert (await served.client.get(path, headers=keys.auth("admin"))).status_code == 200, path


async def test_overview_counts_queued_jobs_by_priority_and_app(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    for priority, who in ((7, "alice"), (7, "bob"), (2, "alice")):
        r = await served.client.post(
            "/api/novel/generate",
            json={"novel_input": novel_input(), "priority": priority},
            headers=keys.auth(who),
        )
        assert r.status_code == 200, r.text
    doc = (await served.client.get("/api/ops/overview", headers=keys.auth("admin"))).json()
    depth = {q["priority"]: q["queued"] for q in doc["queue"]}
    assert [q["priority"] for q in doc["queue"]] == list(range(9, -1, -1))
    assert depth[7] == 2 and depth[2] == 1 and sum(depth.values()) == doc["queued"] == 3
    assert {(j["app"], j["status"], j["count"]) for j in doc["jobs"]} == {("novel", "pending", 3)}
    assert doc["workers"] == []  # nobody holds a lease


async def test_usage_per_tenant_per_day(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    now = time.time()
    rows = [
        usage_row(
            ts=now, job_id="j1", tenant="alice", step="s", model="m", usage_=Usage(100, 20), cost_usd=0.5
        ),
        usage_row(
            ts=now, job_id="j2", tenant="alice", step="s", model="m", usage_=Usage(10, 2), cost_usd=0.25
        ),
        usage_row(
            ts=now - 86_400, job_id="j3", tenant="bob", step="s", model="m", usage_=Usage(1, 1), cost_usd=1
        ),
        usage_row(
            ts=now - 40 * 86_400,
            job_id="j4",
            tenant="bob",
            step="s",
            model="m",
            usage_=Usage(1, 1),
            cost_usd=1,
        ),
    ]
    await served.db.execute(usage.insert().values(rows))
    r = await served.client.get("/api/ops/usage?days=7", headers=keys.auth("admin"))
    today, yesterday = (time.strftime("%Y-%m-%d", time.gmtime(t)) for t in (now, now - 86_400))
    assert r.json() == [
        {
            "day": today,
            "tenant": "alice",
            "calls": 2,
            "prompt_tokens": 110,
            "completion_tokens": 22,
            "cost_usd": 0.75,
        },
        {
            "day": yesterday,
            "tenant": "bob",
            "calls": 1,
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "cost_usd": 1.0,
        },
    ]
    assert (await served.client.get("/api/ops/usage?days=0", headers=keys.auth("admin"))).status_code == 422


async def test_limits_say_when_the_breaker_is_not_shared(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    doc = (await served.client.get("/api/ops/limits", headers=keys.auth("admin"))).json()
    assert doc["deployments"] and all(
        d["shared"] is False and d["breaker"] == "unknown" for d in doc["deployments"]
    )


async def test_a_jobs_usage_per_step_is_its_tenants_only(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    r = await served.client.post(
        "/api/novel/generate", json={"novel_input": novel_input()}, headers=keys.auth("alice")
    )
    job_id = r.json()["task_id"]
    rows = [
        usage_row(
            ts=time.time(),
            job_id=job_id,
            tenant="alice",
            step=step,
            model="m",
            usage_=Usage(5, 5),
            cost_usd=0.1,
        )
        for step in ("director", "versions/v1/plot", "versions/v1/plot")
    ]
    await served.db.execute(usage.insert().values(rows))
    r = await served.client.get(f"/api/jobs/{job_id}/usage", headers=keys.auth("alice"))
    assert [(u["step"], u["calls"], u["prompt_tokens"]) for u in r.json()] == [
        ("director", 1, 5),
        ("versions/v1/plot", 2, 10),
    ]
    other = await served.client.get(f"/api/jobs/{job_id}/usage", headers=keys.auth("bob"))
    assert other.status_code == 404 and other.json()["message"]


async def test_the_studio_is_public_and_its_first_load_is_small(authed: tuple[Served, Keys]) -> None:
    """Every file the page loads (the page, its styles, the module graph from app.js), each
    gzip-compressed as a server would send it: under 300 KB together."""
    served, _ = authed
    page = await served.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (await served.client.get("/api/projects")).status_code == 401  # the data still needs a key
    seen: dict[str, bytes] = {"/": page.content}
    todo = re.findall(r'(?:href|src)="(/studio/[^"]+)"', page.text)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        r = await served.client.get(path)
        assert r.status_code == 200, path
        seen[path] = r.content
        if path.endswith(".js"):
            base = path.rsplit("/", 1)[0]
            for rel in re.findall(r'from\s+"(\.{1,2}/[^"]+)"', r.text):
                parts = (base + "/" + rel).split("/")
                resolved: list[str] = []
                for part in parts:
                    if part == "..":
                        resolved.pop()
                    elif part not in (".", ""):
                        resolved.append(part)
                todo.append("/" + "/".join(resolved))
    assert {
        "/studio/js/app.js",
        "/studio/js/api.js",
        "/studio/studio.css",
        "/studio/js/views/chapter.js",
    } <= set(seen)
    compressed = sum(len(gzip.compress(body, 9)) for body in seen.values())
    print(
        f"\nstudio first load: {len(seen)} files, {sum(map(len, seen.values()))} bytes, {compressed} gzipped"
    )
    assert compressed < 300_000
    assert "cdn" not in b"".join(seen.values()).decode().lower()  # nothing from elsewhere
