"""`storyloom sim` as a process: prints its URL first, answers, holds latency under hundreds of
concurrent streams, and stops cleanly on SIGTERM. The load is driven by raw asyncio sockets because
an httpx pool costs more CPU than the server at this concurrency and would measure itself."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

STREAMS = 300


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    config = tmp_path / "sim.yaml"
    config.write_text(
        "seed: 7\ndefault:\n  latency_s: 1.0\n  ttft_s: 0.1\n  answer_tokens: 300\nchunk_interval_s: 0.05\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "storyloom.cli",
            "sim",
            "--port",
            "0",
            "--config",
            str(config),
            "--rpm",
            "100000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


async def raw_stream(host: str, port: int, body: bytes) -> tuple[float, float, bytes]:
    """One streamed completion over a fresh connection: (seconds, seconds after the response
    headers, raw response). The headers leave at admission, so the second figure is the server's
    own pacing, free of the burst's connection queueing."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    data = bytearray()
    first = 0.0
    while chunk := await reader.read(65536):
        first = first or time.monotonic()
        data += chunk
    writer.close()
    end = time.monotonic()
    return end - start, end - first, bytes(data)


def test_cli_serves_and_holds_latency_under_load(sim_process: tuple[str, subprocess.Popen[str]]) -> None:
    url, proc = sim_process
    cfg = httpx.get(url.removesuffix("/v1") + "/sim/config").json()
    assert cfg["seed"] == 7 and cfg["quota"]["rpm"] == 100000 and cfg["default"]["latency_s"] == 1.0
    host, port = url.split("//")[1].split("/")[0].split(":")
    msgs = [{"role": "user", "content": "Characters: Alice, Bob. Alice runs to the pier."}]
    body = json.dumps({"model": "m", "messages": msgs, "stream": True}).encode()

    async def load() -> list[tuple[float, float, bytes]]:
        await raw_stream(host, int(port), body)  # warm up
        return await asyncio.gather(*(raw_stream(host, int(port), body) for _ in range(STREAMS)))

    results = asyncio.run(load())
    times = sorted(t for t, _, _ in results)
    paced = sorted(p for _, p, _ in results)
    assert all(b"data: [DONE]" in raw for _, _, raw in results)
    assert times[0] >= 0.99  # never early
    # Measured on 2 shared cores: paced p50 1.003 s, p99 1.02 s; the tolerance is for a busy machine.
    assert paced[len(paced) // 2] <= 1.2, paced[::30]
    # The whole burst connects at once: allow connection queueing, not drift.
    assert times[len(times) // 2] <= 2.5, times[::30]
    stats = httpx.get(url.removesuffix("/v1") + "/stats").json()
    assert stats["completed"] == STREAMS + 1 and stats["max_concurrency"] >= STREAMS // 2

    # A deliberate stream cut drops the connection without a traceback in the server's log.
    httpx.post(url.removesuffix("/v1") + "/sim/config", json={"faults": {"stream_cut": 1.0}})
    payload = {"model": "m", "messages": msgs, "stream": True}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{url}/chat/completions", json=payload) as r,
    ):
        r.read()

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read()


def test_cli_bad_flags_exit_2() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "storyloom.cli", "sim", "--mode", "sometimes"], capture_output=True, text=True
    )
    assert run.returncode == 2 and "--mode" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "storyloom.cli", "sim", "--config", "/nonexistent/sim.yaml"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "cannot read" in run.stderr
