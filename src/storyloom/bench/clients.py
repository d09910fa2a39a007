"""The clients of `bench service`: submit chapter jobs, follow their SSE streams, record arrivals.

One job has one submitter and, with `watchers_per_job` K > 1, K-1 more clients that open the same
job's event stream as soon as it is accepted (200 jobs x 10 watchers = 2,000 EventSource-like
clients, each its own connection). A stream that drops is resumed with Last-Event-ID.

The clients must not be the bottleneck of what they measure: frames are split on blank lines and
only `id:`, `event:` and the top-level `"ts":` are read from them (no JSON parse per frame, which at
2,000 streams cost this process more than the API spent sending), and `client_processes` P > 1
spreads the jobs over P processes of their own (spawned, each with its own loop and GIL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from storyloom import eventloop

if TYPE_CHECKING:
    from storyloom.bench.service import BenchConfig

__all__ = ["drive_clients", "parse_frame"]

_TERMINAL = ("job.completed", "job.failed", "job.cancelled")
_TS = b'"ts":'


@dataclass(slots=True)
class _Client:
    """One SSE client: a job's submitter (`watcher` 0) or one of its other watchers."""

    submitted_at: float = 0.0
    accepted_s: float | None = None  # from the first POST to the answer that accepted the job
    opened_s: float | None = None  # from the first GET of the events to the stream's headers
    finished_at: float | None = None
    status: str | None = None
    seqs: list[int] = field(default_factory=list)
    lags_s: list[float] = field(default_factory=list)  # events created after the stream opened
    lags_at: list[float] = field(default_factory=list)  # when each of those arrived (time.time())
    replay_lags_s: list[float] = field(default_factory=list)  # older ones: from opening to arrival
    reconnects: int = 0
    error: str | None = None
    job_id: str = ""
    job: int = 0  # the job's index in the run
    watcher: int = 0  # 0: the client that submitted it


def _input(i: int) -> dict[str, Any]:
    return {
        "overall_outline": "A courier on the river learns the sword and carries a letter to the capital.",
        "chapter_outline": f"Chapter {i + 1}: the courier meets stranger number {i + 1} at the ferry.",
        "genre": "wuxia",
        "characters": [{"name": "Lin", "role": "courier"}, {"name": "Old Wei", "role": "swordsman"}],
        "style": "terse",
        "target_length": 400,
        "language": "en",
    }


def parse_frame(frame: bytes) -> tuple[int, str, float] | None:
    """(seq, kind, ts) of one SSE frame (without its blank line), None for a comment or a frame
    without an id. Reads the fields and the document's top-level `"ts":` (the API writes `seq`,
    `kind`, `step`, `ts` before `data`, and a `"` inside a string is escaped, so the first `"ts":`
    is the top-level one); a frame laid out otherwise is parsed as JSON."""
    if not frame.startswith(b"id: "):
        return None
    end = frame.find(b"\n")
    seq = int(frame[4:end])
    start = frame.find(b"\nevent: ", end - 1)
    kind = ""
    if start >= 0:
        stop = frame.find(b"\n", start + 8)
        kind = frame[start + 8 : stop].decode()
    data = frame.find(b"\ndata: ")
    at = frame.find(_TS, data)
    if at < 0 or not kind:
        doc = json.loads(frame[data + 7 :])
        return int(doc["seq"]), str(doc["kind"]), float(doc["ts"])
    stop = at + 5
    while frame[stop] not in b",}":
        stop += 1
    return seq, kind, float(frame[at + 5 : stop])


async def _read_events(r: aiohttp.ClientResponse, state: _Client, opened: float) -> None:
    """Record each event's arrival until the terminal one or the end of the body."""
    if r.status != 200:
        return
    buffer = b""
    async for chunk in r.content.iter_any():
        buffer += chunk
        *frames, buffer = buffer.split(b"\n\n")
        now = time.time()
        for frame in frames:
            parsed = parse_frame(frame)
            if parsed is None:
                continue  # a heartbeat comment, or the stream's unnumbered greeting
            seq, kind, ts = parsed
            state.seqs.append(seq)
            if ts >= opened:
                state.lags_s.append(now - ts)
                state.lags_at.append(now)
            else:  # it existed before we asked: its wait is the server's replay time
                state.replay_lags_s.append(now - opened)
            if kind in _TERMINAL:
                state.status = kind.removeprefix("job.")
                state.finished_at = now
                return


async def _submit(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, str, str]:
    async with http.post(f"{url}/api/novel/generate", json=body) as r:
        return r.status, await r.text(), r.headers.get("retry-after", "1")


async def _submit_until_accepted(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], state: _Client
) -> None:
    """POST /api/novel/generate (the browser's way: the caller then GETs the job's events)."""
    for attempt in range(50):
        try:
            status, text, retry_after = await _submit(http, url, body)
        except (aiohttp.ClientError, TimeoutError) as exc:  # the same idempotency key makes a retry safe
            state.error = f"submit failed: {type(exc).__name__} (attempt {attempt + 1})"
            await asyncio.sleep(1.0)
            continue
        if status == 200:
            state.job_id = json.loads(text)["task_id"]
            state.accepted_s = time.time() - state.submitted_at
            return
        state.error = f"submit answered {status}: {text[:200]} (attempt {attempt + 1})"
        if status not in (429, 503):
            return
        await asyncio.sleep(float(retry_after))


