"""The simulator's HTTP app: OpenAI chat completions with latency, quotas and faults, plus control routes.

Routes: `POST /v1/chat/completions`, `POST /v1/embeddings`, `POST /v1/search` (sim/search.py),
`GET /v1/models`, `GET /stats`, `POST /stats/reset`,
`GET /sim/config`, `POST /sim/config` (deep-merge patch).

The chat route is a raw ASGI endpoint rather than a Starlette handler because it must pace writes
to absolute deadlines, notice a client leaving while it waits (to free its concurrency slot), and
drop a connection mid-body for the `stream_cut` fault, none of which a Response class offers.
Streams are paced in chunks: at most one write per `chunk_interval_s`, carrying every piece due by
then, and the last piece lands exactly at the answer's deadline (ttft + n / tokens_per_s, or
`latency_s`), so latency stays accurate under hundreds of concurrent streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from storyloom.errors import ConfigError
from storyloom.heap import HeapTrimmer
from storyloom.llm.tokens import estimate_tokens
from storyloom.sim.answer import Answer, build_answer, content_key, keyed_rng, mangle_json, wants_json
from storyloom.sim.config import SimConfig
from storyloom.sim.embeddings import embeddings_route
from storyloom.sim.prompt import analyse, message_text
from storyloom.sim.search import SearchEndpoint
from storyloom.sim.state import SimState
from storyloom.sim.story import story_text, truncate_to_tokens
from storyloom.sim.tools import ToolPlan, plan_tool_calls
from storyloom.sim.wire import ChunkWriter, completion_body, error_body

__all__ = ["create_sim_app", "install_log_filter"]

_MAX_BODY_BYTES = 8 * 1024 * 1024


class _StreamCut(Exception):
    """Raised after a partial body so uvicorn drops the connection (the `stream_cut` fault)."""

    def __init__(self, sent_tokens: int = 0) -> None:
        super().__init__("simulated stream cut")
        self.sent_tokens = sent_tokens


class _QuietStreamCut(logging.Filter):
    """Hides uvicorn's traceback for the deliberate `_StreamCut` (it is a fault, not a bug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _StreamCut)


