"""FastAPI dependencies shared by the routers.

Every dependency is `async def`, even the trivial ones: FastAPI runs a plain `def` dependency in a
thread pool, a thread hand-over per dependency per request (8% of the API's CPU while 500 jobs
were submitted at once).
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from storyloom.api.auth import PRINCIPAL_SCOPE_KEY, Principal, open_principal
from storyloom.api.services import Services
from storyloom.api.sse import MAX_EVENT_ID, SSE_ENDED, SSE_OK

__all__ = [
    "AUTH",
    "NOT_FOUND",
    "QUEUE_FULL",
    "SSE_ENDED",
    "SSE_OK",
    "TOO_MANY",
    "After",
    "PrincipalDep",
    "Responses",
    "ServicesDep",
    "Tenant",
    "bind_job_id",
    "get_principal",
    "get_services",
    "get_tenant",
]

# Only for the OpenAPI description (every operation lists the bearer scheme, so /docs and clients
# generated from the spec send the key): AuthMiddleware has checked the key before any route runs.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `storyloom keys create`; required when the service runs with --auth.",
)


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_principal(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_tenant: Annotated[
        str | None,
        Header(
            max_length=64,
            description="The tenant, when the service runs without --auth; with --auth the key names it "
            "and this header may only repeat it.",
        ),
    ] = None,
) -> Principal:
    """Who the request acts for: the key's tenant and role (authentication on), else X-Tenant."""
    principal: Principal | None = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is not None:
        return principal
    principal = open_principal(x_tenant)
    structlog.contextvars.bind_contextvars(tenant=principal.tenant)
    return principal


async def get_tenant(principal: Annotated[Principal, Depends(get_principal)]) -> str:
    """The tenant every resource of the request belongs to."""
    return principal.tenant


async def bind_job_id(request: Request) -> None:
    """Put the job id of a /jobs/{job_id} or /novel/.../{task_id} request into the log context."""
    job_id = request.path_params.get("job_id") or request.path_params.get("task_id")
    if job_id:
        structlog.contextvars.bind_contextvars(job_id=job_id)


async def get_after(
    last_event_id: Annotated[
        int | None,
        Header(alias="Last-Event-ID", ge=0, le=MAX_EVENT_ID, description="resume after this event id"),
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_EVENT_ID, description="resume after this event id")
    ] = None,
) -> int:
    """The offset to resume after: Last-Event-ID (what EventSource sends) wins over ?after=."""
    return last_event_id if last_event_id is not None else after or 0


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
Tenant = Annotated[str, Depends(get_tenant)]
After = Annotated[int, Depends(get_after)]


Responses = dict[int | str, dict[str, Any]]
AUTH: Responses = {
    401: {"description": "no API key, or one that is not valid or revoked (with --auth)"},
    403: {"description": "the key may not do this (its role), or X-Tenant names another tenant"},
}
NOT_FOUND: Responses = {404: {"description": "no such job, task, project, chapter or version"}}
TOO_MANY: Responses = {
    429: {"description": "over one of the tenant's limits, named in the message; retry after Retry-After"}
}
# The submit routes' refusals (the name is older than the 422).
QUEUE_FULL: Responses = {
    429: {
        "description": "the queue is full, or the tenant is over one of its limits (named in the "
        "message); retry after Retry-After seconds"
    },
    422: {
        "description": "the request does not match this schema, or its Idempotency-Key was used"
        " with another body"
    },
}
