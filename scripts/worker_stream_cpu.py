"""Worker-side CPU of model calls, without the rest of the service: N concurrent callers drive the
gateway (as a worker builds it) against `storyloom sim` at the service bench's pace, each delta going
through a DeltaCoalescer into a counting sink. Prints this process's CPU ms per model call.

    PYTHONPATH=src python scripts/worker_stream_cpu.py --concurrency 50 --calls 400
Attach py-spy to the pid it prints to see where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import time

import psutil

from storyloom import eventloop
from storyloom.config import Settings
from storyloom.flow.coalesce import DeltaCoalescer, DeltaPacing
from storyloom.flow.types import Event
from storyloom.llm.factory import build_client
from storyloom.llm.sse import read_pacing
from storyloom.llm.types import CallMeta, ChatRequest
from storyloom.serve.simulator import SimProcess


class _Sink:
    def __init__(self) -> None:
        self.events = 0

    def emit(self, event: Event) -> None:
        self.events += 1


def _connections() -> str:
    """The lean stream pools' connections opened against requests sent (keep-alive at work)."""
    from storyloom.llm import client as http_client

    pools = http_client._POOLS.get(asyncio.get_running_loop())
    lean = [p.lean for p in pools.by_url.values() if p.lean is not None] if pools else []
    return f"connects={sum(p.connects for p in lean)} requests={sum(p.requests for p in lean)}"


async def _main(args: argparse.Namespace, url: str) -> None:
    client = build_client(Settings(profile="sim"), sim_url=url)
    reads = read_pacing()
    if args.no_pace:  # the reference: every chunk read as it comes
        reads.min_interval_s = reads.max_interval_s = 1e-9
        reads.pause = lambda transport: None  # type: ignore[method-assign]
    if args.min_tick is not None:
        reads.min_interval_s = reads.max_interval_s = args.min_tick
    sink = _Sink()
    pacing = DeltaPacing()
    left = args.calls
    proc = psutil.Process()

    async def caller(i: int) -> None:
        nonlocal left
        coalescer = DeltaCoalescer(sink, f"run{i}", pacing)
        n = 0
        while left > 0:
            left -= 1
            n += 1
            path = f"step{n}"
            meta = CallMeta(job_id=f"job{i}", step=path, variant=n)
            messages = [{"role": "user", "content": f"caller {i} call {n}: write a scene"}]
            await client.chat(
                ChatRequest(model="sim", messages=messages, meta=meta), functools.partial(coalescer.add, path)
            )
            coalescer.finish(path)
        coalescer.close()

    # warm-up: one call per caller slot is not measured
    await client.chat(ChatRequest(model="sim", messages=[{"role": "user", "content": "warm"}]))
    t0 = proc.cpu_times()
    w0 = time.monotonic()
    await asyncio.gather(*(caller(i) for i in range(args.concurrency)))
    t1 = proc.cpu_times()
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    wall = time.monotonic() - w0
    print(
        f"calls={args.calls} concurrency={args.concurrency} cpu_s={cpu:.2f} wall_s={wall:.1f} "
        f"cpu_ms_per_call={cpu * 1000 / args.calls:.3f} delta_events={sink.events} "
        f"read_ticks={reads.ticks} load={os.getloadavg()[0]:.2f} {_connections()}"
    )
    await client.aclose()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--calls", type=int, default=400)
    p.add_argument("--min-tick", type=float, default=None, help="fix the read pacing's tick (s)")
    p.add_argument("--no-pace", action="store_true", help="read every chunk as it comes")
    p.add_argument("--answer-tokens", type=int, default=120, help="tokens per answer (1: the fixed cost)")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to sleep first (attach py-spy)")
    args = p.parse_args()
    sim_cfg = {
        "seed": 11,
        "default": {"ttft_s": 2.0, "tokens_per_s": 60.0, "answer_tokens": args.answer_tokens, "jitter": 0.3},
        "chunk_interval_s": 0.02,
    }
    with SimProcess(sim_cfg, nice=10) as sim:
        print(f"pid={os.getpid()} sim={sim.url}", flush=True)
        time.sleep(args.wait)
        eventloop.run(_main(args, sim.url))


if __name__ == "__main__":
    main()
