"""The app seam end to end: the smallest app runs as a durable job, metered, through the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from haiku_app import HaikuInput
from haiku_app import app as haiku

import storyloom
from storyloom import App, Flow, StepContext
from storyloom.config import Settings
from storyloom.errors import ConfigError, InputError
from storyloom.jobs.models import JobStatus, StoredEvent
from storyloom.registry import AppNotFoundError, AppRegistry
from storyloom.runner import job_payload
from storyloom.serve.local import run_local_job


def test_public_surface_is_pinned() -> None:
    assert sorted(storyloom.__all__) == [
        "App", "AppJob", "AppTables", "Flow", "OnError", "RunResult", "Schedule", "StepContext",
        "StoryloomError", "UserError", "__version__",
    ]  # fmt: skip
    assert all(getattr(storyloom, name) is not None for name in storyloom.__all__)


def _settings(tmp_path: Path, sim: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, base_url=sim.url, model="sim-writer", _env_file=None
    )


async def test_the_smallest_app_runs_as_a_metered_durable_job(tmp_path: Path, sim: Any) -> None:
    registry = AppRegistry.discover(extra=[haiku])
    seen: list[StoredEvent] = []
    before = sim.stats()["total_tokens"]
    job = await run_local_job(
        _settings(tmp_path, sim),
        registry,
        "haiku",
        job_payload(haiku, HaikuInput(topic="rain")),
        on_event=seen.append,
    )
    assert job.status is JobStatus.COMPLETED, job.error
    envelope = job.result
    assert envelope is not None
    # With nothing declared: the result is the last step's output, the text answer its `text`.
    assert set(envelope["result"]) == {"text"} and envelope["text"] == envelope["result"]["text"]
    assert envelope["text"].strip()
    # Metered by the engine: two calls, and exactly the tokens the provider counted.
    usage = envelope["usage"]
    assert usage["calls"] == 2
    assert usage["total_tokens"] == sim.stats()["total_tokens"] - before > 0
    assert envelope["degraded"] == []
    kinds = [(e.kind, e.step) for e in seen]
    assert ("step.finished", "draft") in kinds and ("step.finished", "polish") in kinds
    assert any(k == "step.delta" and s == "polish" for k, s in kinds)  # streamed as token deltas
    assert kinds[-1] == ("job.completed", None)


def test_an_input_with_one_string_field_takes_the_last_user_message() -> None:
    messages = [{"role": "user", "content": "cats"}, {"role": "assistant", "content": "…"}]
    messages.append({"role": "user", "content": "autumn leaves"})
    assert haiku.input_from_messages(messages) == HaikuInput(topic="autumn leaves")
    with pytest.raises(InputError, match="no user message"):
        haiku.input_from_messages([{"role": "system", "content": "hi"}])


def test_an_app_is_checked_when_it_is_declared() -> None:
    flow = Flow("f")

    @flow.step()
    async def only(ctx: StepContext) -> dict[str, Any]:
        return {}

    with pytest.raises(ConfigError, match="exactly one of flow= and handler="):
        App(name="x", input=HaikuInput)
    with pytest.raises(ConfigError, match="lowercase"):
        App(name="Bad Name", input=HaikuInput, flow=flow)
    with pytest.raises(ConfigError, match="answer_step"):
        App(name="x", input=HaikuInput, flow=flow, answer_step="nope")
    with pytest.raises(ConfigError, match="two apps are named"):
        AppRegistry([haiku, haiku])
    with pytest.raises(AppNotFoundError, match="no app 'nope'"):
        AppRegistry([haiku]).get("nope")
    with pytest.raises(InputError, match="invalid input of app 'haiku': topic: Field required"):
        job_payload(haiku, {})


def test_builtin_apps_are_found_without_being_named() -> None:
    registry = AppRegistry.discover()
    assert "novel" in registry and registry.app_of_kind("novel.book") is registry.get("novel")
    assert not registry.broken
