"""/v1: every app as a chat model (`storyloom/<name>`) in the chat-completions wire format.

A chat completion is a job like any other (durable, queued, limited by tenant): the app's input is
made from the messages (`App.input_from_messages`), the job runs on the workers, and the answer is
its text. Streaming, the answer's content arrives while the app's answer step streams; what the
agents do before it arrives as `reasoning_content` deltas (the field chat UIs show as thinking);
the last chunk carries `usage`, the real tokens of every model call of the job. The job id is in
the `X-Storyloom-Job-Id` header (and the completion id), its cost in `X-Storyloom-Cost-Usd` (non-
streaming) or `usage.cost_usd` (streaming). A client that disconnects does not cancel the job.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from storyloom.api.deps import AUTH, ServicesDep, Tenant
from storyloom.api.services import Services
from storyloom.api.sse import SSE_HEADERS
from storyloom.app import App
from storyloom.errors import NotFoundError, UserError
from storyloom.jobs.models import TERMINAL_EVENT_KINDS, Job, StoredEvent

__all__ = ["ChatCompletionIn", "OpenAIErrorOut", "router"]

router = APIRouter(prefix="/v1", tags=["openai-compatible"], responses=AUTH)

_PREFIX = "storyloom/"


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(max_length=40)
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionIn(BaseModel):
    """The fields of OpenAI's request this front reads; the others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(max_length=200)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1000)
    stream: bool = False
    user: str | None = Field(default=None, max_length=200)


class OpenAIError(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class OpenAIErrorOut(BaseModel):
    """OpenAI's error body, so the SDKs raise their usual exceptions with our sentence."""

    error: OpenAIError


_OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OpenAIErrorOut, "description": "the messages cannot be turned into the app's input"},
    404: {"model": OpenAIErrorOut, "description": "no app is this model"},
    502: {"model": OpenAIErrorOut, "description": "the app's job failed or was cancelled"},
}


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "storyloom"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    """OpenAI's error shape, so SDKs raise their usual exceptions with our sentence."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": code, "param": None}}, status)


@router.get("/models", response_model=ModelList)
async def list_models(services: ServicesDep) -> ModelList:
    now = int(time.time())
    return ModelList(data=[ModelOut(id=f"{_PREFIX}{app.name}", created=now) for app in services.registry])


@router.post("/chat/completions", response_model=None, responses=_OPENAI_ERRORS)
async def chat_completions(
    body: ChatCompletionIn, request: Request, services: ServicesDep, tenant: Tenant
) -> JSONResponse | StreamingResponse:
    """Run the app `model` names as a job and answer in the chat-completions format."""
    name = body.model.removeprefix(_PREFIX)
    try:
        app = services.registry.get(name)
    except NotFoundError:
        known = ", ".join(f"{_PREFIX}{n}" for n in services.registry.names) or "none"
        return _error(
            404,
            f"The model {body.model!r} does not exist (models: {known}).",
            "invalid_request_error",
            "model_not_found",
        )
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    try:
        run_input = app.input_from_messages(messages)
    except UserError as exc:
        return _error(400, str(exc), "invalid_request_error")
    job, _ = await services.submit(
        app.name,
        {"input": run_input.model_dump(mode="json")},
        priority=5,
        idempotency_key=None,
        tenant=tenant,
    )
    headers = {"X-Storyloom-Job-Id": job.id}
    if body.stream:
        return StreamingResponse(
            _stream(services, app, job, body.model),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **headers},
        )
    finished = await _wait(services, job)
    envelope = finished.result or {}
    if finished.status.value != "completed":
        return _error(
            502, f"the {app.name} job {job.id} {finished.status.value}: {finished.error}", "server_error"
        )
    usage = envelope.get("usage") or {}
    headers["X-Storyloom-Cost-Usd"] = f"{float(usage.get('cost_usd') or 0.0):.8f}"
    return JSONResponse(
        {
            "id": f"chatcmpl-{job.id}",
            "object": "chat.completion",
            "created": int(job.created_at),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": envelope.get("text") or ""},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(usage),
        },
        headers=headers,
    )


def _usage(totals: dict[str, Any], *, with_cost: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": int(totals.get("prompt_tokens") or 0),
        "completion_tokens": int(totals.get("completion_tokens") or 0),
        "total_tokens": int(totals.get("total_tokens") or 0),
        "prompt_tokens_details": {"cached_tokens": int(totals.get("cached_tokens") or 0)},
    }
    if with_cost:
        out["cost_usd"] = float(totals.get("cost_usd") or 0.0)
    return out


async def _wait(services: Services, job: Job) -> Job:
    """Follow the job's events to its end (the hub, not polling), then read it."""
    async with services.hub.subscribe(job.id, 0) as sub:
        async for event in sub:
            if event.kind in TERMINAL_EVENT_KINDS:
                break
    return await services.queue.get(job.id)


def _progress(event: StoredEvent, answer: str | None) -> str | None:
    """One line of the agents' progress for `reasoning_content` (None: nothing to say)."""
    step, kind = event.step, event.kind
    if step is None or step == answer:
        return None
    if kind == "step.started":
        return f"▸ {step}\n"
    if kind == "step.finished":
        return f"✓ {step} ({float(event.data.get('elapsed_s', 0.0)):.1f}s)\n"
    if kind == "step.degraded":
        return f"! {step}: {event.data.get('reason', '')}\n"
    if kind == "step.failed":
        return f"✗ {step}: {event.data.get('error', '')}\n"
    return None


async def _stream(services: Services, app: App[Any], job: Job, model: str) -> AsyncIterator[bytes]:
    created = int(job.created_at)
    ident = f"chatcmpl-{job.id}"
    answer = app.streaming_step()

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        doc = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(doc, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    streamed: list[str] = []
    async with services.hub.subscribe(job.id, 0) as sub:
        async for first in sub:
            out: list[bytes] = []
            for event in (first, *sub.drain_ready(500)):
                if event.kind == "step.delta" and event.step == answer:
                    text = str(event.data.get("text", ""))
                    streamed.append(text)
                    out.append(chunk({"content": text}))
                elif event.kind in TERMINAL_EVENT_KINDS:
                    break
                else:
                    line = _progress(event, answer)
                    if line is not None:
                        out.append(chunk({"reasoning_content": line}))
            if out:
                yield b"".join(out)
            if event.kind in TERMINAL_EVENT_KINDS:
                break
    finished = await services.queue.get(job.id)
    envelope = finished.result or {}
    if finished.status.value != "completed":
        message = f"the {app.name} job {job.id} {finished.status.value}: {finished.error}"
        yield f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n".encode()
        yield b"data: [DONE]\n\n"
        return
    text, sent = str(envelope.get("text") or ""), "".join(streamed)
    if text.strip() != sent.strip():  # the answer did not stream (or was reworked): send the rest
        rest = text[len(sent) :] if text.startswith(sent) else (text if not sent else "")
        if rest:
            yield chunk({"content": rest})
    yield chunk({}, "stop")
    usage_doc = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": _usage(envelope.get("usage") or {}, with_cost=True),
    }
    yield f"data: {json.dumps(usage_doc, separators=(',', ':'))}\n\n".encode()
    yield b"data: [DONE]\n\n"
