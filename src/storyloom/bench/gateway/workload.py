"""One benchmark worker process: a gateway and many chapter-shaped flows per tenant.

The call pattern mirrors the chapter flow (director → plot → character ∥ scene → synthesis →
optimize ∥ quality) without importing `novel/`: `llm` must not depend on the application. Every
finished call is appended to a JSON-lines file (flushed twice a second, so a worker killed with -9
loses at most half a second of records), with the gateway's counters.

Run as `python -m storyloom.bench.gateway.workload '<json spec>'`.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from storyloom.errors import ProviderError
from storyloom.limits.state import BreakerPolicy
from storyloom.llm.deployments import Deployment, GatewayConfig
from storyloom.llm.gateway import Gateway
from storyloom.llm.types import CallMeta, ChatRequest

__all__ = ["AGENTS", "WorkerSpec", "run_worker", "spec_json"]

# (agent, max_tokens): the chapter flow's steps, in dependency order; tuples run in parallel.
AGENTS: tuple[tuple[tuple[str, int], ...], ...] = (
    (("director", 300),),
    (("plot", 400),),
    (("character", 300), ("scene", 400)),
    (("synthesis", 600),),
    (("optimize", 500), ("quality", 200)),
)

_PROMPT = (
    "You are a novelist's assistant. Outline: a lighthouse keeper finds a letter from the future "
    "that predicts a storm, a shipwreck and a stranger who knows her name. Characters: Mara, the "
    "keeper; Tomas, the ferryman; the stranger. Style: quiet, precise, salt and lamp-oil. "
)


@dataclass(slots=True, kw_only=True)
class WorkerSpec:
    index: int
    deployments: list[dict[str, Any]]  # Deployment fields
    limits_url: str
    duration_s: float
    out_path: str
    tenant_weights: dict[str, float]
    flows_per_tenant: int = 8
    high_flows: int = 1  # per tenant: priority 9, with think time between chapters
    low_flows: int = 3  # per tenant: priority 1; the rest priority 5
    lease_ttl_s: float = 5.0
    headroom: float = 0.02
    breaker_open_s: float = 2.0
    breaker_max_open_s: float = 8.0
    seed: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class _Recorder:
    def __init__(self, path: str, gateway: Gateway, index: int) -> None:
        self._file: TextIO = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._buf: list[str] = []
        self._gateway = gateway
        self._index = index

    def add(self, **rec: Any) -> None:
        self._buf.append(json.dumps(rec, separators=(",", ":")))

    def flush(self) -> None:
        counts = dict(self._gateway.counts)
        self._buf.append(json.dumps({"counts": counts, "worker": self._index, "t": time.time()}))
        self._file.write("\n".join(self._buf) + "\n")
        self._file.flush()
        self._buf.clear()

    def close(self) -> None:
        self.flush()
        self._file.close()


async def _call(
    gw: Gateway,
    rec: _Recorder,
    agent: str,
    max_tokens: int,
    tenant: str,
    priority: int,
    job: str,
    rng: random.Random,
) -> None:
    extra = " ".join(
        rng.choice(("storm", "lamp", "letter", "tide", "harbour")) for _ in range(rng.randint(5, 40))
    )
    request = ChatRequest(
        model=agent,
        messages=[{"role": "system", "content": _PROMPT}, {"role": "user", "content": f"{agent}: {extra}"}],
        max_tokens=max_tokens,
        temperature=0.8,
        meta=CallMeta(tenant=tenant, priority=priority, job_id=job, step=agent),
    )
    t0 = time.time()
    try:
        r = await gw.chat(request)
    except ProviderError as exc:
        rec.add(
            ok=False, tenant=tenant, prio=priority, agent=agent, t0=t0, t1=time.time(), err=type(exc).__name__
        )
        return
    rec.add(
        ok=True,
        tenant=tenant,
        prio=priority,
        agent=agent,
        t0=t0,
        t1=time.time(),
        wait=r.queue_wait_s,
        attempts=r.attempts,
        charged=r.usage.prompt_tokens + max_tokens,
        tokens=r.usage.total_tokens,
        dep=r.deployment,
    )


async def _flow(
    gw: Gateway, rec: _Recorder, tenant: str, priority: int, think_s: float, stop_at: float, seed: int
) -> None:
    rng = random.Random(seed)
    n = 0
    while time.monotonic() < stop_at:
        job = f"{tenant}-{seed}-{n}"
        n += 1
        for stage in AGENTS:
            if time.monotonic() >= stop_at:
                return
            await asyncio.gather(*[_call(gw, rec, a, mt, tenant, priority, job, rng) for a, mt in stage])
        if think_s:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * think_s)


async def run_worker(spec: WorkerSpec) -> None:
    deps = tuple(Deployment(**d) for d in spec.deployments)
    config = GatewayConfig(
        deployments=deps,
        default_model=deps[0].model,
        tenant_weights=spec.tenant_weights,
        limits_url=spec.limits_url,
        lease_ttl_s=spec.lease_ttl_s,
        headroom=spec.headroom,
        breaker=BreakerPolicy(open_s=spec.breaker_open_s, max_open_s=spec.breaker_max_open_s),
        backoff_base_s=0.2,
        max_attempts=6,
    )
    gw = Gateway(config)
    rec = _Recorder(spec.out_path, gw, spec.index)
    stop_at = time.monotonic() + spec.duration_s

    async def flusher() -> None:
        while True:
            await asyncio.sleep(0.5)
            rec.flush()

    flush_task = asyncio.create_task(flusher())
    flows = []
    for t_i, tenant in enumerate(spec.tenant_weights):
        for f in range(spec.flows_per_tenant):
            if f < spec.high_flows:
                prio, think = 9, 2.0
            elif f < spec.high_flows + spec.low_flows:
                prio, think = 1, 0.0
            else:
                prio, think = 5, 0.0
            seed = spec.seed * 100_000 + spec.index * 1000 + t_i * 100 + f
            flows.append(_flow(gw, rec, tenant, prio, think, stop_at, seed))
    try:
        await asyncio.gather(*flows)
    finally:
        flush_task.cancel()
        rec.close()
        await gw.aclose()


def spec_json(spec: WorkerSpec) -> str:
    return json.dumps(asdict(spec))


def main() -> None:
    spec = WorkerSpec(**json.loads(sys.argv[1]))
    asyncio.run(run_worker(spec))


if __name__ == "__main__":
    main()
