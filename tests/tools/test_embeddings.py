"""Embeddings: the simulator's `POST /v1/embeddings` and the gateway's `embed()` over loopback HTTP."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel

from storyloom import App, Flow, StepContext
from storyloom.config import Settings
from storyloom.jobs.models import JobStatus
from storyloom.llm.gateway import Gateway
from storyloom.llm.types import CallMeta, EmbeddingRequest
from storyloom.registry import AppRegistry
from storyloom.runner import job_payload
from storyloom.serve.local import run_local_job


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


def _settings(tmp_path: Path, sim: Any) -> Settings:
    return Settings(data_dir=tmp_path, base_url=sim.url, model="sim-writer", _env_file=None)  # type: ignore[call-arg]


async def test_the_simulator_serves_openai_embeddings(sim: Any) -> None:
    async with aiohttp.ClientSession() as http:
        body = {"model": "emb", "input": ["green tea leaves", "green tea", "a red car"], "dimensions": 64}
        async with http.post(f"{sim.url}/embeddings", json=body) as r:
            assert r.status == 200
            doc = await r.json()
        async with http.post(f"{sim.url}/embeddings", json={"model": "emb", "input": []}) as r:
            assert r.status == 400
            assert "input" in json.loads(await r.read())["error"]["message"]
    assert doc["object"] == "list" and [d["index"] for d in doc["data"]] == [0, 1, 2]
    tea_leaves, tea, car = (d["embedding"] for d in doc["data"])
    assert len(tea) == 64 and abs(sum(x * x for x in tea) - 1) < 1e-3
    assert _cos(tea_leaves, tea) > _cos(tea_leaves, car)
    assert doc["usage"]["prompt_tokens"] == doc["usage"]["total_tokens"] > 0


async def test_the_gateway_embeds_through_its_limits_and_ledger(tmp_path: Path, sim: Any) -> None:
    gateway = Gateway.from_settings(_settings(tmp_path, sim))
    try:
        meta = CallMeta(tenant="t1", job_id="j1", step="store")
        result = await gateway.embed(EmbeddingRequest(model="emb", inputs=["one", "two"], meta=meta))
        again = await gateway.embed(EmbeddingRequest(model="emb", inputs=["one"], meta=meta))
    finally:
        await gateway.aclose()
    assert len(result.vectors) == 2 and len(result.vectors[0]) == 256
    assert again.vectors[0] == result.vectors[0]  # deterministic
    assert result.usage.prompt_tokens > 0 and result.deployment is not None
    assert (
        gateway.ledger.total("tenant", "t1").prompt_tokens
        == result.usage.prompt_tokens + again.usage.prompt_tokens
    )


class Notes(BaseModel):
    text: str


flow = Flow("vectors")


@flow.step()
async def store(ctx: StepContext) -> dict[str, Any]:
    vectors = await ctx.llm.embed([ctx.run_input.text, ctx.run_input.text + " again"], dimensions=32)
    return {"dims": [len(v) for v in vectors]}


app = App(name="vectors", input=Notes, flow=flow)


async def test_a_step_embeds_and_the_call_is_metered(tmp_path: Path, sim: Any) -> None:
    job = await run_local_job(
        _settings(tmp_path, sim),
        AppRegistry.discover(extra=[app]),
        "vectors",
        job_payload(app, Notes(text="tea")),
    )
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.result is not None
    assert job.result["result"] == {"dims": [32, 32]}
    assert job.result["usage"]["calls"] == 1 and job.result["usage"]["prompt_tokens"] > 0