def install_log_filter() -> None:
    """Idempotently attach the filter to uvicorn's error logger."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietStreamCut) for f in logger.filters):
        logger.addFilter(_QuietStreamCut())


class _Client:
    """Watches `receive` for the client leaving, and sleeps to absolute loop deadlines."""

    __slots__ = ("_loop", "_task", "_waiter", "gone")

    def __init__(self, receive: Receive) -> None:
        self._loop = asyncio.get_running_loop()
        self.gone = False
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = self._loop.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                if self._waiter is not None and not self._waiter.done():
                    self._waiter.set_result(None)
                return

    async def sleep_until(self, deadline: float) -> bool:
        """Wait until loop time `deadline`; False if the client left meanwhile."""
        if self.gone:
            return False
        if deadline <= self._loop.time():
            return True
        waiter = self._loop.create_future()
        self._waiter = waiter
        handle = self._loop.call_at(deadline, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None
        return not self.gone

    def close(self) -> None:
        # Cancelled, the task keeps its CancelledError, whose traceback holds `_watch`'s frame and
        # so `self`: holding the task too made every request a cycle for the collector to find.
        task, self._task = self._task, None
        if task is not None:
            task.cancel()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _send_simple(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            return b""
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _retry_headers(retry_after_s: float) -> dict[str, str]:
    return {
        "retry-after": str(max(1, math.ceil(retry_after_s))),
        "retry-after-ms": str(max(1, math.ceil(retry_after_s * 1000))),
    }


class _ChatEndpoint:
    """POST /v1/chat/completions as a raw ASGI app."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        # Its caches churn long texts through malloc: hand freed pages back now and then, as a
        # worker does (storyloom.heap), or a long soak reads the churn as growth.
        self._trimmer = HeapTrimmer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        state = self.state
        config = state.config
        if config.api_keys and _bearer(scope) not in config.api_keys:
            state.stats.unauthorized += 1
            body = error_body(401, "Incorrect API key provided.", code="invalid_api_key")
            await _send_simple(send, 401, body)
            return
        raw = await _read_body(receive)
        if raw is None:
            return
        if raw == b"":
            state.stats.bad_requests += 1
            await _send_simple(send, 413, error_body(413, "Request body is empty or too large."))
            return
        parsed = _parse_request(raw)
        if isinstance(parsed, str):
            state.stats.bad_requests += 1
            await _send_simple(send, 400, error_body(400, parsed))
            return
        await self._answer(parsed, t0, receive, send, _bearer(scope))
        self._trimmer.done()
        self._trimmer.maybe_trim()

    async def _answer(
        self, body: dict[str, Any], t0: float, receive: Receive, send: Send, api_key: str | None = None
    ) -> None:
        state, config = self.state, self.state.config
        stats = state.stats
        model: str = body["model"]
        messages: list[Any] = body["messages"]
        max_tokens: int | None = body.get("max_completion_tokens") or body.get("max_tokens")
        stream = bool(body.get("stream"))
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))

        stats.requests += 1
        counts = stats.model(model)
        counts.requests += 1
        stats.count_user(body.get("user"))

        facts = analyse(messages, body.get("response_format"))
        json_wanted = wants_json(body, facts)
        fault = state.draw_fault(model, json_wanted, bool(body.get("tools")))
        if fault == "error_5xx":
            stats.faults["error_5xx"] += 1
            status = state.fault_rng.choice((500, 502, 503))
            await _send_simple(send, status, error_body(status, "The server had an error (simulated)."))
            return
        if fault == "error_429":
            stats.faults["error_429"] += 1
            stats.rejected["injected"] += 1
            body_429 = error_body(429, "Rate limit reached (simulated).", code="rate_limit_exceeded")
            await _send_simple(send, 429, body_429, _retry_headers(config.fault_retry_after_s))
            return

        profile = config.profile(model)
        key = content_key(config.seed, body)
        answer = build_answer(
            facts=facts,
            profile=profile,
            key=key,
            json_wanted=json_wanted,
            max_tokens=max_tokens,
            empty=fault == "empty",
        )
        if fault in ("prose_json", "prose_only"):
            prose = story_text(facts, keyed_rng(key, "prose"), 60, "tokens")
            text = prose if fault == "prose_only" else mangle_json(answer.text, state.fault_rng, prose)
            if max_tokens is not None and estimate_tokens(text) > max_tokens:
                text, answer.finish_reason = truncate_to_tokens(text, max_tokens), "length"
            answer.text, answer.completion_tokens = text, estimate_tokens(text)
            if profile.latency_s is None:  # keep ttft + n / tokens_per_s true for the new length
                answer.total_s = answer.ttft_s + answer.completion_tokens / profile.tokens_per_s
        plan = plan_tool_calls(body, facts, key, fault == "broken_tool_args") if body.get("tools") else None
        if plan is not None:  # a model that calls tools says nothing else
            answer.text, answer.finish_reason, answer.completion_tokens = "", "tool_calls", plan.tokens
            if profile.latency_s is None:
                answer.total_s = answer.ttft_s + answer.completion_tokens / profile.tokens_per_s
        elif fault == "broken_tool_args":
            fault = None
        prompt_tokens = sum(4 + estimate_tokens(message_text(m)) for m in messages) + 2
        charge = prompt_tokens + (max_tokens if max_tokens is not None else answer.completion_tokens)

        admission = state.window.admit(config.quota, config.window_s, t0, charge)
        if not admission.admitted:
            stats.rejected[admission.cause or "rpm"] += 1
            headers = {**admission.headers, **_retry_headers(admission.retry_after_s)}
            body_429 = error_body(429, admission.message, code="rate_limit_exceeded")
            await _send_simple(send, 429, body_429, headers)
            return
        stats.admitted += 1
        counts.admitted += 1
        stats.prompt_tokens += prompt_tokens
        cached_tokens = (
            state.prefix_cache.lookup_and_store(api_key, messages, prompt_tokens)
            if config.prompt_cache
            else 0
        )
        stats.cached_prompt_tokens += cached_tokens
        if fault is not None:
            stats.faults[fault] += 1

        ticket = admission.ticket
        assert ticket is not None
        client = _Client(receive)
        sent_tokens, completed = 0, False
        try:
            headers = {**admission.headers, "x-request-id": uuid.uuid4().hex}
            if fault == "hang":  # accept, then say nothing until the client gives up
                if await client.sleep_until(t0 + config.hang_s):
                    await _send_simple(send, 504, error_body(504, "The simulated hang ended."))
            elif stream:
                sent_tokens, completed = await self._stream(
                    send,
                    client,
                    model,
                    answer,
                    t0,
                    (prompt_tokens, cached_tokens),
                    include_usage,
                    headers,
                    fault,
                    plan,
                )
            else:
                sent_tokens, completed = await self._complete(
                    send, client, model, answer, t0, (prompt_tokens, cached_tokens), headers, fault, plan
                )
            if completed:
                stats.completed += 1
                counts.completed += 1
            elif client.gone:
                stats.client_disconnects += 1
        except _StreamCut as cut:
            sent_tokens = cut.sent_tokens
            raise
        finally:
            client.close()
            stats.completion_tokens += sent_tokens
            counts.completion_tokens += sent_tokens
            settle = prompt_tokens + sent_tokens if config.quota.tpm_charge == "usage" else None
            state.window.release(ticket, settle_tokens=settle)

    async def _complete(
        self,
        send: Send,
        client: _Client,
        model: str,
        answer: Answer,
        t0: float,
        prompt: tuple[int, int],
        headers: dict[str, str],
        fault: str | None,
        plan: ToolPlan | None = None,
    ) -> tuple[int, bool]:
        """Send the whole answer at its deadline: (completion tokens sent, completed).
        `prompt`: (prompt tokens, of which served from the prompt cache)."""
        if not await client.sleep_until(t0 + answer.total_s):
            return 0, False
        body = completion_body(
            completion_id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            created=int(time.time()),
            model=model,
            text=answer.text,
            finish_reason=answer.finish_reason,
            prompt_tokens=prompt[0],
            completion_tokens=answer.completion_tokens,
            cached_tokens=prompt[1],
            tool_calls=plan.calls if plan is not None else None,
        )
        if fault == "stream_cut":  # promise the full length, deliver half, drop the connection
            raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            raw += [(k.encode(), v.encode()) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": 200, "headers": raw})
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise _StreamCut(0)  # the client can parse nothing out of half a JSON body
        await _send_simple(send, 200, body, headers)
        return answer.completion_tokens, True

    async def _stream(
        self,
        send: Send,
        client: _Client,
        model: str,
        answer: Answer,
        t0: float,
        prompt: tuple[int, int],
        include_usage: bool,
        headers: dict[str, str],
        fault: str | None,
        plan: ToolPlan | None = None,
    ) -> tuple[int, bool]:
        """Pace the answer's pieces to their deadlines: (completion tokens sent, completed)."""
        config = self.state.config
        raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            *((k.encode(), v.encode()) for k, v in headers.items()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        writer = ChunkWriter(
            completion_id=f"chatcmpl-{uuid.uuid4().hex[:24]}", created=int(time.time()), model=model
        )
        pieces = _split(answer.text, config.chunk_tokens)
        n = len(pieces)
        gen_s = answer.total_s - answer.ttft_s
        first, end = t0 + answer.ttft_s, t0 + answer.total_s
        due = [first + (gen_s * i / (n - 1) if n > 1 else 0.0) for i in range(n)]
        cut_at = n
        if fault == "stream_cut":
            cut_at = max(1, int(n * self.state.fault_rng.uniform(0.2, 0.8))) if n > 1 else 0
        if not await client.sleep_until(first):
            return 0, False
        if plan is not None:
            return await self._stream_calls(send, client, writer, answer, end, prompt, include_usage, plan)
        out = [writer.role()]
        sent_chars = 0
        i = 0
        last_write = first
        while True:
            now = asyncio.get_running_loop().time()
            while i < cut_at and due[i] <= now + 0.0005:
                out.append(writer.content(pieces[i]))
                sent_chars += len(pieces[i])
                i += 1
            finished = i >= cut_at
            if finished and fault != "stream_cut":
                if not await client.sleep_until(end):
                    return _tokens_of(answer, sent_chars), False
                out.append(writer.finish(answer.finish_reason))
                if include_usage:
                    out.append(writer.usage(prompt[0], answer.completion_tokens, prompt[1]))
                out.append(writer.done())
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": False})
                return answer.completion_tokens, True
            if out:
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
                out = []
                last_write = now
            if finished:  # stream_cut: the stream stops here, mid-answer, and the connection drops
                raise _StreamCut(_tokens_of(answer, sent_chars))
            wake = min(max(due[i], last_write + config.chunk_interval_s), end)
            if not await client.sleep_until(wake):
                return _tokens_of(answer, sent_chars), False

    async def _stream_calls(
        self,
        send: Send,
        client: _Client,
        writer: ChunkWriter,
        answer: Answer,
        end: float,
        prompt: tuple[int, int],
        include_usage: bool,
        plan: ToolPlan,
    ) -> tuple[int, bool]:
        """Tool calls as OpenAI streams them: per call a delta with id and name, then its
        arguments in pieces; the finish chunk at the answer's deadline."""
        first = [writer.role()]
        rest: list[bytes] = []
        for index, (call_id, name, arguments) in enumerate(plan.calls):
            first.append(writer.tool_call_start(index, call_id, name))
            step = max(1, len(arguments) // 3)
            for i in range(0, len(arguments), step):
                rest.append(writer.tool_call_arguments(index, arguments[i : i + step]))
        await send({"type": "http.response.body", "body": b"".join(first), "more_body": True})
        if rest:
            await send({"type": "http.response.body", "body": b"".join(rest), "more_body": True})
        if not await client.sleep_until(end):
            return answer.completion_tokens // 2, False
        tail = [writer.finish("tool_calls")]
        if include_usage:
            tail.append(writer.usage(prompt[0], answer.completion_tokens, prompt[1]))
        tail.append(writer.done())
        await send({"type": "http.response.body", "body": b"".join(tail), "more_body": False})
        return answer.completion_tokens, True


def _tokens_of(answer: Answer, sent_chars: int) -> int:
    if not answer.text:
        return 0
    return round(answer.completion_tokens * sent_chars / len(answer.text))


def _split(text: str, chunk_tokens: int) -> list[str]:
    """Pieces of about `chunk_tokens` tokens (CJK ~1 char a token, other text ~4 chars)."""
    if not text:
        return []
    cjk = sum(1 for ch in text[:200] if "\u3400" <= ch <= "\u9fff")
    step = chunk_tokens if cjk * 2 > min(len(text), 200) else chunk_tokens * 4
    return [text[i : i + step] for i in range(0, len(text), step)]


def _bearer(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            text: str = value.decode("latin-1")
            return text[7:].strip() if text.lower().startswith("bearer ") else text.strip()
    return None


def _parse_request(raw: bytes) -> dict[str, Any] | str:
    """The request body, or a one-sentence reason it is not a valid chat completion request."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "The request body is not valid JSON."
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required and must be a non-empty string."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' is required and must be a non-empty array."
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return "Each message must be an object with a 'role' and 'content'."
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return f"'{key}' must be a positive integer."
    return body


def create_sim_app(config: SimConfig | None = None) -> Starlette:
    """The simulator as an ASGI app; its live state is `app.state.sim` (a SimState)."""
    install_log_filter()
    state = SimState(config or SimConfig())

    async def models(_: Request) -> Response:
        names = sorted({*state.config.models, "sim-writer"})
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "storyloom-sim"} for n in names]
        return JSONResponse({"object": "list", "data": data})

    async def stats(_: Request) -> Response:
        return JSONResponse(state.snapshot(asyncio.get_running_loop().time()))

    async def reset_stats(_: Request) -> Response:
        state.reset_stats()
        return JSONResponse(state.snapshot(asyncio.get_running_loop().time()))

    async def get_config(_: Request) -> Response:
        return JSONResponse(state.config.model_dump(mode="json"))

    async def patch_config(request: Request) -> Response:
        try:
            patch = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return Response(
                error_body(400, "The config patch is not valid JSON."), 400, media_type="application/json"
            )
        if not isinstance(patch, dict):
            return Response(
                error_body(400, "The config patch must be a JSON object."), 400, media_type="application/json"
            )
        try:
            new = state.configure(patch)
        except ConfigError as exc:
            return Response(error_body(400, str(exc)), 400, media_type="application/json")
        return JSONResponse(new.model_dump(mode="json"))

    async def not_found(_: Request, __: Exception) -> Response:
        return Response(
            error_body(404, "No such route on the simulator."), 404, media_type="application/json"
        )

    routes = [
        Route("/v1/chat/completions", _ChatEndpoint(state), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/embeddings", embeddings_route, methods=["POST"]),
        Route("/v1/search", SearchEndpoint(state), methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/stats/reset", reset_stats, methods=["POST"]),
        Route("/sim/config", get_config, methods=["GET"]),
        Route("/sim/config", patch_config, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found})
    app.state.sim = state
    return app
