"""The simulator's `POST /v1/embeddings`: OpenAI's wire format, deterministic vectors.

A vector is a hashed bag of the text's features (lower-cased Latin words, CJK character bigrams),
signed and L2-normalized, so texts that share words are close (cosine) and the same text always
maps to the same vector: good enough for a vector store's tests and benchmarks, not for meaning.
`dimensions` (1..4096, default 256) as OpenAI's parameter; `encoding_format` "float" only.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from storyloom.llm.tokens import estimate_tokens
from storyloom.sim.wire import error_body

__all__ = ["embed_text", "embeddings_route"]

_WORD = re.compile(r"[a-z0-9]+")
_CJK = re.compile(r"[\u3400-\u9fff]")
_DEFAULT_DIMENSIONS = 256


def _features(text: str) -> list[str]:
    lowered = text.lower()
    feats = _WORD.findall(lowered)
    cjk = _CJK.findall(text)
    feats += [a + b for a, b in itertools.pairwise(cjk)] or cjk
    return feats or [lowered.strip() or "empty"]


def embed_text(text: str, dimensions: int = _DEFAULT_DIMENSIONS) -> list[float]:
    vec = [0.0] * dimensions
    for feat in _features(text):
        digest = hashlib.blake2b(feat.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "big") % dimensions
        vec[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 6) for v in vec]


def _bad(message: str) -> Response:
    return Response(error_body(400, message), 400, media_type="application/json")


async def embeddings_route(request: Request) -> Response:
    try:
        body: Any = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _bad("The request body is not valid JSON.")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        return _bad("'model' is required and must be a non-empty string.")
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        return _bad("'input' must be a string or a non-empty array of strings.")
    dims = body.get("dimensions", _DEFAULT_DIMENSIONS)
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 4096:
        return _bad("'dimensions' must be an integer from 1 to 4096.")
    if body.get("encoding_format", "float") != "float":
        return _bad("only encoding_format 'float' is simulated.")
    tokens = sum(max(1, estimate_tokens(t)) for t in inputs)
    data = [
        {"object": "embedding", "index": i, "embedding": embed_text(t, dims)} for i, t in enumerate(inputs)
    ]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
