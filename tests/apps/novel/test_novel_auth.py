"""A provider that refuses our key: the chapter fails once, permanently, and says so without the key.

Real parts only: the simulator configured with `api_keys` (it answers 401 to any other key), the
gateway a worker builds from settings, the worker and its SQLite queue.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from storyloom.apps.novel.agents import AgentModels
from storyloom.apps.novel.chapter import write_chapter
from storyloom.apps.novel.models import ChapterInput, ChapterRequest, NovelInput
from storyloom.config import Settings
from storyloom.errors import AllVersionsFailedError, ProviderAuthError, StepFailedError, is_permanent
from storyloom.jobs import JobQueue, JobStatus
from storyloom.jobs.worker import Worker, WorkerConfig
from storyloom.llm.deployments import Deployment, GatewayConfig
from storyloom.llm.gateway import Gateway
from storyloom.llm.types import ChatRequest
from storyloom.registry import AppRegistry
from storyloom.runner import WorkerServices, app_handlers
from storyloom.store import Database

GOOD, WRONG = "sk-good-key-for-the-sim", "sk-wrong-0123456789abcdef"
BODY = "Incorrect API key provided"  # what the simulator's 401 body says (providers echo the key)
INPUT = NovelInput(
    chapter_outline="Mara finds a map and follows it to Greywater.", language="en", target_length=300
)


def _gateway(
    sim: Any, *, key_of: dict[str, str], fallbacks: dict[str, tuple[str, ...]] | None = None
) -> Gateway:
    deps = tuple(
        Deployment(name=f"dep-{m}", model=m, base_url=sim.url, api_key=k, provider_model=m)
        for m, k in key_of.items()
    )
    return Gateway(
        GatewayConfig(
            deployments=deps, default_model=deps[0].model, fallbacks=fallbacks or {}, backoff_base_s=0.01
        )
    )


async def test_a_401_is_not_retried_nor_switched_and_keeps_the_body_out(sim: Any) -> None:
    sim.configure(api_keys=[GOOD])
    g = _gateway(sim, key_of={"primary": WRONG, "backup": GOOD}, fallbacks={"primary": ("backup",)})
    with pytest.raises(ProviderAuthError) as info:
        await g.chat(ChatRequest(model="primary", messages=[{"role": "user", "content": "hi"}]))
    await g.aclose()
    assert sim.stats()["unauthorized"] == 1 and sim.stats()["requests"] == 0  # once; no fallback either
    assert g.counts["retries"] == 0 and g.counts["fallbacks"] == 0
    text = str(info.value)
    assert "dep-primary" in text and "HTTP 401" in text and WRONG not in text and BODY not in text


async def test_agents_never_degrade_an_auth_error_into_a_default(sim: Any) -> None:
    # The director is an optional agent (a provider error gives a default plan), but a rejected key
    # would meet every later call too: the chapter fails at the director, once.
    sim.configure(api_keys=[GOOD])
    g = _gateway(sim, key_of={"sim-writer": WRONG})
    with pytest.raises(StepFailedError) as info:
        await write_chapter(
            ChapterRequest(input=INPUT, versions=2), client=g, models=AgentModels("sim-writer"), run_id="a1"
        )
    await g.aclose()
    assert info.value.step == "director" and isinstance(info.value.cause, ProviderAuthError)
    assert is_permanent(info.value) and sim.stats()["unauthorized"] == 1


@pytest.mark.parametrize("agent", ["synthesis", "character", "optimize"])
async def test_every_version_refused_is_a_permanent_failure_and_a_transient_one_is_not(
    sim: Any, agent: str
) -> None:
    # The director's key is good; one agent's model has a key the provider refuses. Synthesis fails
    # its version; Character and Optimize would be skipped or replaced by the flow, but a refused
    # key is not a degradation to write a chapter around: those versions fail as well.
    sim.configure(api_keys=[GOOD], models={"m-synthesis-5xx": {"faults": {"error_5xx": 1.0}}})
    g = _gateway(sim, key_of={"sim-writer": GOOD, "m-bad-key": WRONG, "m-synthesis-5xx": GOOD})
    request = ChapterRequest(input=INPUT, versions=2)
    with pytest.raises(AllVersionsFailedError) as refused:
        await write_chapter(
            request, client=g, models=AgentModels("sim-writer", {agent: "m-bad-key"}), run_id="p1"
        )
    assert refused.value.permanent and is_permanent(refused.value)
    assert all("ProviderAuthError" in e and WRONG not in e for e in refused.value.errors)
    flaky = AgentModels("sim-writer", {"synthesis": "m-synthesis-5xx"})
    with pytest.raises(AllVersionsFailedError) as down:
        await write_chapter(request, client=g, models=flaky, run_id="p2")
    await g.aclose()
    assert not down.value.permanent and not is_permanent(down.value)  # a re-run may find it back up


async def test_the_job_fails_once_and_its_error_names_no_key_and_no_body(tmp_path: Path, sim: Any) -> None:
    sim.configure(api_keys=[GOOD])
    settings = Settings(
        profile="generic", base_url=sim.url, model="sim-writer", api_key=WRONG, data_dir=tmp_path
    )
    registry = AppRegistry.discover()
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await db.migrate(registry.migrations())
    queue = JobQueue(db)
    gateway = Gateway.from_settings(settings)
    services = WorkerServices(
        db=db,
        registry=registry,
        settings=settings,
        client=gateway,
        models=AgentModels.from_settings(settings),
    )
    payload = ChapterInput.of(ChapterRequest(input=INPUT, versions=2)).model_dump(mode="json")
    job = await queue.submit("novel", {"input": payload}, max_attempts=3)
    worker = Worker(
        db,
        app_handlers(registry),
        config=WorkerConfig(concurrency=4, heartbeat_s=0.2, poll_s=0.05, schedule_every_s=None),
        services=services,
        queue=queue,
    )
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(600):
            if (await queue.get(job.id)).status.is_terminal:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a wrongly scheduled retry would have been claimed by now
    finally:
        worker.stop()
        await task
        await services.aclose()
    done = await queue.get(job.id)
    events = await queue.events(job.id, limit=10_000)
    await db.close()
    assert done.status is JobStatus.FAILED and done.attempts == 1
    assert "ProviderAuthError" in (done.error or "") and "HTTP 401" in (done.error or "")
    assert "job.retrying" not in [e.kind for e in events]
    assert sim.stats()["unauthorized"] == 1  # one call in all: no gateway retry, no job re-run
    everything = json.dumps([done.to_dict(), [e.to_dict() for e in events]], default=str)
    assert WRONG not in everything and BODY not in everything
