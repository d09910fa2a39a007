"""A key never appears in logs, errors, results or metrics: a real `serve` beyond loopback (so
authentication is on by default) with two API processes, a whole job and a project chapter done
with the key, bad requests carrying it; then every output of the run is searched for it.

Also: `--no-auth` beyond loopback is possible, but said loudly.
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

import httpx
import pytest

from support.api_server import novel_input

pytestmark = pytest.mark.slow

_SIM = {"seed": 3, "default": {"ttft_s": 0.01, "tokens_per_s": 4000.0, "answer_tokens": 80}}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "storyloom.cli", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STORYLOOM_", "PROMETHEUS_"))}


def _new_key(data_dir: Path, tenant: str, role: str = "member") -> str:
    done = subprocess.run(
        _cli("keys", "create", "--tenant", tenant, "--role", role, "--data-dir", str(data_dir)),
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def _serve(tmp_path: Path, data_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    sim = tmp_path / "sim.json"
    sim.write_text(json.dumps(_SIM))
    out, err = (tmp_path / "serve.out").open("w"), (tmp_path / "serve.err").open("w")
    proc = subprocess.Popen(
        _cli(
            "serve", "--host", "0.0.0.0", "--port", "0", "--workers", "1..1", "--data-dir", str(data_dir),
            "--sim-config", str(sim), "--grace-s", "0.5", "--heartbeat-s", "0.5", *extra,
        ),
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env=_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        out.write(first)
        assert first.startswith("http://"), (tmp_path / "serve.err").read_text()[-3000:]
        port = first.strip().rsplit(":", 1)[1]
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            out.write(proc.stdout.read())
            proc.stdout.close()
        out.close()
        err.close()


async def _follow(client: httpx.AsyncClient, job_id: str, headers: dict[str, str]) -> str:
    async with client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200
        text = ""
        async for chunk in r.aiter_text():
            text += chunk
        return text


async def _wait_done(url: str, path: str, headers: dict[str, str]) -> dict[str, object]:
    for _ in range(600):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            doc: dict[str, object] = (await client.get(path, headers=headers)).json()
        if doc.get("status") in ("completed", "failed", "cancelled"):
            return doc
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} did not finish")


async def test_a_key_appears_in_no_output_of_a_whole_run(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = _new_key(data_dir, "alice")
    admin = _new_key(data_dir, "ops", "admin")
    doomed = _new_key(data_dir, "alice")
    keys = (key, admin, doomed)
    seen: list[str] = []  # everything a client was sent back, errors included

    def record(r: httpx.Response) -> httpx.Response:
        seen.append(f"{r.status_code} {dict(r.headers)} {r.text}")
        return r

    alice = {"Authorization": f"Bearer {key}"}
    with _serve(tmp_path, data_dir, "--api-processes", "2") as (_, url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            assert record(await client.get("/api/projects")).status_code == 401  # on beyond loopback
            assert record(await client.get("/api/health")).status_code == 200

            body = {"novel_input": novel_input(), "versions": 1, "idempotency_key": "leak-1"}
            made = record(await client.post("/api/novel/generate", json=body, headers=alice))
            assert made.status_code == 200, made.text
            job_id = made.json()["task_id"]
            events = await _follow(client, job_id, alice)
            assert '"kind":"job.completed"' in events, events[-500:]
            seen.append(events)
            result = record(await client.get(f"/api/novel/result/{job_id}", headers=alice))
            assert result.json()["status"] == "completed" and result.json()["chapter_content"]
            record(await client.get(f"/api/jobs/{job_id}", headers=alice))

            project = record(await client.post("/api/projects", json={"title": "Leak"}, headers=alice)).json()
            chapter = record(
                await client.post(
                    f"/api/projects/{project['id']}/chapters",
                    json={"outline": "The ferry.", "versions": 2},
                    headers={**alice, "Idempotency-Key": "ch-1"},
                )
            ).json()
            chapter_job = chapter["job"]["id"]
            await _wait_done(url, f"/api/jobs/{chapter_job}", alice)
            cid = chapter["chapter"]["id"]
            versions = record(
                await client.get(f"/api/projects/{project['id']}/chapters/{cid}/versions", headers=alice)
            ).json()
            assert versions, "the chapter job stored no versions"
            chosen = await client.post(
                f"/api/projects/{project['id']}/chapters/{cid}/versions/{versions[0]['id']}/choose",
                headers=alice,
            )
            assert record(chosen).status_code == 200

            # bad requests, each carrying a key somewhere
            bad = [
                ("POST", "/api/novel/generate", {**alice, "content-type": "application/json"}, b"{not json"),
                ("POST", "/api/novel/generate", alice, json.dumps({"novel_input": {}}).encode()),
                ("GET", f"/api/jobs/{job_id}/events?after={key}", alice, None),
                ("GET", f"/api/jobs/{job_id}/events", {**alice, "Last-Event-ID": key}, None),
                ("GET", "/api/nowhere", alice, None),
                ("GET", "/api/jobs/nope", alice, None),
                ("GET", "/api/projects", {"Authorization": f"Basic {key}"}, None),
                ("GET", "/api/projects", {"Authorization": f"Bearer {key}x"}, None),
                ("GET", "/api/projects", {"Authorization": f"Bearer {key} {key}"}, None),
                ("GET", "/api/projects", {**alice, "X-Tenant": key}, None),
                ("GET", "/metrics", alice, None),
                ("POST", "/api/novel/generate", alice, b"x" * 2_000_000),
            ]
            for method, path, headers, content in bad:
                r = record(await client.request(method, path, headers=headers, content=content))
                assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)

            done = await asyncio.to_thread(
                subprocess.run,
                _cli("keys", "revoke", doomed, "--data-dir", str(data_dir)),  # by the whole key
                capture_output=True,
                text=True,
                timeout=120,
                env=_env(),
            )
            assert done.returncode == 0 and doomed not in done.stdout + done.stderr
            await asyncio.sleep(1.1)
        for _ in range(6):  # fresh connections: both API processes refuse it, and both serve metrics
            async with httpx.AsyncClient(base_url=url, timeout=30) as fresh:
                refused = record(
                    await fresh.get("/api/projects", headers={"Authorization": f"Bearer {doomed}"})
                )
                assert refused.status_code == 401
                metrics = record(await fresh.get("/metrics", headers={"Authorization": f"Bearer {admin}"}))
                assert metrics.status_code == 200 and "storyloom_llm_tokens" in metrics.text

    logs = (tmp_path / "serve.err").read_text() + (tmp_path / "serve.out").read_text()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "http.request"]
    assert {line.get("api_process", 0) for line in requests} == {0, 1}  # both processes were used
    assert any(line.get("tenant") == "alice" and line.get("key_id") for line in requests)
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "storyloom.db" for p in files)
    for secret in keys:
        assert secret not in logs, "a key in the logs"
        for text in seen:
            assert secret not in text, f"a key in an answer: {text[:300]}"
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"a key in {path}"


async def test_no_auth_beyond_loopback_works_and_warns(tmp_path: Path) -> None:
    with _serve(tmp_path, tmp_path / "data", "--no-auth") as (_, url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.get("/api/projects")).status_code == 200
    err = (tmp_path / "serve.err").read_text()
    assert "warning: serving on 0.0.0.0 without authentication (--no-auth)" in err
