"""Pure ASGI middleware: request ids with access logs, and a cap on request body size.

Pure ASGI (not BaseHTTPMiddleware) so SSE responses stream through untouched and each
request costs no extra task.
"""

from __future__ import annotations

import json
import time
import uuid

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storyloom.api.errors import error_body
from storyloom.logs import get_logger

__all__ = ["WARM_UP_PATH", "BodyLimitMiddleware", "RequestContextMiddleware"]

WARM_UP_PATH = "/-/warm-up"  # see api.app._warm_routes

_log = get_logger("storyloom.api")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _BodyTooLarge(HTTPException):
    """An HTTPException so FastAPI's body parsing re-raises it as is (it turns other errors into 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is larger than {max_bytes} bytes.")


class BodyLimitMiddleware:
    """Answer 413 when a body is over `max_bytes`: by Content-Length up front, else while streaming in.

    Only for methods whose routes read a body (POST, PUT, PATCH): a GET's body is never read, so
    refusing it would be a status no GET operation documents.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, "Content-Length is not a number.")
                    return
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await _send_json(send, 413, f"request body is larger than {self.max_bytes} bytes.")


class RequestContextMiddleware:
    """Bind a request id (from X-Request-ID or new) to the log context and echo it; log each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
        request_id = request_id or uuid.uuid4().hex[:16]
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if scope["path"] != WARM_UP_PATH:  # our own start-up request is not a user's 404
                    _log.info(
                        "http.request",
                        method=scope["method"],
                        path=scope["path"],
                        status=status,
                        duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    )


async def _send_json(send: Send, status: int, message: str) -> None:
    """An `ErrorOut` answer from below the app (its exception handlers are not reachable here)."""
    payload = json.dumps(error_body(message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
