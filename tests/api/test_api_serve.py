"""`storyloom serve` as a real subprocess: bad flags, and a stop/restart in the middle of a run.

The restart test is the issue's proof: every accepted job completes, and an SSE client that
reconnects (to the restarted service) with Last-Event-ID receives every event exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from support.api_server import novel_input

pytestmark = pytest.mark.slow

# Each model call ~0.25 s, so a chapter job runs for several seconds: long enough to cut mid-run.
_SIM = {
    "seed": 7,
    "default": {"ttft_s": 0.05, "tokens_per_s": 800.0, "answer_tokens": 150},
    "chunk_interval_s": 0.02,
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "storyloom.cli", *args]


@contextmanager
def _serve(
    data_dir: Path, sim_config: Path, log: Path, *extra: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORYLOOM_", "PROMETHEUS_"))}
    with log.open("a") as err:
        proc = subprocess.Popen(
            _cli(
                "serve",
                "--port",
                "0",
                "--workers",
                "1..1",
                "--data-dir",
                str(data_dir),
                "--sim-config",
                str(sim_config),
                "--grace-s",
                "0.5",
                "--lease-s",
                "5",
                "--heartbeat-s",
                "1",
                *extra,
            ),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), f"serve did not start; see {log}"
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_bad_workers_flag_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    for bad in ("5..2", "0..3", "two", "1..99"):
        done = subprocess.run(
            _cli("serve", "--workers", bad, "--data-dir", str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: --workers") and "Traceback" not in done.stderr


async def _read_stream(
    client: httpx.AsyncClient, job_id: str, after: int | None, seen: list[int], stop_after: int | None = None
) -> bool:
    """Follow the job's SSE; True when its terminal event arrived, False when cut or stopped early."""
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    try:
        async with client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as r:
            assert r.status_code == 200
            data = ""
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    doc = json.loads(data)
                    seen.append(doc["seq"])
                    data = ""
                    if doc["kind"] in ("job.completed", "job.failed", "job.cancelled"):
                        return True
                    if stop_after is not None and len(seen) >= stop_after:
                        return False
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
        return False
    return False


async def _wait_finished(client: httpx.AsyncClient, job_id: str, *, timeout_s: float) -> str:
    for _ in range(int(timeout_s / 0.25)):
        status = str((await client.get(f"/api/novel/status/{job_id}")).json()["status"])
        if status in ("completed", "failed", "cancelled"):
            return status
        await asyncio.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s}s")


