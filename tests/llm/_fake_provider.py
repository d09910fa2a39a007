"""A tiny OpenAI-compatible server for client tests that need exact bytes the simulator won't send."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

Handler = Callable[[dict[str, Any]], Awaitable[Response]]


def sse(chunks: list[Any], *, delay_s: float = 0.0, first_delay_s: float = 0.0) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        await asyncio.sleep(first_delay_s)
        for c in chunks:
            yield (f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n").encode()
            await asyncio.sleep(delay_s)

    return StreamingResponse(body(), media_type="text/event-stream")


def chunk(
    content: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    choices = (
        []
        if content is None and finish is None
        else [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]
    )
    doc: dict[str, Any] = {"id": "x", "model": "fake", "choices": choices}
    if usage is not None:
        doc["usage"] = usage
    return doc


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """Run `handler` as /v1/chat/completions on a free loopback port; yields (base_url, bodies seen)."""
    seen: list[dict[str, Any]] = []

    async def endpoint(request: Request) -> Response:
        body = await request.json()
        seen.append(body)
        return await handler(body)

    app = Starlette(routes=[Route("/v1/chat/completions", endpoint, methods=["POST"])])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        server.should_exit = True
        await task


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
