"""Reproduce issue 10 item 2 in one process: 40 chapter jobs through one gateway, clean vs chaos.

    PYTHONPATH=src python scripts/chaos_breaker.py [--jobs 40] [--versions 2] [--json]

The simulator runs in its own process (`storyloom sim`) at a provider-like pace; the gateway is the
one a `serve` worker builds (generic profile pointed at the simulator, limits in memory). The same
jobs run twice: clean, then with the chaos profile of the issue (10% 5xx, 5% 429, 2% hangs, 2% cut
streams). A job that fails is re-run like the worker does (up to 3 attempts, the same run id and
checkpoints, so its finished steps are not paid twice). Reported: wall time, completed jobs, the
breaker's time not closed (sampled every 0.2 s), its openings, and the gateway's counts.

A script rather than a test: it measures time, which unit tests must not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from storyloom.config import Settings
from storyloom.errors import StoryloomError
from storyloom.flow import MemoryCheckpoints
from storyloom.bench.gateway.runner import SimProcess
from storyloom.llm.deployments import load_gateway_config
from storyloom.llm.gateway import Gateway
from storyloom.limits.state import breaker_state
from storyloom.apps.novel.agents import AgentModels
from storyloom.apps.novel.chapter import write_chapter
from storyloom.apps.novel.models import ChapterRequest, NovelInput

CHAOS = {"error_5xx": 0.10, "error_429": 0.05, "hang": 0.02, "stream_cut": 0.02}
CLEAN = {"error_5xx": 0.0, "error_429": 0.0, "hang": 0.0, "stream_cut": 0.0}


def _request(i: int, versions: int) -> ChapterRequest:
    return ChapterRequest(
        input=NovelInput(
            overall_outline="A courier on the river learns the sword and carries a letter to the capital.",
            chapter_outline=f"Chapter {i + 1}: the courier meets stranger number {i + 1} at the ferry.",
            genre="wuxia",
            style="terse",
            target_length=400,
            language="en",
        ),
        versions=versions,
    )


async def _run(sim_url: str, jobs: int, versions: int, tag: str, fixed_ttft: bool) -> dict[str, Any]:
    settings = Settings(profile="generic", base_url=sim_url, model="sim-writer", limits_url="memory://")
    config = load_gateway_config(settings)
    if fixed_ttft:  # the breaker's part alone: first tokens wait the configured 60 s, as before
        from storyloom.llm.deadlines import TtftPolicy

        config = dataclasses.replace(config, ttft=TtftPolicy(adaptive=False))
    gw = Gateway(config)
    models = AgentModels(default="sim-writer")
    dep = gw.config.deployments[0].name
    samples: list[str] = []
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            snap = await gw.backend.snapshot([dep])
            samples.append(breaker_state(snap[dep], time.time()))
            try:
                async with asyncio.timeout(0.2):
                    await stop.wait()
            except TimeoutError:
                pass

    async def job(i: int) -> tuple[bool, int, float]:
        checkpoints = MemoryCheckpoints()  # a re-run restores the finished steps, as the worker's do
        for attempt in range(1, 4):
            try:
                await write_chapter(
                    _request(i, versions),
                    client=gw,
                    models=models,
                    run_id=f"{tag}-{i}",
                    checkpoints=checkpoints,
                )
                return True, attempt, time.monotonic()
            except StoryloomError:
                continue
        return False, 3, time.monotonic()

    sampling = asyncio.create_task(sampler())
    t0 = time.monotonic()
    results = await asyncio.gather(*[job(i) for i in range(jobs)])
    wall = time.monotonic() - t0
    stop.set()
    await sampling
    ends = sorted(r[2] - t0 for r in results)
    not_closed = sum(1 for s in samples if s != "closed")
    opens = (await gw.backend.snapshot([dep]))[dep]["br"].get("opens")  # None before issue 10
    out = {
        "wall_s": round(wall, 2),
        "completed": sum(1 for r in results if r[0]),
        "submitted": jobs,
        "job_attempts": sum(r[1] for r in results),
        "p50_job_s": round(ends[len(ends) // 2], 2),
        "breaker_samples": len(samples),
        "breaker_not_closed_samples": not_closed,
        "breaker_open_s_est": round(not_closed * wall / max(1, len(samples)), 1),
        "breaker_opens": opens,
        "gateway_counts": dict(gw.counts),
    }
    await gw.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--versions", type=int, default=2)
    parser.add_argument("--ttft-s", type=float, default=0.5)
    parser.add_argument("--tokens-per-s", type=float, default=100.0)
    parser.add_argument("--only", choices=("clean", "chaos"), default=None)
    parser.add_argument("--fixed-ttft", action="store_true", help="no adaptive first-token deadline")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="storyloom-chaos-"))
    sim_cfg = {
        "seed": 11,
        "default": {"ttft_s": args.ttft_s, "tokens_per_s": args.tokens_per_s, "jitter": 0.3},
        "chunk_interval_s": 0.05,
    }
    sim = SimProcess(sim_cfg, work, "sim")
    out: dict[str, Any] = {"sim": sim_cfg["default"], "jobs": args.jobs, "versions": args.versions}
    try:
        for tag, faults in (("clean", CLEAN), ("chaos", CHAOS)):
            if args.only and tag != args.only:
                continue
            sim.configure({"faults": faults})
            sim.reset()
            out[tag] = asyncio.run(_run(sim.url, args.jobs, args.versions, tag, args.fixed_ttft))
            out[tag]["sim_faults"] = sim.stats()["faults"]
    finally:
        sim.close()
    if "clean" in out and "chaos" in out:
        out["chaos_over_clean_wall"] = round(out["chaos"]["wall_s"] / out["clean"]["wall_s"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