async def test_stop_and_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    sim_config = tmp_path / "sim.json"
    sim_config.write_text(json.dumps(_SIM))
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    job_ids: list[str] = []
    seen: list[int] = []

    with _serve(data_dir, sim_config, log) as (proc, url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for i in range(4):
                body = {
                    "novel_input": novel_input(f"chapter {i}"),
                    "versions": 2,
                    "idempotency_key": f"job-{i}",
                }
                r = await client.post("/api/novel/generate", json=body)
                assert r.status_code == 200
                job_ids.append(r.json()["task_id"])
            finished = await _read_stream(client, job_ids[0], None, seen, stop_after=12)
            assert not finished and len(seen) == 12
            # keep following while the service stops under us
            follower = asyncio.create_task(_read_stream(client, job_ids[0], seen[-1], seen))
            await asyncio.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0
            finished_before_stop = await follower

    with _serve(data_dir, sim_config, log) as (_, url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            # the same idempotency keys are the same jobs after the restart
            again = await client.post(
                "/api/novel/generate",
                json={"novel_input": novel_input("chapter 0"), "idempotency_key": "job-0"},
            )
            assert again.json()["task_id"] == job_ids[0]
            if not finished_before_stop:
                done = await _read_stream(client, job_ids[0], seen[-1], seen)
                assert done, "the reconnected stream did not reach the job's end"
            assert seen == list(range(1, len(seen) + 1)), "a gap or a duplicate in the events"
            for job_id in job_ids:
                status = await _wait_finished(client, job_id, timeout_s=120)
                assert status == "completed"
                result = (await client.get(f"/api/novel/result/{job_id}")).json()
                assert result["chapter_content"]
            whole = await client.get(f"/api/jobs/{job_ids[0]}/events")
            stored = [int(line[4:]) for line in whole.text.splitlines() if line.startswith("id: ")]
            assert stored == seen
            # the stop really cut running jobs: their worker handed them back, a new one resumed them
            released = 0
            for job_id in job_ids:
                text = (await client.get(f"/api/jobs/{job_id}/events")).text
                released += '"kind":"job.released"' in text
            assert released >= 1


async def test_route_tables_are_built_before_the_first_request(tmp_path: Path) -> None:
    """FastAPI builds them lazily; the lifespan's warm-up keeps that out of the first users' wait."""
    from fastapi import routing

    from support.api_server import serve_app

    async with serve_app(tmp_path) as api:
        built: list[str] = []
        original = routing._EffectiveRouteContext.from_api_route

        def counting(**kwargs: Any) -> Any:
            built.append(kwargs["original_route"].path)
            return original(**kwargs)

        routing._EffectiveRouteContext.from_api_route = counting  # type: ignore[assignment,method-assign]
        try:
            assert (await api.client.get("/api/jobs/nope/events")).status_code == 404
            assert (await api.client.post("/api/novel/generate", json={})).status_code == 422
        finally:
            routing._EffectiveRouteContext.from_api_route = original  # type: ignore[method-assign]
        assert built == []


def _api_children(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(proc.pid).children()
        if "storyloom.serve.api_child" in " ".join(child.cmdline())
    ]


async def _fresh_connection_gets(url: str, path: str, n: int) -> list[httpx.Response]:
    """`n` GETs, each on a new TCP connection (new source port: SO_REUSEPORT hashes it anew)."""
    out = []
    for _ in range(n):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            out.append(await client.get(path))
    return out


async def test_two_api_processes_share_the_port_and_one_that_is_killed_comes_back(tmp_path: Path) -> None:
    sim_config = tmp_path / "sim.json"
    sim_config.write_text(json.dumps(_SIM))
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    with _serve(data_dir, sim_config, log, "--api-processes", "2") as (proc, url):
        children = _api_children(proc)
        assert len(children) == 1
        parent = psutil.Process(proc.pid)
        workers = [c for c in parent.children() if " worker " in " ".join(c.cmdline())]
        assert workers and all(w.nice() == min(19, parent.nice() + 5) for w in workers)  # --worker-nice
        assert children[0].nice() == parent.nice()  # the API processes keep the parent's priority
        # every process answers health with the supervisor's count (the child reads the census)
        for r in await _fresh_connection_gets(url, "/api/health", 16):
            assert r.status_code == 200 and r.json()["workers"] == 1, r.text
        job_ids = []
        for i in range(3):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                body = {"novel_input": novel_input(f"chapter {i}"), "versions": 1}
                job_ids.append((await client.post("/api/novel/generate", json=body)).json()["task_id"])
        for job_id in job_ids:  # each stream on its own connection, so on either process
            seen: list[int] = []
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                assert await _read_stream(client, job_id, None, seen)
            assert seen == list(range(1, len(seen) + 1))

        children[0].kill()
        for _ in range(100):
            await asyncio.sleep(0.1)
            restarted = _api_children(proc)
            if restarted and restarted[0].pid != children[0].pid:
                break
        else:
            raise AssertionError("the killed API process was not restarted")
        for r in await _fresh_connection_gets(url, "/api/health", 16):
            assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        assert not restarted[0].is_running() or restarted[0].status() == psutil.STATUS_ZOMBIE
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    served_by = {line.get("api_process", 0) for line in lines if line.get("event") == "http.request"}
    assert served_by == {0, 1}, "both API processes should have answered requests"
    assert any(line.get("event") == "api_process_died" for line in lines)
    assert not list((data_dir / "run").glob("*.json")), "the census file is removed on stop"
