"""Authentication over real HTTP: keys, 401/403, roles, revocation, and the route audit."""

from __future__ import annotations

import asyncio
import re

from fastapi.routing import APIRoute

from storyloom.api.auth import PUBLIC_PATHS
from storyloom.store.keys import KeyStore
from support.api_server import Keys, Served, novel_input


def _routes(served: Served) -> list[tuple[str, str]]:
    """Every (method, path) of the app's API routes, path parameters filled in (the routers are
    included without a prefix of their own: their routes' paths are whole)."""
    out = []
    pending = list(served.app.routes)
    while pending:
        route = pending.pop(0)
        included = getattr(route, "original_router", None)  # FastAPI >= 0.13x wraps included routers
        if included is not None:
            pending += included.routes
        elif isinstance(route, APIRoute):
            path = re.sub(r"\{[^}]+\}", "x1", route.path)
            out += [(method, path) for method in sorted(route.methods)]
    return out


async def test_every_route_but_the_public_ones_needs_a_valid_key(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    routes = _routes(served)
    assert ("GET", "/metrics") in routes and ("POST", "/api/novel/generate") in routes
    wrong = "slk_0123456789ab_" + "A" * 43
    checked = 0
    for method, path in routes:
        if path in PUBLIC_PATHS:
            continue
        for headers, why in (
            ({}, "needs an API key"),
            ({"Authorization": f"Basic {keys.alice}"}, "Authorization: Bearer"),
            ({"Authorization": f"Bearer {wrong}"}, "not valid"),
            ({"Authorization": f"Bearer {keys.revoked}"}, "revoked"),
        ):
            r = await served.client.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer"), (method, path)
            assert why in r.json()["detail"], (method, path, r.text)
            checked += 1
    assert checked >= 4 * 15
    # a path that matches nothing says nothing either, and a body is not looked at before the key
    assert (await served.client.get("/api/nothing-here")).status_code == 401
    bad_body = await served.client.post("/api/novel/generate", content=b"{not json")
    assert bad_body.status_code == 401


async def test_health_and_the_api_description_need_no_key(authed: tuple[Served, Keys]) -> None:
    served, _ = authed
    for path in ("/api/health", "/openapi.json", "/docs"):
        r = await served.client.get(path)
        assert r.status_code in (200, 503), (path, r.status_code)  # health: degraded without workers
    spec = (await served.client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    generate = spec["paths"]["/api/novel/generate"]["post"]
    assert generate["security"] == [{"ApiKey": []}]
    assert {"401", "403", "429"} <= set(generate["responses"])


async def test_metrics_need_an_admin_key(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    for path in ("/metrics", "/api/metrics"):
        member = await served.client.get(path, headers=keys.auth("alice"))
        assert member.status_code == 403, path
        assert member.json()["detail"] == f"{path} needs an admin key; this key's role is member."
        assert (await served.client.get(path, headers=keys.auth("admin"))).status_code == 200


async def test_x_tenant_may_only_repeat_the_keys_tenant(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    body = {"novel_input": novel_input()}
    other = await served.client.post(
        "/api/novel/generate", json=body, headers={**keys.auth("alice"), "X-Tenant": "bob"}
    )
    assert other.status_code == 403
    assert "acts for tenant 'alice'" in other.json()["detail"]
    same = await served.client.post(
        "/api/novel/generate", json=body, headers={**keys.auth("alice"), "X-Tenant": "alice"}
    )
    assert same.status_code == 200
    job = await served.queue.get(same.json()["task_id"])
    assert job.tenant == "alice"


async def test_a_key_revoked_elsewhere_is_refused_once_the_cache_has_expired(
    authed: tuple[Served, Keys],
) -> None:
    served, keys = authed
    record, key = await keys.store.create(tenant="carol")
    headers = {"Authorization": f"Bearer {key}"}
    assert (await served.client.get("/api/projects", headers=headers)).status_code == 200
    await KeyStore(served.queue.db).revoke(record.id)  # as `storyloom keys revoke` does, from outside
    ttl = served.app.state.services.keys.ttl_s
    assert ttl <= 1.0
    await asyncio.sleep(ttl + 0.05)
    refused = await served.client.get("/api/projects", headers=headers)
    assert refused.status_code == 401 and refused.json()["detail"] == "this API key has been revoked."


async def test_last_use_is_recorded(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    assert (await served.client.get("/api/projects", headers=keys.auth("bob"))).status_code == 200
    await served.app.state.services.keys.aclose()  # the throttled write is in the background
    bob = [k for k in await keys.store.list_keys(tenant="bob")]
    assert bob[0].last_used_at is not None


async def test_auth_off_honours_x_tenant_and_still_scopes_jobs(api: Served) -> None:
    r = await api.client.post(
        "/api/novel/generate", json={"novel_input": novel_input()}, headers={"X-Tenant": "alice"}
    )
    job_id = r.json()["task_id"]
    assert (await api.queue.get(job_id)).tenant == "alice"
    assert (await api.client.get(f"/api/jobs/{job_id}", headers={"X-Tenant": "alice"})).status_code == 200
    for path in (f"/api/jobs/{job_id}", f"/api/novel/status/{job_id}", f"/api/jobs/{job_id}/events"):
        assert (await api.client.get(path, headers={"X-Tenant": "bob"})).status_code == 404, path
        assert (await api.client.get(path)).status_code == 404, path  # no header: tenant "default"
    assert (await api.client.get("/metrics")).status_code == 200  # no keys, nothing is admin-only
