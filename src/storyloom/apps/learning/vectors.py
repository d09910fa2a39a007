"""Vector storage: a memory's embedding through the gateway (metered like any model call).

The embedding model is `<app>.embed` / `embed` in STORYLOOM_AGENT_MODELS, else `text-embedding-3-small`
(the simulator answers any model name). Vectors go into `learning_vectors` as JSON, which works on
SQLite and Postgres alike; similarity is computed in Python over a tenant's few hundred memories.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from storyloom.errors import ConfigError
from storyloom.llm.types import CallMeta, EmbeddingRequest, Usage
from storyloom.runner import AppJob

__all__ = ["DEFAULT_EMBEDDING_MODEL", "cosine", "embed_texts"]

DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"


async def embed_texts(job: AppJob[Any], texts: Sequence[str]) -> tuple[str, list[list[float]]]:
    client, models = job.services.client, job.services.models
    embed = getattr(client, "embed", None)
    if embed is None or models is None:
        raise ConfigError("this worker's model client makes no embeddings")
    model = (
        models.overrides.get(f"{job.app.name}.embed")
        or models.overrides.get("embed")
        or DEFAULT_EMBEDDING_MODEL
    )
    meta = CallMeta(tenant=job.tenant, priority=job.priority, job_id=job.id, step="embed")
    result = await embed(EmbeddingRequest(model=model, inputs=list(texts), meta=meta))
    usage: Usage = result.usage
    job.ctx.record_usage(step="embed", model=model, usage=usage, cost_usd=float(result.cost_usd))
    return model, [list(map(float, v)) for v in result.vectors]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
