"""Vector storage: a memory's embedding through the gateway (`ctx.llm.embed`: its admission,
shared limits, retries and ledger; metered as one call of the job's `embed` step).

The embedding model is the `embed` agent's (`STORYLOOM_AGENT_MODELS='{"embed": "text-embedding-3-small"}'`
or `learning.embed`), else the default model. Vectors go into `learning_vectors` as JSON, which
works on SQLite and Postgres alike; similarity (`cosine`) is computed over a tenant's memories.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from storyloom.flow import Flow, StepContext
from storyloom.runner import AppJob

__all__ = ["cosine", "embed_flow", "embed_texts"]

embed_flow = Flow("learning-embed")


@embed_flow.step()
async def embed(ctx: StepContext[Any]) -> dict[str, Any]:
    texts = [str(t) for t in ctx.run_input["texts"]]
    return {"vectors": await ctx.llm.embed(texts)}


async def embed_texts(job: AppJob[Any], texts: Sequence[str]) -> tuple[str, list[list[float]]]:
    """(the model used, one vector per text)."""
    run = await job.run_flow(embed_flow, {"texts": list(texts)})
    models = job.services.models
    model = models.for_step("embed", job.app.name) if models is not None else "unknown"
    return model, [[float(x) for x in v] for v in run.outputs["embed"]["vectors"]]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
