"""Keeping the promises under crashes, provider chaos, restarts and time (`storyloom bench chaos`).

Every phase runs `storyloom serve` (the simulator in its own process) and the same N chapter jobs
(2 versions each), each followed by an SSE client that resumes with Last-Event-ID whenever its
connection drops, and checks that it saw every event of its job exactly once, in order:

- clean: the baseline (wall time, model calls the provider completed).
- crash: `kill -9` of a random worker process every `kill_every_s` for `kill_for_s`, then let it
  finish: every job must complete; model calls paid twice = completed calls beyond the clean run's,
  against the calls in flight at the kills (the provider's own count at each kill).
- chaos: the provider fails 10% with 5xx, 5% with 429, 2% hangs, 2% cut streams: every job
  completes within 1.5× the clean wall time; the breaker's open time is sampled from /metrics.
- restart: SIGTERM of the whole `serve` mid-run and a restart on the same data dir and port: every
  job completes and every client sees every event exactly once.
- soak: `soak_s` at a steady load (a fixed number of jobs always in flight): the resident memory of
  every process after warm-up grows at most 5%, and no job fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from storyloom import eventloop
from storyloom.bench.serve_process import ServeProcess

__all__ = ["ChaosConfig", "run_chaos_bench"]

_TERMINAL = ("job.completed", "job.failed", "job.cancelled")
CHAOS_FAULTS = {"error_5xx": 0.10, "error_429": 0.05, "hang": 0.02, "stream_cut": 0.02}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosConfig:
    jobs: int = 40
    versions: int = 2
    workers: int = 2
    ttft_s: float = 1.0
    tokens_per_s: float = 20.0  # a slow provider: a chapter job takes about a minute and a half
    target_length: int = 300
    kill_every_s: float = 10.0
    kill_for_s: float = 120.0
    soak_s: float = 1800.0
    soak_in_flight: int = 60
    soak_ttft_s: float = 0.5
    soak_tokens_per_s: float = 80.0
    phases: tuple[str, ...] = ("clean", "crash", "chaos", "restart", "soak")
    timeout_s: float = 1800.0
    seed: int = 17


@dataclass(slots=True)
class _Follower:
    job_id: str
    seqs: list[int] = field(default_factory=list)
    status: str | None = None
    reconnects: int = 0


def _input(i: int, cfg: ChaosConfig) -> dict[str, Any]:
    return {
        "novel_input": {
            "overall_outline": "A courier on the river carries a letter to the capital.",
            "chapter_outline": f"Chapter {i + 1}: the courier meets stranger number {i + 1} at the ferry.",
            "target_length": cfg.target_length,
            "language": "en",
        },
        "versions": cfg.versions,
        "max_parallel": cfg.versions,
    }


def _sim_file(workdir: Path, cfg: ChaosConfig, *, faults: dict[str, float] | None, soak: bool) -> Path:
    profile = {
        "ttft_s": cfg.soak_ttft_s if soak else cfg.ttft_s,
        "tokens_per_s": cfg.soak_tokens_per_s if soak else cfg.tokens_per_s,
        "jitter": 0.3,
    }
    doc: dict[str, Any] = {"seed": cfg.seed, "default": profile, "chunk_interval_s": 0.05}
    if faults:
        doc["faults"] = faults
        doc["hang_s"] = 600.0  # a hang is a hang: only our own deadlines end it
    path = workdir / f"sim-{'soak' if soak else 'run'}.json"
    path.write_text(json.dumps(doc))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(workdir: Path, cfg: ChaosConfig, sim: Path, *, port: int | None = None) -> ServeProcess:
    args = ["--workers", f"{cfg.workers}..{cfg.workers}", "--sim-config", str(sim), "--concurrency", "200"]
    args += ["--max-pending", "100000", "--grace-s", "5"]
    if port is not None:
        args = ["--port", str(port), *args]
    service = ServeProcess(workdir, args)
    time.sleep(3.0)  # the workers' start-up (imports, warm-up) is not what a phase measures
    return service


def _sim_stats(service: ServeProcess) -> dict[str, Any]:
    """The simulator's own counters (it is serve's child process, listening on loopback)."""
    root = service.simulator_root()
    if root is None:
        return {}
    doc: dict[str, Any] = httpx.get(f"{root}/stats", timeout=10).json()
    return doc


async def _follow(http: aiohttp.ClientSession, url_of: Callable[[], str], f: _Follower) -> None:
    """Follow one job's events to its terminal event, resuming after every drop."""
    while f.status is None:
        headers = {"Last-Event-ID": str(f.seqs[-1])} if f.seqs else {}
        try:
            async with http.get(f"{url_of()}/api/jobs/{f.job_id}/events", headers=headers) as r:
                if r.status == 204:
                    f.status = "ended"
                    return
                async for raw in r.content:
                    line = raw.decode().strip()
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        f.seqs.append(int(event["seq"]))
                        if event["kind"] in _TERMINAL:
                            f.status = event["kind"].removeprefix("job.")
                            return
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            pass
        f.reconnects += 1
        await asyncio.sleep(0.5)


