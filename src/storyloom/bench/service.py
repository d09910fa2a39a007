"""The service benchmark: N concurrent clients against `storyloom serve` started as a subprocess.

Each client submits one chapter job and follows its SSE stream to the end (reconnecting with
Last-Event-ID if the connection drops), with `watchers_per_job` - 1 more clients on the same job's
stream (bench/clients.py). The clients run in this process or in `client_processes` processes of
their own (asyncio + aiohttp: httpx's pool costs CPU per request in proportion to its open
connections, and with 500 streams this client, not the server, was the bottleneck), the service in
others, so they share neither loop nor GIL.
Figures: completion ratio, end-to-end latency, delay from an event's creation (its `ts`) to its
arrival here (events created after the stream opened; older ones are replays, reported apart), and
where that delay builds up in the service, step commits per second (checkpoint rows in the
database), and resident memory per in-flight job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from storyloom import eventloop
from storyloom.bench.clients import _Client, drive_clients

__all__ = ["BenchConfig", "run_bench"]

_RAMP_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    clients: int = 500
    versions: int = 2
    workers: str = "2..2"
    api_processes: int = 1
    # How a client follows its job: "events" = POST /api/novel/generate, then GET
    # /api/jobs/{id}/events (what a browser's EventSource does); "stream" = one POST
    # /api/novel/generate/stream that submits and streams.
    follow: str = "events"
    worker_nice: int = 5  # the service's default
    concurrency: int = 400  # jobs at once per worker process
    lease_s: float = 15.0  # the service's own default: dead-worker detection time
    # A real provider's pace (DeepSeek streams about 60 tokens a second after a second or two) on
    # answers ten times shorter, so the run takes a minute or two on 2 cores. The old default,
    # 0.2 s and 1,000 tokens/s, squeezes the same work into 20 s and saturates the machine.
    ttft_s: float = 2.0
    tokens_per_s: float = 60.0
    answer_tokens: int = 120
    # A provider's latency varies from answer to answer (±30% here); identical jobs started together
    # then drift apart as they do in real use, instead of loading the service in lockstep.
    jitter: float = 0.3
    timeout_s: float = 900.0
    # The simulator stands for a provider on other machines: niced, it gets the CPU the service
    # leaves, instead of taking a quarter of it from the service under test. 0 = not niced.
    sim_nice: int = 10
    # After the API answers: time for the worker processes to boot (imports, database, warm-up)
    # before the clients start, so that the figures are those of a running service, not a cold one.
    settle_s: float = 3.0
    # SSE clients per job: the submitter and K-1 more that open the job's stream once it is
    # accepted (200 jobs x 10 = 2,000 streams); and the processes the clients are spread over.
    watchers_per_job: int = 1
    client_processes: int = 1


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _parts(root: psutil.Process) -> list[tuple[str, psutil.Process]]:
    """The service's processes, each named by its part: api (the serve process), workers, simulator."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    out: list[tuple[str, psutil.Process]] = []
    for proc in procs:
        try:
            cmd = " ".join(proc.cmdline()) + " "
        except psutil.Error:
            continue
        out.append(("simulator" if " sim " in cmd else "workers" if " worker " in cmd else "api", proc))
    return out


def _server_rss_mb(root: psutil.Process) -> tuple[float, float]:
    """(API + workers, simulator) resident memory in MiB."""
    server = sim = 0.0
    for part, proc in _parts(root):
        try:
            rss = proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
        if part == "simulator":
            sim += rss
        else:
            server += rss
    return server, sim


def _cpu_seconds(root: psutil.Process) -> dict[str, float]:
    """CPU time used so far by each part, and by the clients: this process and the client
    processes it has joined (the service, still running, is not among them)."""
    out = {"api": 0.0, "workers": 0.0, "simulator": 0.0}
    for part, proc in _parts(root):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out[part] += times.user + times.system
    own = psutil.Process().cpu_times()
    out["clients"] = own.user + own.system + own.children_user + own.children_system
    return {k: round(v, 1) for k, v in out.items()}


