"""Every refusal over real HTTP is a documented status with a documented body, never a 500.

Each case here was a 500, an undocumented status or a body off the spec before (issue 10)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from storyloom.api.openapi import build_openapi
from storyloom.api.services import ApiOptions
from storyloom.errors import (
    AuthenticationError,
    IdempotencyConflictError,
    PermissionDeniedError,
    TenantLimitError,
)
from support.api_server import Served, novel_input, serve_app


def _raising_routes(app: FastAPI) -> None:
    """Errors the engine raises (or will: the auth and jobs work) on a route of their own."""
    errors: dict[str, Exception] = {
        "idempotency": IdempotencyConflictError("the key 'k' was used for a different request."),
        "auth": AuthenticationError("no API key: send Authorization: Bearer KEY."),
        "role": PermissionDeniedError("a member key may not revoke keys."),
        "limit": TenantLimitError("over 2 concurrent jobs.", limit="concurrent_jobs", retry_after_s=2.5),
        "bug": ZeroDivisionError("division by zero"),
    }

    async def boom(kind: str) -> None:
        raise errors[kind]

    app.add_api_route("/test/raise/{kind}", boom, methods=["POST"])


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    options = ApiOptions(heartbeat_s=0.5, max_body_bytes=4000)
    async with serve_app(tmp_path, options, extend=_raising_routes) as api:
        yield api


def _is_error_out(body: Any) -> bool:
    message = body.get("message") if isinstance(body, dict) else None
    return isinstance(message, str) and body["detail"] == message


def _is_validation_out(body: Any, field: str) -> bool:
    fields = [e["field"] for e in body["detail"]]
    return (
        isinstance(body.get("message"), str)
        and field in fields
        and all(set(e) == {"field", "loc", "message", "type"} for e in body["detail"])
    )


async def test_huge_integers_are_422_not_an_overflow(served: Served) -> None:
    r = await served.client.get("/api/projects", params={"offset": 2**63})
    assert r.status_code == 422 and _is_validation_out(r.json(), "offset")
    pid = (await served.client.post("/api/projects", json={"title": "T"})).json()["id"]
    r = await served.client.post(f"/api/projects/{pid}/chapters", json={"outline": "x", "index": 2**63})
    assert r.status_code == 422 and _is_validation_out(r.json(), "index")
    r = await served.client.post(f"/api/projects/{pid}/chapters", json={"outline": "x", "index": 2**31})
    assert r.status_code == 422  # the column is 32 bits on PostgreSQL


async def test_a_blank_chapter_outline_is_422_and_nothing_is_stored(served: Served) -> None:
    pid = (await served.client.post("/api/projects", json={"title": "T"})).json()["id"]
    for outline in ("   ", "\u3000\x1c\n"):
        r = await served.client.post(f"/api/projects/{pid}/chapters", json={"outline": outline})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["message"] == "the chapter outline must not be empty"
    assert (await served.client.get(f"/api/projects/{pid}/chapters")).json() == []


async def test_true_is_not_an_integer(served: Served) -> None:
    body = {"novel_input": novel_input(), "priority": True}
    r = await served.client.post("/api/novel/generate", json=body)
    assert r.status_code == 422 and _is_validation_out(r.json(), "priority")
    r = await served.client.post("/api/novel/generate", json={"novel_input": novel_input(), "priority": 7.0})
    assert r.status_code == 200  # JSON Schema counts 7.0 as an integer


async def test_a_body_that_is_not_utf8_or_nests_too_deep_is_a_422(served: Served) -> None:
    headers = {"content-type": "application/json"}
    for content in (b'{"title": "\xff\xfe"}', b"[" * 1900 + b"]" * 1900):
        r = await served.client.post("/api/projects", content=content, headers=headers)
        assert r.status_code == 422
        assert r.json()["detail"][0]["type"] == "json_invalid"


async def test_a_project_idempotency_key_fits_its_column(served: Served) -> None:
    pid = (await served.client.post("/api/projects", json={"title": "T"})).json()["id"]
    body = {"outline": "x", "idempotency_key": "k" * 151}
    r = await served.client.post(f"/api/projects/{pid}/chapters", json=body)
    assert r.status_code == 422 and _is_validation_out(r.json(), "idempotency_key")


async def test_405_lists_every_method_of_the_path(served: Served) -> None:
    r = await served.client.put("/api/jobs/some-id")
    assert r.status_code == 405 and _is_error_out(r.json())
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
    r = await served.client.post("/api/projects/p1")
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}


async def test_413_has_the_error_body_and_a_get_body_is_not_read(served: Served) -> None:
    headers = {"content-type": "application/json"}
    big = b'{"title": "' + b"a" * 5000 + b'"}'
    r = await served.client.post("/api/projects", content=big, headers=headers)
    assert r.status_code == 413 and _is_error_out(r.json())
    r = await served.client.request("GET", "/api/projects", content=big, headers=headers)
    assert r.status_code == 200


async def test_an_unknown_path_is_a_404_with_the_error_body(served: Served) -> None:
    for path in ("/api/nope", "/api/jobs/a%2Fb", "/api/jobs/a/b/events"):
        r = await served.client.get(path)
        assert r.status_code == 404 and _is_error_out(r.json()), path


async def test_engine_errors_map_to_their_statuses(served: Served) -> None:
    r = await served.client.post("/test/raise/idempotency")
    assert r.status_code == 422
    body = r.json()
    assert body["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert body["message"] == "the key 'k' was used for a different request."
    r = await served.client.post("/test/raise/auth")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and _is_error_out(r.json())
    r = await served.client.post("/test/raise/role")
    assert r.status_code == 403 and _is_error_out(r.json())
    r = await served.client.post("/test/raise/limit")
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert r.json() == {
        "detail": "over 2 concurrent jobs.",
        "message": "over 2 concurrent jobs.",
        "limit": "concurrent_jobs",
    }


async def test_a_bug_is_still_a_json_error_body(served: Served) -> None:
    r = await served.client.post("/test/raise/bug")
    assert r.status_code == 500 and _is_error_out(r.json())
    assert "division" not in r.text  # no internals in the answer


def test_the_document_declares_our_error_bodies_on_every_operation() -> None:
    from storyloom.api.app import create_app
    from storyloom.config import Settings

    doc = build_openapi(create_app(Settings(_env_file=None)))  # type: ignore[call-arg]
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationErrorOut" in schemas
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert "503" in responses, (method, path)
            if op.get("requestBody"):
                assert {"400", "413", "422"} <= set(responses), (method, path)
            for status, response in responses.items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    expected = ("ValidationErrorOut",) if status == "422" else ("HealthOut", "ErrorOut")
                    if path.startswith("/v1/") and status in ("400", "404", "502"):
                        expected = ("OpenAIErrorOut",)  # OpenAI's shape, for the SDKs
                    assert schema["$ref"].rsplit("/", 1)[-1] in expected, (method, path, status)
            for parameter in op.get("parameters", []):
                assert "null" not in str(parameter["schema"]), (method, path, parameter["name"])
    events = doc["paths"]["/api/jobs/{job_id}/events"]["get"]["responses"]
    assert set(events) >= {"200", "204", "404", "422"}
    assert list(events["200"]["content"]) == ["text/event-stream"]


def test_the_not_blank_pattern_and_the_server_agree_on_every_whitespace() -> None:
    """What the schema calls blank (jsonschema-rs, as schemathesis checks) is what strip() removes."""
    import sys

    import jsonschema_rs

    from storyloom.validation import NOT_BLANK_SCHEMA, PY_WHITESPACE

    assert set(PY_WHITESPACE) == {c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()}
    schema = jsonschema_rs.validator_for({"type": "string", **NOT_BLANK_SCHEMA})
    for text in ["", " ", *PY_WHITESPACE, "\ufeff", "\u200b", " a ", "\x00"]:
        assert schema.is_valid(text) == bool(text.strip()), repr(text)
