"""/api/apps: every installed app, and submitting a job of any of them.

Each app gets its own `POST /api/apps/<name>/jobs` route whose body schema embeds the app's input
model, so the OpenAPI document (and /docs) says exactly what each app accepts; the generic
`/api/apps/{name}/jobs` stays for names no app has (404), out of the document.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Header, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError, create_model

from storyloom.api.deps import AUTH, NOT_FOUND, QUEUE_FULL, ServicesDep, Tenant
from storyloom.api.presenters import job_out
from storyloom.api.schemas import IdempotencyKey, JobOut, Priority, Strict
from storyloom.app import App

__all__ = ["AppJobIn", "AppOut", "app_job_router", "router"]

router = APIRouter(prefix="/api/apps", tags=["apps"], responses=AUTH)

IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


class AppOut(BaseModel):
    name: str
    title: str
    description: str
    model: str = Field(description="its name as a chat model on /v1/chat/completions")
    input_schema: dict[str, Any]
    kinds: list[str] = Field(description="the job kinds it runs")


class AppJobIn(Strict):
    input: dict[str, Any] = Field(description="the app's input, as its input_schema says")
    priority: int = Priority
    idempotency_key: str | None = IdempotencyKey


def app_out(app: App[Any]) -> AppOut:
    return AppOut(
        name=app.name,
        title=app.display_title,
        description=app.description,
        model=f"storyloom/{app.name}",
        input_schema=app.input_schema(),
        kinds=list(app.kinds),
    )


@router.get("", response_model=list[AppOut])
async def list_apps(services: ServicesDep) -> list[AppOut]:
    return [app_out(app) for app in services.registry]


@router.get("/{name}", response_model=AppOut, responses=NOT_FOUND)
async def get_app(name: str, services: ServicesDep) -> AppOut:
    return app_out(services.registry.get(name))


@router.post(
    "/{name}/jobs",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, **QUEUE_FULL},
    include_in_schema=False,  # each app's own route is documented instead (app_job_router)
)
async def submit_app_job(
    name: str,
    body: AppJobIn,
    services: ServicesDep,
    tenant: Tenant,
    idempotency_key: IdempotencyHeader = None,
) -> JobOut:
    """Queue a job of app `name`; follow it at `events_url`, read it at /api/jobs/{id}."""
    app = services.registry.get(name)
    try:
        run_input = app.input.model_validate(body.input)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", "input", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc
    job, _ = await services.submit(
        app.name,
        {"input": run_input.model_dump(mode="json")},
        priority=body.priority,
        idempotency_key=idempotency_key or body.idempotency_key,
        tenant=tenant,
    )
    return job_out(job, app=app.name)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))


def app_job_router(registry: Iterable[App[Any]]) -> APIRouter:
    """`POST /api/apps/<name>/jobs` for every app, its body typed with the app's input."""
    per_app = APIRouter(prefix="/api/apps", tags=["apps"], responses=AUTH)
    for app in registry:
        body_model = create_model(
            f"{_camel(app.name)}JobIn",
            __base__=Strict,
            input=(app.input, Field(description=f"the {app.name} app's input")),
            priority=(int, Field(default=5, ge=0, le=9, description="0..9, higher runs first")),
            idempotency_key=(str | None, Field(default=None, min_length=1, max_length=200)),
        )
        per_app.add_api_route(
            f"/{app.name}/jobs",
            _submitter(app, body_model),
            methods=["POST"],
            response_model=JobOut,
            status_code=status.HTTP_202_ACCEPTED,
            responses=QUEUE_FULL,
            summary=f"Submit a {app.name} job",
            name=f"submit_{app.name.replace('-', '_')}_job",
        )
    return per_app


def _submitter(app: App[Any], body_model: type[BaseModel]) -> Any:
    async def submit(
        body: Any, services: ServicesDep, tenant: Tenant, idempotency_key: IdempotencyHeader = None
    ) -> JobOut:
        run_input: BaseModel = body.input
        job, _ = await services.submit(
            app.name,
            {"input": run_input.model_dump(mode="json")},
            priority=body.priority,
            idempotency_key=idempotency_key or body.idempotency_key,
            tenant=tenant,
        )
        return job_out(job, app=app.name)

    # FastAPI reads the body's type from the annotation; it is made at run time, per app.
    submit.__annotations__ = {**submit.__annotations__, "body": body_model}
    submit.__doc__ = f"Queue a job of {app.name}; follow it at `events_url`, read it at /api/jobs/{{id}}."
    return submit
