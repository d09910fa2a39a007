"""CORS: same origin by default (no CORS header at all), configured origins get preflights
answered, before authentication, and can read even a 401."""

from __future__ import annotations

from pathlib import Path

from storyloom.api.services import ApiOptions
from support.api_server import Keys, Served, novel_input, serve_app

_STUDIO = "https://studio.example"
_PREFLIGHT = {
    "Origin": _STUDIO,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
}


async def test_no_cors_headers_unless_configured(api: Served) -> None:
    preflight = await api.client.options("/api/novel/generate", headers=_PREFLIGHT)
    assert preflight.status_code == 405
    plain = await api.client.get("/api/projects", headers={"Origin": _STUDIO})
    assert plain.status_code == 200
    for r in (preflight, plain):
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers


async def test_a_configured_origin_gets_its_preflight_and_reads_answers(tmp_path: Path) -> None:
    options = ApiOptions(auth=True, heartbeat_s=0.5)
    async with serve_app(tmp_path, options, cors_origins=f"{_STUDIO}, https://other.example/") as served:
        keys = await Keys.make(served.db)
        preflight = await served.client.options("/api/novel/generate", headers=_PREFLIGHT)
        assert preflight.status_code == 200  # no key needed: browsers send none with a preflight
        assert preflight.headers["access-control-allow-origin"] == _STUDIO
        allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "idempotency-key", "last-event-id"} <= allowed
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in preflight.headers  # bearer keys, no cookies

        stranger = await served.client.options(
            "/api/novel/generate", headers={**_PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers

        made = await served.client.post(
            "/api/novel/generate",
            json={"novel_input": novel_input()},
            headers={"Origin": "https://other.example", **keys.auth("alice")},
        )
        assert made.status_code == 200
        assert made.headers["access-control-allow-origin"] == "https://other.example"
        refused = await served.client.get("/api/projects", headers={"Origin": _STUDIO})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == _STUDIO
