"""The gateway benchmark: a simulator process (count mode: over-quota admissions are recorded, not
refused), worker processes sharing limits through a SQLite file (or Redis), tenants 1:2:1.

Phase "saturation": every worker drives all tenants harder than the quota allows (TPM binds);
one worker is killed with SIGKILL half-way. Phase "breaker": two deployments, one of which answers
only 5xx for `outage_s`; we watch traffic leave it, the probes, and traffic coming back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storyloom.bench.gateway.analysis import jain, percentile, read_records
from storyloom.bench.gateway.workload import WorkerSpec, spec_json
from storyloom.errors import ConfigError
from storyloom.limits.base import LimitBackend
from storyloom.limits.state import BreakerPolicy, breaker_state, in_flight
from storyloom.serve.simulator import SimProcess

__all__ = [
    "BenchOptions",
    "SimProcess",
    "breaker_phase",
    "measure_acquire_cost",
    "run_gateway_bench",
    "saturation_phase",
]

TENANTS = {"alpha": 1.0, "beta": 2.0, "gamma": 1.0}


@dataclass(slots=True, kw_only=True)
class BenchOptions:
    duration_s: float = 150.0
    outage_s: float = 30.0
    workers: int = 3
    redis_url: str | None = None
    tokens_per_s: float = 7500.0  # the binding quota (TPM) as a rate
    requests_per_s: float = 25.0
    concurrency: int = 40
    window_s: float | None = None  # default: 60, or duration/3 for short runs
    lease_ttl_s: float = 5.0
    # burst capacity = headroom x quota; it must hold the largest call (prompt + max_tokens ~ 750),
    # or that call overshoots by the excess: small test quotas need a larger share
    headroom: float = 0.02
    kill: bool = True
    flows_per_tenant: int = 8


def _start_workers(specs: list[WorkerSpec]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-m", "storyloom.bench.gateway.workload", spec_json(s)])
        for s in specs
    ]


def _leases(limits_url: str, names: list[str]) -> dict[str, Any]:
    async def snap() -> dict[str, Any]:
        backend = LimitBackend.from_url(limits_url)
        try:
            return await backend.snapshot(names)
        finally:
            await backend.aclose()

    return asyncio.run(snap())


def run_gateway_bench(opts: BenchOptions) -> dict[str, Any]:
    if opts.workers < 2 and opts.kill:
        raise ConfigError("the kill scenario needs at least 2 workers (--workers).")
    work = Path(tempfile.mkdtemp(prefix="storyloom-bench-gateway-"))
    run = uuid.uuid4().hex[:6]
    window_s = opts.window_s or (60.0 if opts.duration_s >= 120 else max(3.0, opts.duration_s / 3.0))
    limits_url = opts.redis_url or f"sqlite:///{work / 'limits.db'}"
    rpm_w = int(opts.requests_per_s * window_s)
    tpm_w = int(opts.tokens_per_s * window_s)
    sim_cfg = {
        "seed": 7,
        "default": {"ttft_s": 0.1, "tokens_per_s": 600.0, "answer_tokens": 400},
        "quota": {"rpm": rpm_w, "tpm": tpm_w, "concurrency": opts.concurrency, "mode": "count"},
        "window_s": window_s,
        "chunk_interval_s": 0.05,
        "chunk_tokens": 16,
    }
    sim = SimProcess(sim_cfg)
    try:
        saturation = saturation_phase(opts, work, run, sim, window_s, limits_url, rpm_w, tpm_w)
        breaker = breaker_phase(opts, work, run, sim, window_s, limits_url, rpm_w, tpm_w)
    finally:
        sim.close()
    acquire_cost = {
        "memory": measure_acquire_cost("memory://"),
        "sqlite": measure_acquire_cost(f"sqlite:///{work / 'cost.db'}"),
    }
    if opts.redis_url:
        acquire_cost["redis"] = measure_acquire_cost(opts.redis_url)
    checks = {
        "goodput_ge_0.95": saturation["goodput_tokens_ratio"] >= 0.95,
        "rate_429_le_0.01": saturation["rate_429"] <= 0.01,
        "attempts_per_call_le_1.05": saturation["attempts_per_call"] <= 1.05,
        "overshoot_0": saturation["overshoot"]["over_quota_admitted"] == 0,
        "jain_ge_0.95": saturation["jain_goodput_per_weight"] >= 0.95,
        "no_priority_inversion": saturation["wait_p99_high_s"] < saturation["wait_p50_low_s"],
        "no_leaked_lease": saturation["kill"].get("victim_live_leases_after_ttl", 0) == 0
        and saturation["kill"].get("live_leases_after_run", 0) == 0,
        "breaker_moves_traffic": breaker["calls_to_failing_after_trip"] <= breaker["probes_allowed"],
        "breaker_probes_within_permitted": breaker["max_concurrent_probes_after_trip"]
        <= breaker["half_open_calls"],
        "breaker_traffic_returns": breaker["completed_on_recovered"] > 0,
    }
    return {
        "bench": "gateway",
        "limits_backend": "redis" if opts.redis_url else "sqlite",
        "workers": opts.workers,
        "tenant_weights": TENANTS,
        "window_s": window_s,
        "quota": {"rpm": rpm_w, "tpm": tpm_w, "concurrency": opts.concurrency, "per_window_s": window_s},
        "saturation": saturation,
        "breaker": breaker,
        "acquire_release_us": acquire_cost,
        "checks": checks,
        "pass": all(checks.values()),
    }


def _deployment(
    name: str, url: str, rpm: int | None, tpm: int | None, conc: int | None, window_s: float
) -> dict[str, Any]:
    return {
        "name": name,
        "model": "writer",
        "base_url": url,
        "provider_model": "writer",
        "rpm": rpm,
        "tpm": tpm,
        "max_concurrency": conc,
        "window_s": window_s,
        "ttft_timeout_s": 10.0,
        "total_timeout_s": 60.0,
    }


def saturation_phase(
    opts: BenchOptions,
    work: Path,
    run: str,
    sim: SimProcess,
    window_s: float,
    limits_url: str,
    rpm_w: int,
    tpm_w: int,
) -> dict[str, Any]:
    name = f"sim-a-{run}"
    dep = _deployment(name, sim.url, rpm_w, tpm_w, opts.concurrency, window_s)
    specs = [
        WorkerSpec(
            index=i,
            deployments=[dep],
            limits_url=limits_url,
            duration_s=opts.duration_s,
            out_path=str(work / f"sat-{i}.jsonl"),
            tenant_weights=TENANTS,
            flows_per_tenant=opts.flows_per_tenant,
            lease_ttl_s=opts.lease_ttl_s,
            headroom=opts.headroom,
        )
        for i in range(opts.workers)
    ]
    sim.reset()
    t_start = time.time()
    procs = _start_workers(specs)
    kill: dict[str, Any] = {"killed": False}
    try:
        if opts.kill:
            time.sleep(opts.duration_s / 2)
            victim = procs[-1]
            os.kill(victim.pid, signal.SIGKILL)
            t_kill = time.time()
            victim.wait()
            prefix = f"{victim.pid:x}."
            at_kill = _leases(limits_url, [name])[name]["leases"]
            kill = {
                "killed": True,
                "at_s": round(t_kill - t_start, 2),
                "victim_leases_at_kill": sum(1 for lid in at_kill if lid.startswith(prefix)),
                "lease_ttl_s": opts.lease_ttl_s,
            }
            # while the other workers keep running: are the dead worker's leases still counted?
            time.sleep(max(0.0, t_kill + opts.lease_ttl_s + 0.5 - time.time()))
            state = _leases(limits_url, [name])[name]
            now = time.time()
            kill["victim_live_leases_after_ttl"] = sum(
                1 for lid, exp in state["leases"].items() if lid.startswith(prefix) and exp > now
            )
        for p in procs:
            p.wait(timeout=opts.duration_s + 120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    t_end = time.time()
    if opts.kill:
        state = _leases(limits_url, [name])[name]
        kill["live_leases_after_run"] = in_flight(state, time.time())
    stats = sim.stats()
    records, counts = read_records(work / f"sat-{i}.jsonl" for i in range(opts.workers))
    ok = [r for r in records if r.get("ok")]
    lo, hi = t_start + 0.15 * opts.duration_s, t_start + 0.9 * opts.duration_s
    in_window = [r for r in ok if lo <= r["t0"] + r["wait"] <= hi]
    span = hi - lo
    charged = sum(r["charged"] for r in in_window)
    per_tenant = {t: sum(r["charged"] for r in in_window if r["tenant"] == t) for t in TENANTS}
    attempts = sum(c.get("attempts", 0) for c in counts)
    calls = sum(c.get("calls", 0) for c in counts)
    upstream = stats["requests"]
    rejected = stats["rejected_429_total"] + stats["window"]["over_quota_admitted"]
    # High: calls submitted while saturated. Low: every low-priority call, since under sustained
    # overload strict priority admits them only when the higher demand stops (they were submitted
    # before the window and never admitted inside it).
    high = [r["wait"] for r in ok if r["prio"] == 9 and lo <= r["t0"] <= hi]
    low = [r["wait"] for r in ok if r["prio"] == 1]
    return {
        "duration_s": round(t_end - t_start, 2),
        "logical_calls": calls,
        "failed_calls": sum(1 for r in records if not r.get("ok")),
        "upstream_attempts": upstream,
        "goodput_tokens_ratio": round(charged / (tpm_w / window_s * span), 4),
        "goodput_requests_ratio": round(len(in_window) / (rpm_w / window_s * span), 4),
        "binding_quota": "tpm",
        "rate_429": round(rejected / max(1, upstream), 5),
        "attempts_per_call": round(attempts / max(1, calls), 4),
        "overshoot": {
            "over_quota_admitted": stats["window"]["over_quota_admitted"],
            "max_window_requests": stats["max_window_requests"],
            "rpm_quota": rpm_w,
            "max_window_tokens": stats["max_window_tokens"],
            "tpm_quota": tpm_w,
            "max_concurrency": stats["max_concurrency"],
            "concurrency_quota": opts.concurrency,
        },
        "tenant_share": {t: round(v / max(1, charged), 4) for t, v in per_tenant.items()},
        "jain_goodput_per_weight": round(jain([per_tenant[t] / w for t, w in TENANTS.items()]), 4),
        "wait_p50_high_s": round(percentile(high, 50), 4),
        "wait_p99_high_s": round(percentile(high, 99), 4),
        "wait_p50_low_s": round(percentile(low, 50), 4),
        "wait_p99_low_s": round(percentile(low, 99), 4),
        "low_priority_calls_admitted": len(low),
        "kill": kill,
    }


def breaker_phase(
    opts: BenchOptions,
    work: Path,
    run: str,
    sim: SimProcess,
    window_s: float,
    limits_url: str,
    rpm_w: int,
    tpm_w: int,
) -> dict[str, Any]:
    """Deployment B answers only 5xx for outage_s; watch it empty, probe one at a time, and refill."""
    outage = opts.outage_s
    warm, recover = 8.0, max(6.0, outage / 2)  # warm: worker start-up (imports) + traffic on both
    bad = SimProcess({"seed": 8, "default": {"ttft_s": 0.1, "tokens_per_s": 600.0}, "chunk_tokens": 16})
    try:
        deps = [
            _deployment(f"sim-a-{run}", sim.url, rpm_w, tpm_w, opts.concurrency, window_s),
            _deployment(f"sim-b-{run}", bad.url, None, None, opts.concurrency, window_s),
        ]
        total = warm + outage + recover
        specs = [
            WorkerSpec(
                index=i,
                deployments=deps,
                limits_url=limits_url,
                duration_s=total,
                out_path=str(work / f"brk-{i}.jsonl"),
                tenant_weights=TENANTS,
                flows_per_tenant=2,
                high_flows=0,
                low_flows=0,
                lease_ttl_s=opts.lease_ttl_s,
            )
            for i in range(opts.workers)
        ]
        sim.reset()
        procs = _start_workers(specs)
        try:
            time.sleep(warm)
            before = bad.stats()["completed"]
            bad.configure({"faults": {"error_5xx": 1.0}})
            t_fail = time.time()
            time.sleep(min(3.0, outage / 3))  # time to trip (minimum_calls started, mostly failed)
            tripped_after = bad.stats()["requests"]
            bad.reset()
            # Probes in flight at once, seen in the shared state: leases held on B while not closed.
            max_probes, states_seen = 0, set()
            while time.time() < t_fail + outage:
                st = _leases(limits_url, [deps[1]["name"]])[deps[1]["name"]]
                now = time.time()
                states_seen.add(breaker_state(st, now))
                max_probes = max(max_probes, sum(1 for exp in st["leases"].values() if exp > now))
                time.sleep(0.05)
            during = bad.stats()
            bad.configure({"faults": {"error_5xx": 0.0}})
            bad.reset()
            for p in procs:
                p.wait(timeout=total + 60)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        after = bad.stats()
    finally:
        bad.close()
    records, _ = read_records(work / f"brk-{i}.jsonl" for i in range(opts.workers))
    probe_window = outage - min(3.0, outage / 3)
    # half_open_calls probes per open period at most; open periods are >= open_s (2 s): generous
    half_open = BreakerPolicy().half_open_calls  # the workers' policy: defaults but open_s
    probes_allowed = half_open * max(1, int(probe_window / specs[0].breaker_open_s) + 1)
    return {
        "outage_s": outage,
        "completed_on_b_before_outage": before,
        "requests_to_b_until_tripped": tripped_after,
        "calls_to_failing_after_trip": during["requests"],
        "probes_allowed": probes_allowed,
        "max_concurrent_probes_after_trip": max_probes,
        "half_open_calls": half_open,
        "breaker_states_seen": sorted(states_seen),
        "completed_on_recovered": after["completed"],
        "failed_logical_calls": sum(1 for r in records if not r.get("ok")),
        "logical_calls": len(records),
    }


def measure_acquire_cost(limits_url: str, n: int = 2000) -> float:
    """Microseconds for one acquire + release pair (one call's whole limits overhead), one process."""
    from storyloom.limits.state import Ask, Grant, Outcome

    async def loop() -> float:
        backend = LimitBackend.from_url(limits_url)
        ask = Ask(f"cost-{uuid.uuid4().hex[:6]}", 10**9, 10**12, 10**6)
        try:
            t0 = time.perf_counter()
            for _ in range(n):
                g = await backend.acquire([ask], 500, 30)
                assert isinstance(g, Grant)
                await backend.release(ask, g.lease_id, Outcome("ok", 500, 500))
            return (time.perf_counter() - t0) / n * 1e6
        finally:
            await backend.aclose()

    return round(asyncio.run(loop()), 1)
