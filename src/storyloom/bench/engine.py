"""The engine benchmark: the chapter-shaped DAG with the model call replaced in-process.

director → plot → (character ∥ scene) → synthesis → (optimize ∥ quality), seven steps, critical
path five calls. Each measurement runs the engine and a hand-written asyncio version of the same
DAG in the same process invocation, so the ratio survives a noisy machine.

The concurrent phase runs in a fresh interpreter per implementation (`python -m
storyloom.bench.engine`), because RSS never shrinks: a fresh process makes "peak RSS minus RSS
before the runs" mean the memory the runs themselves needed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from storyloom.flow import StepContext, run_flow
from storyloom.flow.graph import Flow
from storyloom.flow.memory import MemoryCheckpoints
from storyloom.flow.types import Event

__all__ = [
    "STEPS_PER_RUN",
    "Impl",
    "chapter_flow",
    "measure_concurrent",
    "measure_cpu",
    "run_concurrent_child",
]

Call = Callable[[str], Awaitable[Any]]
Impl = Literal["bare", "engine"]
STEPS_PER_RUN = 7
_RESULT: dict[str, Any] = {"text": "ok"}


class CountingSink:
    """Counts events without keeping them: what a streaming consumer costs at minimum."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def emit(self, event: Event) -> None:
        self.count += 1


def chapter_flow(call: Call) -> Flow:
    """The chapter DAG; every step is one `call(step name)`."""

    async def step(ctx: StepContext) -> Any:
        return await call(ctx.name)

    flow = Flow("chapter-bench")
    flow.add("director", step)
    flow.add("plot", step, after=("director",))
    flow.add("character", step, after=("plot",))
    flow.add("scene", step, after=("plot",))
    flow.add("synthesis", step, after=("character", "scene"))
    flow.add("optimize", step, after=("synthesis",))
    flow.add("quality", step, after=("synthesis",))
    return flow


async def bare_chapter(call: Call) -> dict[str, Any]:
    """The same DAG written by hand with await and gather: the floor the engine is compared to."""
    director = await call("director")
    plot = await call("plot")
    character, scene = await asyncio.gather(call("character"), call("scene"))
    synthesis = await call("synthesis")
    optimize, quality = await asyncio.gather(call("optimize"), call("quality"))
    return {
        "director": director,
        "plot": plot,
        "character": character,
        "scene": scene,
        "synthesis": synthesis,
        "optimize": optimize,
        "quality": quality,
    }


async def _noop(name: str) -> Any:
    return _RESULT


def _sleeper(sleep_s: float) -> Call:
    async def call(name: str) -> Any:
        await asyncio.sleep(sleep_s)
        return _RESULT

    return call


async def _run_batch(mode: str, call: Call, flow: Flow, n: int, first_id: int) -> int:
    """Run n chapters at once; return how many produced all seven results."""
    if mode == "bare":
        results = await asyncio.gather(*(bare_chapter(call) for _ in range(n)))
        return sum(len(r) == STEPS_PER_RUN for r in results)
    sink: Any = CountingSink() if mode in ("events", "checkpoints") else None
    checkpoints = MemoryCheckpoints() if mode == "checkpoints" else None
    runs = await asyncio.gather(
        *(
            run_flow(flow, None, run_id=str(first_id + k), sink=sink, checkpoints=checkpoints)
            for k in range(n)
        )
    )
    return sum(len(r.outputs) == STEPS_PER_RUN for r in runs)


def measure_cpu(*, runs: int, batch: int, repeats: int) -> dict[str, Any]:
    """CPU microseconds per step with a no-op call, best of `repeats`, for each mode."""
    flow = chapter_flow(_noop)
    modes = ("bare", "events", "no_events", "checkpoints")
    best: dict[str, float] = {}

    async def one(mode: str) -> float:
        done = 0
        gc.collect()
        cpu0 = time.process_time()
        for first in range(0, runs, batch):
            done += await _run_batch(mode, _noop, flow, min(batch, runs - first), first)
        cpu = time.process_time() - cpu0
        if done != runs:
            raise RuntimeError(f"{mode}: only {done} of {runs} runs completed")
        return cpu * 1e6 / (runs * STEPS_PER_RUN)

    async def all_modes() -> None:
        for _ in range(repeats):
            for mode in modes:  # interleaved, so a noisy neighbour hits every mode alike
                us = await one(mode)
                best[mode] = min(us, best.get(mode, us))

    asyncio.run(all_modes())
    per_step = {m: round(v, 2) for m, v in best.items()}
    return {
        "runs": runs,
        "batch": batch,
        "repeats": repeats,
        "us_per_step": per_step,
        "engine_events_over_bare": round(best["events"] / best["bare"], 2),
    }


def run_concurrent_child(impl: Impl, runs: int, sleep_s: float) -> dict[str, Any]:
    """Run `runs` chapters at once in this (fresh) process; wall time and RSS growth per run."""
    call = _sleeper(sleep_s)
    flow = chapter_flow(call)
    gc.collect()
    rss_before = _rss_bytes()
    events = CountingSink()

    async def main() -> int:
        if impl == "bare":
            results = await asyncio.gather(*(bare_chapter(call) for _ in range(runs)))
            return sum(len(r) == STEPS_PER_RUN for r in results)
        done = await asyncio.gather(*(run_flow(flow, None, run_id=str(k), sink=events) for k in range(runs)))
        return sum(len(r.outputs) == STEPS_PER_RUN for r in done)

    started = time.perf_counter()
    cpu_started = time.process_time()
    completed = asyncio.run(main())
    wall_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    peak = _peak_rss_bytes()
    return {
        "impl": impl,
        "runs": runs,
        "completed": completed,
        "sleep_s": sleep_s,
        "critical_path_s": 5 * sleep_s,
        "wall_s": round(wall_s, 3),
        "runs_per_s": round(runs / wall_s, 1),
        "cpu_s": round(cpu_s, 3),  # less noisy than wall on a shared machine
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_kb_per_run": round(max(0, peak - rss_before) / 1024 / runs, 2),
        "events": events.count,
    }


def measure_concurrent(*, runs: int, sleep_s: float) -> dict[str, Any]:
    """Both implementations, each in a fresh interpreter, one after the other."""
    results: dict[str, Any] = {}
    for impl in ("bare", "engine"):
        proc = subprocess.run(
            [sys.executable, "-m", "storyloom.bench.engine", impl, str(runs), str(sleep_s)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark child {impl} failed: {proc.stderr.strip()[-500:]}")
        results[impl] = json.loads(proc.stdout)
    bare, engine = results["bare"], results["engine"]
    results["engine_over_bare"] = {
        "wall": round(engine["wall_s"] / bare["wall_s"], 3),
        "rss_per_run": round(engine["rss_kb_per_run"] / bare["rss_kb_per_run"], 2)
        if bare["rss_kb_per_run"]
        else None,
    }
    return results


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _peak_rss_bytes() -> int:
    """VmHWM: the process's peak RSS. Not ru_maxrss, which Linux carries over from the parent
    across fork+exec and so would report the benchmark driver's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _main() -> None:
    parser = argparse.ArgumentParser(description="one concurrent phase of `storyloom bench engine`")
    parser.add_argument("impl", choices=["bare", "engine"])
    parser.add_argument("runs", type=int)
    parser.add_argument("sleep_s", type=float)
    args = parser.parse_args()
    print(json.dumps(run_concurrent_child(args.impl, args.runs, args.sleep_s)))


if __name__ == "__main__":
    _main()