async def _submit_and_follow(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    state: _Client,
    on_accepted: Callable[[], None] | None = None,
) -> None:
    """POST /api/novel/generate/stream: one request submits and streams, so no event of the job
    exists before its stream does, and every event counts as live. `on_accepted`: called once the
    job has its id (its other watchers may open their streams)."""
    for attempt in range(50):
        opened = time.time()
        try:
            async with http.post(f"{url}/api/novel/generate/stream", json=body) as r:
                if r.status == 200:
                    state.job_id = r.headers["X-Task-Id"]
                    state.accepted_s = state.opened_s = time.time() - opened
                    if on_accepted is not None:
                        on_accepted()
                    await _read_events(r, state, opened)
                    return
                state.error = f"submit answered {r.status}: {(await r.text())[:200]} (attempt {attempt + 1})"
                if r.status not in (429, 503):
                    return
                retry_after = float(r.headers.get("retry-after", "1"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            if state.job_id:
                return  # accepted, then cut: the caller resumes with Last-Event-ID
            state.error = f"submit failed: {type(exc).__name__} (attempt {attempt + 1})"
            retry_after = 1.0
        await asyncio.sleep(retry_after)


async def _follow(http: aiohttp.ClientSession, url: str, state: _Client, *, resuming: bool) -> None:
    """GET the job's events until its terminal one, resuming with Last-Event-ID after a cut."""
    while state.job_id and state.status is None:
        if resuming:
            state.reconnects += 1
            await asyncio.sleep(0.2)
        resuming = True
        headers = {"Last-Event-ID": str(state.seqs[-1])} if state.seqs else {}
        opened = time.time()
        try:
            async with http.get(f"{url}/api/jobs/{state.job_id}/events", headers=headers) as r:
                if state.opened_s is None:
                    state.opened_s = time.time() - opened
                await _read_events(r, state, opened)
        except (aiohttp.ClientError, TimeoutError):
            pass


async def _one_job(
    http: aiohttp.ClientSession, url: str, i: int, cfg: BenchConfig, states: Sequence[_Client]
) -> None:
    """The submitter of job `i`, and its other watchers once the job is accepted."""
    submitter, watchers = states[0], states[1:]
    accepted = asyncio.Event()

    async def submit() -> None:
        try:
            body = {"novel_input": _input(i), "versions": cfg.versions, "idempotency_key": f"bench-{i}"}
            submitter.submitted_at = time.time()
            if cfg.follow == "stream":
                await _submit_and_follow(http, url, body, submitter, accepted.set)
            else:
                await _submit_until_accepted(http, url, body, submitter)
                accepted.set()
            await _follow(http, url, submitter, resuming=cfg.follow == "stream")
        finally:
            accepted.set()

    async def watch(state: _Client) -> None:
        await accepted.wait()
        state.job_id, state.submitted_at = submitter.job_id, time.time()
        await _follow(http, url, state, resuming=False)

    await asyncio.gather(submit(), *(watch(s) for s in watchers))


def _new_states(jobs: Sequence[int], watchers: int) -> list[list[_Client]]:
    return [[_Client(job=j, watcher=w) for w in range(watchers)] for j in jobs]


async def _run_jobs(cfg: BenchConfig, url: str, states: list[list[_Client]], timeout_s: float) -> None:
    streams = sum(len(s) for s in states)
    connector = aiohttp.TCPConnector(limit=streams + 20)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60.0, sock_read=120.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(_one_job(http, url, job[0].job, cfg, job) for job in states))


def _process_main(
    cfg: BenchConfig, url: str, jobs: list[int], started: float, results: Any, inflight: Any, slot: int
) -> None:
    """A client process: its share of the jobs, then its states back through `results`."""
    states = _new_states(jobs, cfg.watchers_per_job)

    async def main() -> None:
        async def count() -> None:
            while True:
                inflight[slot] = sum(1 for s in states if s[0].submitted_at and s[0].status is None)
                await asyncio.sleep(0.5)

        counter = asyncio.create_task(count())
        try:
            await _run_jobs(cfg, url, states, cfg.timeout_s - (time.time() - started))
        finally:
            counter.cancel()
            inflight[slot] = 0

    eventloop.run(main())
    results.put((slot, states))


async def drive_clients(
    cfg: BenchConfig, url: str, inflight: Callable[[Callable[[], int]], None]
) -> list[list[_Client]]:
    """Run every job's clients (in this process, or spread over `cfg.client_processes`); return
    the clients per job, submitter first. `inflight` is given a function counting running jobs."""
    jobs = list(range(cfg.clients))
    if cfg.client_processes <= 1:
        states = _new_states(jobs, cfg.watchers_per_job)
        inflight(lambda: sum(1 for s in states if s[0].submitted_at and s[0].status is None))
        await _run_jobs(cfg, url, states, cfg.timeout_s)
        return states
    ctx = multiprocessing.get_context("spawn")  # no copy of this process's loop, threads or sockets
    results = ctx.Queue()
    counts = ctx.Array("i", cfg.client_processes, lock=False)
    inflight(lambda: sum(counts))
    started = time.time()
    procs = [
        ctx.Process(
            target=_process_main,
            args=(cfg, url, jobs[slot :: cfg.client_processes], started, results, counts, slot),
            name=f"bench-clients-{slot}",
        )
        for slot in range(cfg.client_processes)
    ]
    for proc in procs:
        proc.start()
    shares: dict[int, list[list[_Client]]] = {}
    try:
        while len(shares) < len(procs):  # read before joining: a big result blocks its sender
            try:
                slot, share = await asyncio.to_thread(results.get, True, 5.0)
                shares[slot] = share
            except Exception:  # queue.Empty: a process that died sends nothing
                if all(not p.is_alive() for p in procs) and results.empty():
                    break
    finally:
        for proc in procs:
            await asyncio.to_thread(proc.join, 30.0)
            if proc.is_alive():
                proc.kill()
    merged = [job for slot in sorted(shares) for job in shares[slot]]
    return sorted(merged, key=lambda job: job[0].job)
