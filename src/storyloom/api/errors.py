"""Map errors to HTTP answers: every refusal is a status code and a sentence, never a traceback.

Two bodies, both in the OpenAPI document (`api/openapi.py` puts them on every operation):
`ErrorOut` `{"detail": str, "message": str}` for every 4xx/5xx but 422, and `ValidationErrorOut`
`{"detail": [{"field","loc","message","type"}], "message": str}` for 422.

| status | raised as |
|---|---|
| 400 | `UserError` not listed below (the engine refused the input) |
| 401 | `AuthenticationError` (with `WWW-Authenticate: Bearer`) |
| 403 | `PermissionDeniedError` |
| 404 | `NotFoundError`, `JobNotFoundError`, a path no route has |
| 405 | a method the path does not have (`Allow` lists every method of the path) |
| 413 | a body over `ApiOptions.max_body_bytes` (`api/middleware.py`) |
| 422 | `RequestValidationError`, a body that is not JSON (or not UTF-8), `IdempotencyConflictError` |
| 429 | `QueueFullError`, `TenantLimitError` (with `Retry-After`, and `limit` naming the limit) |
| 503 | `StoreError` or a raw `OSError` from the database driver (with `Retry-After`) |
| 500 | a bug: logged with its traceback; the body is still an `ErrorOut` |
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from storyloom.api.schemas import ErrorOut, FieldError, ValidationErrorOut
from storyloom.api.stream_gate import StreamQueuedError
from storyloom.errors import (
    AuthenticationError,
    ConflictError,
    IdempotencyConflictError,
    JobNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    QueueFullError,
    StoreError,
    TenantLimitError,
    UserError,
)
from storyloom.logs import get_logger

__all__ = ["NotFoundError", "error_body", "error_response", "install_error_handlers", "validation_response"]

_log = get_logger("storyloom.api")
_LOCATIONS = ("body", "query", "path", "header", "cookie")


def error_body(message: str, *, limit: str | None = None, **queue: Any) -> dict[str, Any]:
    """An `ErrorOut` as JSON: `detail` repeats `message` for clients written against FastAPI's shape;
    `queue`: a queued stream's queue_token, queue_position and estimated_wait_s."""
    return ErrorOut(detail=message, message=message, limit=limit, **queue).model_dump(exclude_none=True)


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None, limit: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(message, limit=limit), status_code=status, headers=headers)


def _sentence(text: str) -> str:
    text = text.strip() or "invalid request"
    return text if text.endswith((".", "?", "!")) else f"{text}."


def validation_response(errors: Iterable[FieldError]) -> JSONResponse:
    """A 422 `ValidationErrorOut`; the message names the first field and counts the others."""
    found = list(errors)
    first = found[0] if found else FieldError(field="", loc=["body"], message="invalid request", type="")
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    message = f"invalid request: {first.field or first.loc[0]}: {first.message}{more}."
    body = ValidationErrorOut(detail=found, message=message)
    return JSONResponse(body.model_dump(), status_code=422)


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[1:] if loc and loc[0] in _LOCATIONS else loc
        out.append(
            FieldError(
                field=".".join(where),
                loc=loc or ["body"],
                message=str(err.get("msg", "")).removeprefix("Value error, "),
                type=str(err.get("type", "")),
            )
        )
    return out


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(_field_errors(exc))


def _not_json() -> JSONResponse:
    return validation_response(
        [FieldError(field="", loc=["body"], message="the body is not valid UTF-8 JSON", type="json_invalid")]
    )


_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


@functools.lru_cache(maxsize=256)
def _path_regex(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]


def _allowed_methods(request: Request, fallback: str) -> str:
    """Every documented method of this path: Starlette's own 405 names only the first route's, and
    a path such as /api/jobs/{id} is two routes (GET, DELETE). Read from the OpenAPI document, the
    one list of routes and methods every router (included, mounted) ends up in."""
    path = request.scope.get("route_path") or request.url.path
    methods: set[str] = set()
    for template, item in request.app.openapi().get("paths", {}).items():
        if _path_regex(template).match(path):
            methods |= {m.upper() for m in item if m in _METHODS}
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever there is a GET
    return ", ".join(sorted(methods)) or fallback


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # FastAPI answers 400 when the JSON decoder fails other than by JSONDecodeError: bytes that are
    # not UTF-8 (UnicodeDecodeError), nesting deeper than the decoder's recursion limit.
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError | RecursionError):
        return _not_json()
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request, headers.get("Allow", ""))
    message = _sentence(str(exc.detail)) if exc.detail else "request refused."
    return error_response(exc.status_code, message, headers=headers or None)


async def _idempotency_conflict(_: Request, exc: Exception) -> JSONResponse:
    where = FieldError(
        field="Idempotency-Key",
        loc=["header", "Idempotency-Key"],
        message=_sentence(str(exc) or "this idempotency key was already used for a different request"),
        type="idempotency_conflict",
    )
    body = ValidationErrorOut(detail=[where], message=where.message)
    return JSONResponse(body.model_dump(), status_code=422)


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return error_response(404, _sentence(str(exc) or "no such job"))


async def _user_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(400, _sentence(str(exc)))


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return error_response(409, _sentence(str(exc)))


async def _unauthenticated(_: Request, exc: Exception) -> JSONResponse:
    message = _sentence(str(exc) or "an API key is required (Authorization: Bearer KEY)")
    return error_response(401, message, headers={"WWW-Authenticate": "Bearer"})


async def _forbidden(_: Request, exc: Exception) -> JSONResponse:
    return error_response(403, _sentence(str(exc) or "this key may not do that"))


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


async def _queue_full(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFullError)
    return error_response(429, _sentence(str(exc)), headers=_retry_after(exc.retry_after_s), limit="queue")


async def _tenant_limit(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TenantLimitError)
    headers = _retry_after(exc.retry_after_s)
    if isinstance(exc, StreamQueuedError):
        body = error_body(
            _sentence(str(exc)),
            limit=exc.limit,
            queue_token=exc.token,
            queue_position=exc.position,
            estimated_wait_s=exc.wait_s,
        )
        return JSONResponse(body, status_code=429, headers=headers)
    return error_response(429, _sentence(str(exc)), headers=headers, limit=exc.limit)


async def _store_error(_: Request, exc: Exception) -> JSONResponse:
    _log.error("api.store_error", error=str(exc))
    return error_response(503, "the database is unavailable; try again shortly.", headers=_retry_after(5))


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after this answer, so uvicorn still logs the traceback.
    _log.error("api.unhandled", path=request.url.path, error=f"{type(exc).__name__}: {exc}")
    return error_response(500, "internal error; it has been logged.")


def install_error_handlers(app: FastAPI) -> None:
    """Handlers are found by the exception's class hierarchy, most specific first, so a subclass
    (IdempotencyConflictError is a UserError) gets its own answer whatever the order here."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(IdempotencyConflictError, _idempotency_conflict)
    app.add_exception_handler(JobNotFoundError, _not_found)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(AuthenticationError, _unauthenticated)
    app.add_exception_handler(PermissionDeniedError, _forbidden)
    app.add_exception_handler(QueueFullError, _queue_full)
    app.add_exception_handler(TenantLimitError, _tenant_limit)
    app.add_exception_handler(StoreError, _store_error)
    # The database driver may raise a raw OSError (e.g. connection refused) before SQLAlchemy wraps it.
    app.add_exception_handler(OSError, _store_error)
    app.add_exception_handler(UserError, _user_error)
    app.add_exception_handler(Exception, _bug)
