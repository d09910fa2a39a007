"""`create_app`: the HTTP service over the durable queue, stateless by construction.

Everything a response needs comes from the database (jobs, event log, projects) through the
queue and the event hub, so any number of API processes can serve any job, before and after a
restart. The lifespan opens what the caller did not pass in, migrates, and starts the hub.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from storyloom.api.auth import AuthMiddleware
from storyloom.api.budgets import open_budget_check
from storyloom.api.docs import install_docs
from storyloom.api.errors import install_error_handlers
from storyloom.api.middleware import WARM_UP_PATH, BodyLimitMiddleware, RequestContextMiddleware
from storyloom.api.openapi import install_openapi
from storyloom.api.services import ApiOptions, Services
from storyloom.api.tenant_limits import BudgetCheck, parse_tenant_limits
from storyloom.config import Settings
from storyloom.registry import AppRegistry
from storyloom.web import install_studio

__all__ = ["ApiOptions", "create_app"]


def create_app(
    settings: Settings,
    *,
    registry: AppRegistry | None = None,
    options: ApiOptions | None = None,
    database: Any = None,
    queue: Any = None,
    hub: Any = None,
    budget_check: BudgetCheck | None = None,
) -> FastAPI:
    """The FastAPI app serving `registry`'s apps (none: the engine's routes only).
    `database`/`queue`/`hub` may be passed in (tests, embedding); else opened here.

    `budget_check`: whether a tenant is over a period budget, whose submissions are then refused;
    not given: the gateway's own budgets (api/budgets.py), when any tenant has one.
    """
    opts = options or ApiOptions()
    apps = registry if registry is not None else AppRegistry()
    tenant_limits = parse_tenant_limits(settings.tenant_limits)  # a ConfigError now, not at start-up

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            check = budget_check if budget_check is not None else await open_budget_check(settings, stack)
            app.state.services = await Services.open(
                settings,
                opts,
                stack,
                database=database,
                queue=queue,
                hub=hub,
                registry=apps,
                tenant_limits=tenant_limits,
                budget_check=check,
            )
            await app.state.services.db.warm_up()
            await _warm_routes(app)
            yield

    app = FastAPI(
        title="storyloom",
        description="Multi-agent LLM apps as a durable service: apps, jobs, resumable SSE events.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served from the package by install_docs: no CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    _include_routes(app, apps)
    install_openapi(app)
    install_docs(app)
    install_studio(app)
    # Added innermost first. From the outside: request id and access log (every answer, 401s and
    # 413s too, is logged with an id); CORS (preflights answered before authentication, and a 401
    # carries the CORS headers so a browser can read it); authentication; the body limit.
    app.add_middleware(BodyLimitMiddleware, max_bytes=opts.max_body_bytes)
    app.add_middleware(AuthMiddleware)
    origins = settings.cors_origin_list()
    if origins:  # none configured: same origin only, and no CORS header is ever sent
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "Last-Event-ID",
                "X-Request-ID",
                "X-Tenant",
            ],
            expose_headers=["Retry-After", "WWW-Authenticate", "X-Request-ID", "X-Task-Id"],
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware)
    return app


async def _warm_routes(app: FastAPI) -> None:
    """FastAPI builds a router's route table (dependants, pydantic adapters) on the first request
    that reaches it: ~70 ms of a blocked loop, which fell on the first burst of 500 users. A
    request that matches nothing walks, and so builds, every table now."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://warm-up") as client:
        await client.get(WARM_UP_PATH)


def _include_routes(app: FastAPI, registry: AppRegistry) -> None:
    """The engine's routes, then each app's own (an app may add routes, never replace ours)."""
    from storyloom.api.routes.apps import app_job_router
    from storyloom.api.routes.apps import router as apps_router
    from storyloom.api.routes.health import router as health_router
    from storyloom.api.routes.jobs import router as jobs_router
    from storyloom.api.routes.openai import router as openai_router
    from storyloom.api.routes.ops import router as ops_router

    routers = (app_job_router(registry), apps_router, jobs_router, openai_router, health_router, ops_router)
    for router in routers:
        app.include_router(router)
    for plugin in registry:
        if plugin.routes is not None:
            app.include_router(plugin.routes())
