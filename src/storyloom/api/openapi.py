"""The OpenAPI document says what the API returns: every status, every error body.

FastAPI documents a 422 body of its own (`HTTPValidationError`, `{loc, msg, type}`) that our
handler never sends, and nothing for the errors raised below the routes. This rewrites the
generated document once, on every operation, so routes added later (auth, apps) are covered too:

- 422 -> `ValidationErrorOut`, and the FastAPI components go;
- every 4xx/5xx documented without a body (`responses={404: {"description": ...}}`) -> `ErrorOut`;
- 503 (the database) on every operation; 400 and 413 on every operation with a request body;
- 422 on every operation that takes any input (a path, query, header or body), since any may be bad;
- an optional header or query parameter is its type, not `anyOf [type, null]`: absent means None,
  and no client can send a null (a fuzzer sends the text "null", which the type refuses).

`api/errors.py` makes the bodies; a test fuzzes the live server against this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from storyloom.api.schemas import (
    ErrorOut,
    FieldError,
    JobEventOut,
    QueuedOut,
    TaskFrameOut,
    ValidationErrorOut,
)

__all__ = ["install_openapi"]

_REF = "#/components/schemas/{model}"
_ERROR = {"$ref": "#/components/schemas/ErrorOut"}
_INVALID = {"$ref": "#/components/schemas/ValidationErrorOut"}
_DESCRIPTIONS = {
    "400": "the request was refused as invalid",
    "401": "no API key, or one that is unknown or revoked",
    "403": "the key's role may not do this",
    "404": "no such resource",
    "413": "the request body is too large",
    "422": "the request does not match this schema",
    "429": "over a limit; retry after Retry-After seconds",
    "503": "the database is unavailable; retry after Retry-After seconds",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}


def _extra_schemas() -> dict[str, Any]:
    """Models no route names as its response_model: error bodies, and the SSE frames' `data`."""
    models = (ErrorOut, FieldError, ValidationErrorOut, JobEventOut, TaskFrameOut, QueuedOut)
    _, doc = models_json_schema([(m, "serialization") for m in models], ref_template=_REF)
    defs: dict[str, Any] = doc["$defs"]
    return defs


def _json(schema: dict[str, str]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _takes_input(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters") or operation.get("requestBody"))


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return schema
    kept = [o for o in options if o != {"type": "null"}]
    if len(kept) != 1 or len(kept) == len(options):
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**rest, **kept[0]}


def _parameters_without_null(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") in ("query", "header") and isinstance(parameter.get("schema"), dict):
            parameter["schema"] = _without_null(parameter["schema"])


def _document_errors(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    wanted = ["503"]
    if operation.get("requestBody"):
        wanted += ["400", "413"]
    if _takes_input(operation):
        wanted.append("422")
    for status in wanted:
        responses.setdefault(status, {"description": _DESCRIPTIONS[status]})
    for status, response in responses.items():
        if not status.isdigit() or int(status) < 400:
            continue
        if status == "422":
            response["content"] = _json(_INVALID)
            if response.get("description") == "Validation Error":  # FastAPI's own
                response["description"] = _DESCRIPTIONS["422"]
        elif "content" not in response:
            response["content"] = _json(_ERROR)
        if status in ("429", "503"):
            response.setdefault("headers", {}).update(_RETRY_AFTER)
        if status == "401":
            response.setdefault("headers", {})["WWW-Authenticate"] = {
                "description": "`Bearer`",
                "schema": {"type": "string"},
            }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict) and "responses" in operation:
                _parameters_without_null(operation)
                _document_errors(operation)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(_extra_schemas())
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve `build_openapi(app)` at /openapi.json (built on first request, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