def _exactly_once(followers: list[_Follower]) -> bool:
    return all(f.seqs == list(range(1, len(f.seqs) + 1)) for f in followers)


async def _submit_all(http: aiohttp.ClientSession, url: str, cfg: ChaosConfig, offset: int = 0) -> list[str]:
    async def one(i: int) -> str:
        async with http.post(f"{url}/api/novel/generate", json=_input(i, cfg)) as r:
            doc = await r.json()
            return str(doc["task_id"])

    return list(await asyncio.gather(*(one(offset + i) for i in range(cfg.jobs))))


def _breaker_open(service: ServeProcess) -> bool:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    return any(
        line.startswith("storyloom_llm_breaker_state") and not line.rstrip().endswith(" 0.0")
        for line in text.splitlines()
    )


async def _run_jobs(
    service_url: Callable[[], str],
    cfg: ChaosConfig,
    *,
    during: Callable[[], Any] | None = None,
) -> tuple[list[_Follower], float]:
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        started = time.monotonic()
        ids = await _submit_all(http, service_url(), cfg)
        followers = [_Follower(job_id) for job_id in ids]
        tasks = [asyncio.create_task(_follow(http, service_url, f)) for f in followers]
        side = asyncio.create_task(during()) if during is not None else None
        await asyncio.gather(*tasks)
        if side is not None:
            side.cancel()
            try:
                await side
            except asyncio.CancelledError:
                pass
        return followers, time.monotonic() - started


def _summary(followers: list[_Follower], wall: float) -> dict[str, Any]:
    completed = sum(1 for f in followers if f.status == "completed")
    return {
        "submitted": len(followers),
        "completed": completed,
        "completed_ratio": round(completed / len(followers), 4) if followers else 0.0,
        "wall_s": round(wall, 1),
        "events_exactly_once_in_order": _exactly_once(followers),
        "reconnects": sum(f.reconnects for f in followers),
        "statuses": sorted({str(f.status) for f in followers}),
    }


def _phase_clean(workdir: Path, cfg: ChaosConfig) -> dict[str, Any]:
    service = _serve(workdir / "clean", cfg, _sim_file(workdir, cfg, faults=None, soak=False))
    try:
        followers, wall = eventloop.run(_run_jobs(lambda: service.url, cfg))
        out = _summary(followers, wall)
        out["model_calls"] = int(_sim_stats(service).get("completed", 0))
    finally:
        service.stop()
    return out


