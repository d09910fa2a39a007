"""Map errors to HTTP answers: every refusal is a status code and a sentence, never a traceback."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from storyloom.errors import (
    AuthenticationError,
    JobNotFoundError,
    PermissionDeniedError,
    QueueFullError,
    StoreError,
    TenantLimitError,
    UserError,
)
from storyloom.logs import get_logger

__all__ = ["NotFoundError", "install_error_handlers"]

_log = get_logger("storyloom.api")


class NotFoundError(UserError):
    """A project, chapter or version that does not exist (404)."""


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        out.append(
            {
                "field": ".".join(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc),
                "loc": loc,
                "message": str(err.get("msg", "")).removeprefix("Value error, "),
                "type": err.get("type", ""),
            }
        )
    return out


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = f"invalid request: {first['field'] or 'body'}: {first['message']}{more}."
    return JSONResponse({"detail": errors, "message": message}, status_code=422)


async def _job_not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc) or "no such job."}, status_code=404)


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _user_error(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def _queue_full(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFullError)
    retry_after = str(max(1, math.ceil(exc.retry_after_s)))
    return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": retry_after})


async def _unauthenticated(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="storyloom"'}
    )


async def _forbidden(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=403)


async def _tenant_limit(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TenantLimitError)
    retry_after = str(max(1, math.ceil(exc.retry_after_s)))
    return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": retry_after})


async def _store_error(_: Request, exc: Exception) -> JSONResponse:
    _log.error("api.store_error", error=str(exc))
    return JSONResponse(
        {"detail": "the database is unavailable; try again shortly."},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(JobNotFoundError, _job_not_found)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(QueueFullError, _queue_full)
    app.add_exception_handler(TenantLimitError, _tenant_limit)
    app.add_exception_handler(AuthenticationError, _unauthenticated)
    app.add_exception_handler(PermissionDeniedError, _forbidden)
    app.add_exception_handler(StoreError, _store_error)
    # The database driver may raise a raw OSError (e.g. connection refused) before SQLAlchemy wraps it.
    app.add_exception_handler(OSError, _store_error)
    app.add_exception_handler(UserError, _user_error)