def _simulator_root(root: psutil.Process) -> str | None:
    """http://127.0.0.1:<port> of serve's simulator child, from its listening socket."""
    for part, proc in _parts(root):
        if part != "simulator":
            continue
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr:
                    return f"http://127.0.0.1:{conn.laddr.port}"
    return None


def _model_calls(root: psutil.Process) -> int | None:
    """Chat completions the simulator answered (its own count, not the service's claim)."""
    sim = _simulator_root(root)
    if sim is None:
        return None
    try:
        return int(httpx.get(f"{sim}/stats", timeout=10).json().get("requests", 0))
    except (httpx.HTTPError, ValueError):
        return None


def _cpu_per_model_call(cpu: dict[str, float], calls: int | None) -> dict[str, Any]:
    """CPU of the service under test (API + workers; the simulator and the clients excluded) during
    the run, per model call the simulator answered: what orchestration costs on top of the provider."""
    service_s = cpu["api"] + cpu["workers"]
    if not calls:
        return {"model_calls": calls, "service_cpu_s": round(service_s, 2), "cpu_ms_per_model_call": None}
    return {
        "model_calls": calls,
        "service_cpu_s": round(service_s, 2),
        "cpu_ms_per_model_call": round(service_s * 1000 / calls, 3),
        "api_cpu_ms_per_model_call": round(cpu["api"] * 1000 / calls, 3),
        "workers_cpu_ms_per_model_call": round(cpu["workers"] * 1000 / calls, 3),
    }


