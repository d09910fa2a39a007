"""What a new user hit: degradation dressed up as success, and one broken per-agent model stalling a
chapter. Real parts: the simulator over loopback HTTP (answering prose where JSON was asked, or 5xx
from one model), the gateway, the chapter flow."""

from __future__ import annotations

import time
import uuid
from typing import Any

from storyloom.apps.novel.agents import AgentModels
from storyloom.apps.novel.chapter import write_chapter
from storyloom.apps.novel.cli import degradation_lines, summary_line
from storyloom.apps.novel.models import ChapterRequest, NovelInput
from storyloom.llm.deployments import Deployment, GatewayConfig
from storyloom.llm.gateway import Gateway
from storyloom.llm.types import CallMeta

REQUEST = ChapterRequest(
    input=NovelInput(chapter_outline="Mara finds a map in the lighthouse.", target_length=200), versions=2
)


def _gateway(sim: Any, **config: Any) -> Gateway:
    dep = Deployment(name="sim", model="sim-writer", base_url=sim.url, provider_model="sim-writer")
    return Gateway(GatewayConfig(deployments=(dep,), default_model="sim-writer", **config))


async def test_prose_for_json_is_reported_as_degradation_not_success(sim: Any) -> None:
    sim.configure(faults={"prose_only": 1.0})
    gateway = _gateway(sim)
    try:
        result = await write_chapter(
            REQUEST, client=gateway, models=AgentModels(default="sim-writer"), run_id=uuid.uuid4().hex
        )
    finally:
        await gateway.aclose()
    chosen = result.chosen_version
    # The quality score is the threshold used as a default, and the judge could not decide.
    assert not chosen.quality_measured
    assert result.chosen_by == "tie-break" and result.judge is not None and not result.judge.decided
    degraded = {(d.agent, d.version) for d in result.degraded}
    assert ("director", None) in degraded and ("judge", None) in degraded
    assert ("quality", 1) in degraded and ("plot", 2) in degraded
    line = summary_line(result)
    assert "quality not measured" in line and "tie: " in line and "chosen by judge" not in line
    assert "$" in line and "tokens" in line
    lines = degradation_lines(result)
    assert any(ln.startswith("degraded: director: unparseable") for ln in lines)
    dumped = result.model_dump(mode="json")
    assert dumped["degraded"] and dumped["cost_usd"] >= 0 and dumped["usage"]["prompt_tokens"] > 0


async def test_one_failing_per_agent_model_does_not_stall_the_chapter(sim: Any) -> None:
    # The character agent's model always answers 5xx; every other agent's model works.
    sim.configure(models={"broken": {"faults": {"error_5xx": 1.0}}})
    gateway = _gateway(sim, retry_budget_s=120.0)
    calls: list[str] = []
    started = time.monotonic()
    try:
        result = await write_chapter(
            REQUEST,
            client=gateway,
            models=AgentModels(default="sim-writer", overrides={"character": "broken"}),
            run_id=uuid.uuid4().hex,
            on_call=lambda record: calls.append(record.agent),
        )
    finally:
        await gateway.aclose()
    elapsed = time.monotonic() - started
    assert all(v.ok for v in result.versions)
    assert {("character", v.index) for v in result.versions} <= {
        (d.agent, d.version) for d in result.degraded
    }
    assert "character" not in calls  # none of its calls succeeded
    assert elapsed < 100  # bounded by the step's retry budget, not the gateway's 120 s per call
    assert CallMeta().retry_deadline_s is None  # outside a run, a call keeps the gateway's budget