def _phase_crash(workdir: Path, cfg: ChaosConfig) -> dict[str, Any]:
    service = _serve(workdir / "crash", cfg, _sim_file(workdir, cfg, faults=None, soak=False))
    kills: list[dict[str, Any]] = []
    rng = random.Random(cfg.seed)

    async def killer() -> None:
        deadline = time.monotonic() + cfg.kill_for_s
        while time.monotonic() < deadline:
            await asyncio.sleep(cfg.kill_every_s)
            pids = service.pids("workers")
            if not pids:
                continue
            in_flight = int((await asyncio.to_thread(_sim_stats, service)).get("in_flight", 0))
            victim = rng.choice(pids)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
            kills.append({"pid": victim, "provider_calls_in_flight": in_flight})

    try:
        followers, wall = eventloop.run(_run_jobs(lambda: service.url, cfg, during=killer))
        out = _summary(followers, wall)
        out["model_calls"] = int(_sim_stats(service).get("completed", 0))
        out["kills"] = len(kills)
        out["provider_calls_in_flight_at_kills"] = sum(k["provider_calls_in_flight"] for k in kills)
        failed = [f.job_id for f in followers if f.status != "completed"][:3]
        out["failed_errors"] = [httpx.get(f"{service.url}/api/jobs/{j}").json().get("error") for j in failed]
    finally:
        service.stop()
    return out


def _phase_chaos(workdir: Path, cfg: ChaosConfig) -> dict[str, Any]:
    service = _serve(workdir / "chaos", cfg, _sim_file(workdir, cfg, faults=CHAOS_FAULTS, soak=False))
    samples: list[bool] = []

    async def sampler() -> None:
        while True:
            samples.append(await asyncio.to_thread(_breaker_open, service))
            await asyncio.sleep(1.0)

    try:
        followers, wall = eventloop.run(_run_jobs(lambda: service.url, cfg, during=sampler))
        out = _summary(followers, wall)
        stats = _sim_stats(service)
        out["faults_injected"] = stats.get("faults", {})
        out["breaker_open_samples"] = sum(samples)
        out["breaker_samples"] = len(samples)
    finally:
        service.stop()
    return out


def _phase_restart(workdir: Path, cfg: ChaosConfig, restart_after_s: float) -> dict[str, Any]:
    home = workdir / "restart"
    sim = _sim_file(workdir, cfg, faults=None, soak=False)
    port = _free_port()
    holder: dict[str, ServeProcess] = {"service": _serve(home, cfg, sim, port=port)}
    timeline: dict[str, float] = {}

    async def restarter() -> None:
        await asyncio.sleep(restart_after_s)  # mid-run: every job has started, none has finished
        timeline["stopped_at_s"] = time.monotonic()
        await asyncio.to_thread(holder["service"].stop)
        holder["service"] = await asyncio.to_thread(_serve, home, cfg, sim, port=port)
        timeline["back_after_s"] = round(time.monotonic() - timeline["stopped_at_s"], 1)

    try:
        followers, wall = eventloop.run(_run_jobs(lambda: f"http://127.0.0.1:{port}", cfg, during=restarter))
        out = _summary(followers, wall)
        out["restart_took_s"] = timeline.get("back_after_s")
    finally:
        holder["service"].stop()
    return out