def _settle(url: str, cfg: BenchConfig) -> None:
    """Wait for the supervisor's workers (health answers 200), then `settle_s` for them to boot."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    time.sleep(cfg.settle_s)


def _renice_simulator(root: psutil.Process, nice: int) -> None:
    if nice <= 0:
        return
    for part, proc in _parts(root):
        if part == "simulator":
            with contextlib.suppress(psutil.Error):
                proc.nice(nice)


def _step_commits_per_s(db_path: Path) -> tuple[int, float]:
    """Checkpoint rows of chapter jobs and their rate over the span they were written in."""
    with sqlite3.connect(db_path) as conn:
        count, first, last = conn.execute(
            "SELECT count(*), min(c.created_at), max(c.created_at) FROM job_checkpoints c "
            "JOIN jobs j ON j.id = c.run_id WHERE j.kind = 'novel'"
        ).fetchone()
    span = (last or 0.0) - (first or 0.0)
    return int(count or 0), (count / span if span > 0 else 0.0)


def _profile(cfg: BenchConfig) -> dict[str, float]:
    return {"ttft_s": cfg.ttft_s, "tokens_per_s": cfg.tokens_per_s, "answer_tokens": cfg.answer_tokens}


def _start_service(cfg: BenchConfig, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    sim_config = workdir / "sim.json"
    sim_config.write_text(
        json.dumps(
            {
                "seed": 11,
                "default": {
                    "ttft_s": cfg.ttft_s,
                    "tokens_per_s": cfg.tokens_per_s,
                    "answer_tokens": cfg.answer_tokens,
                    "jitter": cfg.jitter,
                },
                "chunk_interval_s": 0.02,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORYLOOM_", "PROMETHEUS_"))}
    env["STORYLOOM_LOG_LEVEL"] = "WARNING"
    cmd = [
        sys.executable, "-m", "storyloom.cli", "serve", "--port", "0", "--workers", cfg.workers,
        "--data-dir", str(workdir / "data"), "--sim-config", str(sim_config),
        "--concurrency", str(cfg.concurrency), "--lease-s", str(cfg.lease_s),
        "--max-pending", str(max(10_000, cfg.clients * 2)), "--api-processes", str(cfg.api_processes),
        "--worker-nice", str(cfg.worker_nice),
    ]  # fmt: skip
    log = (workdir / "serve.log").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    log.close()
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"storyloom serve did not start; see {workdir / 'serve.log'}")
    return proc, url


async def _drive(cfg: BenchConfig, url: str, root: psutil.Process) -> dict[str, Any]:
    peak = {"inflight": 0, "server_mb": 0.0, "sim_mb": 0.0, "max_server_mb": 0.0}
    done = asyncio.Event()
    counter: list[Callable[[], int]] = [lambda: 0]

    async def sample() -> None:
        while not done.is_set():
            inflight = counter[0]()
            server_mb, sim_mb = await asyncio.to_thread(_server_rss_mb, root)
            peak["max_server_mb"] = max(peak["max_server_mb"], server_mb)
            if inflight >= peak["inflight"]:
                peak.update(inflight=inflight, server_mb=server_mb, sim_mb=sim_mb)
            await asyncio.sleep(0.5)

    started = time.time()
    sampler = asyncio.create_task(sample())
    try:
        per_job = await drive_clients(cfg, url, lambda count: counter.__setitem__(0, count))
    finally:
        done.set()
        await sampler
    wall = time.time() - started
    return _summary(cfg, per_job, started, wall, peak)


def _summary(
    cfg: BenchConfig, per_job: list[list[_Client]], started: float, wall: float, peak: dict[str, Any]
) -> dict[str, Any]:
    """Job figures from the submitters, stream figures (lags, exactly-once) from every client."""
    states = [job[0] for job in per_job]  # the submitters: one per job
    streams = [s for job in per_job for s in job]
    submitted = sum(1 for s in states if s.submitted_at)
    completed = sum(1 for s in states if s.status == "completed")
    e2e = [s.finished_at - s.submitted_at for s in states if s.finished_at is not None]
    accepted = [s.accepted_s for s in states if s.accepted_s is not None]
    stream_opened = [s.opened_s for s in streams if s.opened_s is not None]
    live_lags = [lag for s in streams for lag in s.lags_s]
    replay_lags = [lag for s in streams for lag in s.replay_lags_s]
    # The first seconds hold the burst of 500 submissions and job starts; the rest, the steady run.
    ramp_end = started + _RAMP_S
    timed = [(at, lag) for s in streams for at, lag in zip(s.lags_at, s.lags_s, strict=True)]
    ramp = [lag for at, lag in timed if at < ramp_end]
    steady = [lag for at, lag in timed if at >= ramp_end]
    exact_once = all(s.seqs == list(range(1, len(s.seqs) + 1)) for s in streams if s.status)
    streams_done = sum(1 for s in streams if s.status == "completed")
    inflight = max(1, int(peak["inflight"]))
    return {
        "clients": cfg.clients,
        "versions": cfg.versions,
        "workers": cfg.workers,
        "api_processes": cfg.api_processes,
        "follow": cfg.follow,
        "worker_nice": cfg.worker_nice,
        "watchers_per_job": cfg.watchers_per_job,
        "sse_clients": len(streams),
        "client_processes": cfg.client_processes,
        "submitted": submitted,
        "completed": completed,
        "completed_ratio": round(completed / submitted, 4) if submitted else 0.0,
        "streams_completed_ratio": round(streams_done / len(streams), 4) if streams else 0.0,
        "e2e_p50_s": round(_percentile(e2e, 0.5), 3),
        "e2e_p99_s": round(_percentile(e2e, 0.99), 3),
        "submit_p50_ms": round(_percentile(accepted, 0.5) * 1000, 1),
        "submit_p99_ms": round(_percentile(accepted, 0.99) * 1000, 1),
        "stream_open_p50_ms": round(_percentile(stream_opened, 0.5) * 1000, 1),
        "stream_open_p99_ms": round(_percentile(stream_opened, 0.99) * 1000, 1),
        "event_lag_p50_ms": round(_percentile(live_lags, 0.5) * 1000, 1),
        "event_lag_p99_ms": round(_percentile(live_lags, 0.99) * 1000, 1),
        f"event_lag_p99_ms_first_{_RAMP_S:.0f}s": round(_percentile(ramp, 0.99) * 1000, 1),
        f"event_lag_p99_ms_after_{_RAMP_S:.0f}s": round(_percentile(steady, 0.99) * 1000, 1),
        "events_received": len(live_lags) + len(replay_lags),
        "events_live": len(live_lags),
        "replay_wait_p99_ms": round(_percentile(replay_lags, 0.99) * 1000, 1),
        "events_exactly_once_in_order": exact_once,
        "reconnects": sum(s.reconnects for s in streams),
        "statuses": dict(Counter(s.status or "unfinished" for s in states)),
        "submit_errors": sum(1 for s in states if s.error),
        "first_submit_error": next((s.error for s in states if s.error), None),
        "peak_inflight_jobs": int(peak["inflight"]),
        "server_rss_mb_at_peak": round(peak["server_mb"], 1),
        "rss_mb_per_inflight_job": round(peak["server_mb"] / inflight, 3),
        "max_server_rss_mb": round(peak["max_server_mb"], 1),
        "simulator_rss_mb": round(peak["sim_mb"], 1),
        "wall_s": round(wall, 2),
        "lease_s": cfg.lease_s,
        "_not_completed": [s.job_id for s in states if s.job_id and s.status != "completed"],
    }


def _bucket_quantile_ms(metrics_text: str, name: str, q: float, label: str = "") -> float | None:
    """A quantile of one of the service's lag histograms, as its bucket's upper bound in ms."""
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket{{") and label in line:
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(value)  # summed over processes
    if not buckets:
        return None
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    for bound, count in ordered:
        if total and count >= q * total:
            return bound * 1000
    return None


def _server_lags(text: str) -> dict[str, float | None]:
    """Where the lag builds up: worker commit, the API's hub, the API's socket write (live events)."""
    out: dict[str, float | None] = {}
    for key, name, label in (
        ("commit", "storyloom_event_commit_lag_seconds", ""),
        ("hub", "storyloom_event_hub_lag_seconds", ""),
        ("sent", "storyloom_event_lag_seconds", 'replay="false"'),
    ):
        for q in (0.5, 0.99):
            out[f"server_{key}_lag_p{round(q * 100)}_ms_bucket"] = _bucket_quantile_ms(text, name, q, label)
    return out


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Start the service, drive it, stop it (SIGTERM), and return the figures."""
    with tempfile.TemporaryDirectory(prefix="storyloom-bench-service-") as tmp:
        workdir = Path(tmp)
        proc, url = _start_service(cfg, workdir)
        try:
            _renice_simulator(psutil.Process(proc.pid), cfg.sim_nice)
            _settle(url, cfg)
            cpu_at_start = _cpu_seconds(psutil.Process(proc.pid))
            calls_at_start = _model_calls(psutil.Process(proc.pid)) or 0
            result = eventloop.run(_drive(cfg, url, psutil.Process(proc.pid)))
            result["settle_s"] = cfg.settle_s
            text = httpx.get(f"{url}/metrics").text
            # creation -> the API's hub has it (worker, commit, poll); creation -> written to the socket
            result.update(_server_lags(text))
            result["cpu_s"] = _cpu_seconds(psutil.Process(proc.pid))
            # The run's own CPU: start-up (imports, migrations, warm-up) is not a model call's cost.
            run_cpu = {k: round(v - cpu_at_start[k], 1) for k, v in result["cpu_s"].items()}
            result["cpu_s_during_run"] = run_cpu
            calls = _model_calls(psutil.Process(proc.pid))
            result.update(_cpu_per_model_call(run_cpu, None if calls is None else calls - calls_at_start))
            failed = result.pop("_not_completed")[:3]
            result["not_completed_errors"] = [
                httpx.get(f"{url}/api/jobs/{job}").json().get("error") for job in failed
            ]
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        commits, rate = _step_commits_per_s(workdir / "data" / "storyloom.db")
        result["step_commits"] = commits
        result["step_commits_per_s"] = round(rate, 1)
        result["simulator"] = {
            "ttft_s": cfg.ttft_s,
            "tokens_per_s": cfg.tokens_per_s,
            "answer_tokens": cfg.answer_tokens,
            "jitter": cfg.jitter,
            "nice": cfg.sim_nice,
        }
        return result
