"""The OpenAI-compatible front under load (`storyloom bench openai --json`).

N clients at once each ask `POST /v1/chat/completions` (streaming) of an app whose last step streams
(`bench-echo`: plan, then answer) against `storyloom serve` with the simulator at a provider's pace.
The front's added latency is, per client, the time its first content chunk arrived minus the time
the worker received the answer step's first token (the `since` of that step's first delta event,
read back from the job's event log): queueing in the gateway and the provider's own time to first
token are not the front's. Clients run in this process (aiohttp), the service in others.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from storyloom import eventloop
from storyloom.bench.serve_process import ServeProcess

__all__ = ["OpenAIBenchConfig", "run_openai_bench"]

P99_GOAL_MS = 50.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAIBenchConfig:
    clients: int = 200
    workers: str = "2..2"
    ttft_s: float = 1.0
    tokens_per_s: float = 60.0
    answer_tokens: int = 80
    jitter: float = 0.3
    sim_nice: int = 10
    timeout_s: float = 600.0


@dataclass(slots=True)
class _Client:
    job_id: str = ""
    first_content_at: float | None = None
    content: list[str] = field(default_factory=list)
    usage_tokens: int = 0
    done: bool = False
    error: str | None = None


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _one(http: aiohttp.ClientSession, url: str, i: int, state: _Client) -> None:
    body = {
        "model": "storyloom/bench-echo",
        "messages": [{"role": "user", "content": f"Question {i}: why does the river bend?"}],
        "stream": True,
    }
    try:
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            state.job_id = r.headers.get("X-Storyloom-Job-Id", "")
            if r.status != 200:
                state.error = f"HTTP {r.status}: {(await r.text())[:200]}"
                return
            async for raw in r.content:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    state.done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    state.error = str(chunk["error"].get("message"))
                    continue
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        if state.first_content_at is None:
                            state.first_content_at = time.time()
                        state.content.append(text)
                if chunk.get("usage"):
                    state.usage_tokens = int(chunk["usage"].get("total_tokens") or 0)
    except (aiohttp.ClientError, TimeoutError) as exc:
        state.error = f"{type(exc).__name__}: {exc}"


async def _answer_started_at(http: aiohttp.ClientSession, url: str, job_id: str) -> float | None:
    """When the worker got the answer step's first token: its first delta event's `since`."""
    async with http.get(f"{url}/api/jobs/{job_id}/events") as r:
        if r.status != 200:
            return None
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event["kind"] == "step.delta" and event["step"] == "answer":
                    since = event["data"].get("since")
                    return float(since) if since else None
    return None


async def _drive(cfg: OpenAIBenchConfig, url: str) -> dict[str, Any]:
    states = [_Client() for _ in range(cfg.clients)]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(_one(http, url, i, s) for i, s in enumerate(states)))
        wall = time.monotonic() - started
        added: list[float] = []
        for s in states:
            if s.job_id and s.first_content_at is not None:
                since = await _answer_started_at(http, url, s.job_id)
                if since is not None:
                    added.append((s.first_content_at - since) * 1000)
    completed = sum(1 for s in states if s.done and s.content and s.error is None)
    return {
        "clients": cfg.clients,
        "completed": completed,
        "completed_ratio": round(completed / cfg.clients, 4),
        "front_added_latency_p50_ms": round(_percentile(added, 0.5), 1),
        "front_added_latency_p99_ms": round(_percentile(added, 0.99), 1),
        "front_added_latency_max_ms": round(max(added), 1) if added else 0.0,
        "measured_clients": len(added),
        "usage_reported": sum(1 for s in states if s.usage_tokens > 0),
        "errors": sorted({s.error for s in states if s.error})[:3],
        "wall_s": round(wall, 2),
    }


def run_openai_bench(cfg: OpenAIBenchConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="storyloom-bench-openai-") as tmp:
        workdir = Path(tmp)
        sim = workdir / "sim.json"
        profile = {
            "ttft_s": cfg.ttft_s,
            "tokens_per_s": cfg.tokens_per_s,
            "answer_tokens": cfg.answer_tokens,
            "jitter": cfg.jitter,
        }
        sim.write_text(json.dumps({"seed": 5, "default": profile, "chunk_interval_s": 0.02}))
        args = ["--workers", cfg.workers, "--sim-config", str(sim), "--concurrency", str(cfg.clients * 2)]
        args += ["--max-pending", str(cfg.clients * 4)]
        service = ServeProcess(workdir, args, env={"STORYLOOM_APPS": "storyloom.bench.apps:echo"})
        try:
            service.renice_simulator(cfg.sim_nice)
            time.sleep(2.0)  # the workers' start-up (imports, warm-up) is not what is measured
            result = eventloop.run(_drive(cfg, service.url))
            result["cpu_s"] = {k: round(v, 1) for k, v in service.cpu_seconds().items()}
        finally:
            service.stop()
    result["simulator"] = {**profile, "nice": cfg.sim_nice}
    result["goal_p99_ms"] = P99_GOAL_MS
    result["pass"] = result["completed_ratio"] == 1.0 and result["front_added_latency_p99_ms"] <= P99_GOAL_MS
    return result