def _phase_soak(workdir: Path, cfg: ChaosConfig) -> dict[str, Any]:
    service = _serve(workdir / "soak", cfg, _sim_file(workdir, cfg, faults=None, soak=True))
    rss: list[tuple[float, dict[str, float]]] = []
    finished: dict[str, int] = {"completed": 0, "failed": 0}

    async def keep_loaded() -> None:
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s, sock_read=300)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            started = time.monotonic()
            counter = 0

            async def one() -> None:
                nonlocal counter
                while time.monotonic() - started < cfg.soak_s:
                    counter += 1
                    async with http.post(f"{service.url}/api/novel/generate", json=_input(counter, cfg)) as r:
                        job_id = (await r.json())["task_id"]
                    follower = _Follower(job_id)
                    await _follow(http, lambda: service.url, follower)
                    finished["completed" if follower.status == "completed" else "failed"] += 1

            async def sample() -> None:
                while True:
                    rss.append((time.monotonic() - started, service.rss_mb()))
                    await asyncio.sleep(30.0)

            sampler = asyncio.create_task(sample())
            await asyncio.gather(*(one() for _ in range(cfg.soak_in_flight)))
            sampler.cancel()

    try:
        eventloop.run(keep_loaded())
        disk_mb = sum(p.stat().st_size for p in (workdir / "soak" / "data").rglob("*") if p.is_file()) / 1e6
    finally:
        service.stop()
    warm = [(t, s) for t, s in rss if t >= min(300.0, cfg.soak_s / 6)]
    growth: dict[str, float] = {}
    if len(warm) >= 2:
        first, last = warm[0][1], warm[-1][1]
        growth = {part: round((last[part] - first[part]) / first[part], 4) for part in first if part in last}
    return {
        "seconds": cfg.soak_s,
        "jobs_in_flight": cfg.soak_in_flight,
        "completed": finished["completed"],
        "failed": finished["failed"],
        "rss_mb_first_after_warmup": {k: round(v, 1) for k, v in (warm[0][1] if warm else {}).items()},
        "rss_mb_last": {k: round(v, 1) for k, v in (warm[-1][1] if warm else {}).items()},
        "rss_growth_after_warmup": growth,
        "data_dir_mb": round(disk_mb, 1),
    }


_PHASES: dict[str, Callable[[Path, ChaosConfig], dict[str, Any]]] = {
    "clean": _phase_clean,
    "crash": _phase_crash,
    "chaos": _phase_chaos,
    "soak": _phase_soak,
}


def run_chaos_bench(cfg: ChaosConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"jobs": cfg.jobs, "versions": cfg.versions, "workers": cfg.workers}
    out["provider"] = {"ttft_s": cfg.ttft_s, "tokens_per_s": cfg.tokens_per_s, "jitter": 0.3}
    with tempfile.TemporaryDirectory(prefix="storyloom-bench-chaos-") as tmp:
        workdir = Path(tmp)
        for name in ("clean", "crash", "chaos", "restart", "soak"):
            if name not in cfg.phases:
                continue
            (workdir / name).mkdir()
            if name == "restart":
                # Stop the service 40% into a run (as long as the clean one took, else 30 s).
                clean_wall = float(out.get("clean", {}).get("wall_s", 75.0))
                out[name] = _phase_restart(workdir, cfg, max(3.0, 0.4 * clean_wall))
            else:
                out[name] = _PHASES[name](workdir, cfg)
    checks: dict[str, bool] = {}
    clean = out.get("clean")
    if "crash" in out:
        crash = out["crash"]
        checks["crash_all_completed"] = crash["completed_ratio"] == 1.0
        if clean is not None:
            crash["model_calls_paid_twice"] = crash["model_calls"] - clean["model_calls"]
            checks["crash_paid_twice_within_in_flight"] = (
                crash["model_calls_paid_twice"] <= crash["provider_calls_in_flight_at_kills"]
            )
    if "chaos" in out:
        chaos = out["chaos"]
        checks["chaos_all_completed"] = chaos["completed_ratio"] == 1.0
        if clean is not None:
            chaos["wall_over_clean"] = round(chaos["wall_s"] / clean["wall_s"], 3)
            checks["chaos_within_1_5x_clean"] = chaos["wall_over_clean"] <= 1.5
    if "restart" in out:
        restart = out["restart"]
        checks["restart_all_completed"] = restart["completed_ratio"] == 1.0
        checks["restart_events_exactly_once"] = restart["events_exactly_once_in_order"]
    if "soak" in out:
        soak = out["soak"]
        checks["soak_no_failures"] = soak["failed"] == 0
        checks["soak_rss_flat"] = bool(soak["rss_growth_after_warmup"]) and all(
            g <= 0.05 for g in soak["rss_growth_after_warmup"].values()
        )
    for name in ("clean", "crash", "chaos", "restart"):
        if name in out:
            checks[f"{name}_events_exactly_once"] = out[name]["events_exactly_once_in_order"]
    out["checks"] = checks
    out["pass"] = all(checks.values())
    return out
