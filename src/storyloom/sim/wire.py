"""OpenAI chat-completions wire format: response bodies, stream chunks and error bodies, as bytes.

Stream chunks are built by string concatenation around a per-stream prefix instead of dumping a
dict per chunk: with hundreds of concurrent streams the JSON encoder would dominate the CPU.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring  # the C escaper json.dumps uses, minus its overhead
from typing import Any

__all__ = ["ChunkWriter", "completion_body", "error_body"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "server_error",
    503: "server_error",
}


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    err = {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}
    return json.dumps({"error": err}, ensure_ascii=False).encode()


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's usage plus cached prompt tokens as OpenAI and DeepSeek report them."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
        "prompt_cache_hit_tokens": cached_tokens,
        "prompt_cache_miss_tokens": prompt_tokens - cached_tokens,
    }


def completion_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    tool_calls: list[tuple[str, str, str]] | None = None,
) -> bytes:
    """A non-streaming chat.completion response; with `tool_calls` [(id, name, arguments)] the
    message has content null and the calls (finish_reason "tool_calls")."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                for i, n, a in tool_calls
            ],
        }
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "storyloom-sim",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(prompt_tokens, completion_tokens, cached_tokens),
    }
    return json.dumps(body, ensure_ascii=False).encode()


class ChunkWriter:
    """Encodes the SSE events of one stream."""

    __slots__ = ("_head",)

    def __init__(self, *, completion_id: str, created: int, model: str) -> None:
        self._head = (
            f'data: {{"id":{json.dumps(completion_id)},"object":"chat.completion.chunk","created":{created},'
            f'"model":{json.dumps(model)},"system_fingerprint":"storyloom-sim","choices":'
        )

    def role(self) -> bytes:
        return (
            self._head + '[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
        ).encode()

    def content(self, piece: str) -> bytes:
        delta = encode_basestring(piece)
        return (
            self._head + f'[{{"index":0,"delta":{{"content":{delta}}},"finish_reason":null}}]}}\n\n'
        ).encode()

    def tool_call_start(self, index: int, call_id: str, name: str) -> bytes:
        """A call's first delta: its index, id, type and name, with empty arguments (OpenAI's order)."""
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        delta = json.dumps({"tool_calls": [call]}, ensure_ascii=False)
        return (self._head + f'[{{"index":0,"delta":{delta},"finish_reason":null}}]}}\n\n').encode()

    def tool_call_arguments(self, index: int, piece: str) -> bytes:
        delta = json.dumps(
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, ensure_ascii=False
        )
        return (self._head + f'[{{"index":0,"delta":{delta},"finish_reason":null}}]}}\n\n').encode()

    def finish(self, reason: str) -> bytes:
        return (
            self._head + f'[{{"index":0,"delta":{{}},"finish_reason":{json.dumps(reason)}}}]}}\n\n'
        ).encode()

    def usage(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> bytes:
        usage = json.dumps(_usage(prompt_tokens, completion_tokens, cached_tokens))
        return (self._head + f'[],"usage":{usage}}}\n\n').encode()

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"
