"""Proof over real loopback HTTP: `storyloom serve` (one worker process, one slot) with its
simulator child; a worker killed mid-book, an edit of chapter 3, a cost cap."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil
import pytest

from storyloom.bench.serve_process import ServeProcess

pytestmark = pytest.mark.slow

Json = dict[str, Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    work = tmp_path_factory.mktemp("bookproof")
    sim = work / "sim.json"
    sim.write_text(
        json.dumps({"seed": 7, "default": {"ttft_s": 0.02, "tokens_per_s": 4000, "answer_tokens": 80}})
    )
    proc = ServeProcess(
        work,
        [
            "--workers",
            "1",
            "--concurrency",
            "1",
            "--lease-s",
            "2",
            "--grace-s",
            "1",
            "--sim-config",
            str(sim),
        ],
    )
    try:
        yield proc
    finally:
        proc.stop()


def _book(client: httpx.Client, chapters: int) -> str:
    r = client.post(
        "/api/books",
        json={
            "title": "Salt Road",
            "premise": "A courier crosses the desert.",
            "chapters": chapters,
            "language": "en",
            "generate": False,
        },
    )
    assert r.status_code == 201, r.text
    book_id = str(r.json()["id"])
    for n in range(1, chapters + 1):
        r = client.put(
            f"/api/books/{book_id}/outline/{n}",
            json={"title": f"Oasis {n}", "summary": f"The courier reaches oasis {n} and trades salt."},
        )
        assert r.status_code == 200, r.text
    return book_id


def _until(
    client: httpx.Client, book_id: str, run_id: str, done: Callable[[Json], bool], timeout_s: float = 120
) -> Json:
    deadline = time.monotonic() + timeout_s
    run: Json = {}
    while time.monotonic() < deadline:
        run = client.get(f"/api/books/{book_id}/runs/{run_id}").json()
        if done(run):
            return run
        time.sleep(0.1)
    raise AssertionError(f"the run did not get there: {run}")


def test_edit_of_chapter_3_makes_4_on_stale_and_regenerate_restores_them(served: ServeProcess) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        book_id = _book(client, 5)
        r = client.post(f"/api/books/{book_id}/runs", json={"first": 1, "last": 5, "versions": 2})
        assert r.status_code == 202, r.text
        run = _until(client, book_id, r.json()["id"], lambda x: x["status"] in {"completed", "failed"})
        assert run["status"] == "completed" and run["done"] == 5, run
        before = {c["number"]: c for c in client.get(f"/api/books/{book_id}/chapters").json()}
        assert all(c["state"] == "chosen" and c["chosen_version"] for c in before.values())

        r = client.put(
            f"/api/books/{book_id}/chapters/3/text", json={"text": "The courier turned back.\n\nNo salt."}
        )
        assert r.status_code == 200 and r.json()["text"].startswith("The courier turned back"), r.text
        assert r.json()["memory_stale"] is True  # chapter 3's memory must be read again
        stale = client.get(f"/api/books/{book_id}/stale").json()
        assert [c["number"] for c in stale if c["state"] == "stale"] == [4, 5]
        assert all("chapter 3" in c["stale_reason"] for c in stale if c["state"] == "stale")
        states = {c["number"]: c["state"] for c in client.get(f"/api/books/{book_id}/chapters").json()}
        assert states[1] == states[2] == "chosen"

        r = client.post(f"/api/books/{book_id}/regenerate", json={"from_chapter": 4, "versions": 1})
        assert r.status_code == 202, r.text
        again = _until(client, book_id, r.json()["id"], lambda x: x["status"] in {"completed", "failed"})
        assert again["status"] == "completed" and (again["first"], again["last"]) == (4, 5), again
        after = {c["number"]: c for c in client.get(f"/api/books/{book_id}/chapters").json()}
        assert all(after[n]["state"] == "chosen" and after[n]["stale_reason"] is None for n in (4, 5))
        versions = client.get(f"/api/books/{book_id}/chapters/4/versions").json()
        assert len(versions) == 3 and [v["chosen"] for v in versions] == [False, False, True]  # old kept
        assert client.post(f"/api/books/{book_id}/regenerate", json={"from_chapter": 1}).status_code == 409


def test_a_cost_cap_stops_the_book_before_the_cap(served: ServeProcess) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        book_id = _book(client, 4)
        r = client.post(f"/api/books/{book_id}/runs", json={"first": 1, "last": 1, "versions": 1})
        one = _until(client, book_id, r.json()["id"], lambda x: x["status"] == "completed")["cost_usd"]
        cap = one * 1.5
        r = client.post(
            f"/api/books/{book_id}/runs", json={"first": 2, "last": 4, "versions": 1, "cost_cap_usd": cap}
        )
        run = _until(client, book_id, r.json()["id"], lambda x: x["status"] not in {"running"})
        assert run["status"] == "stopped" and run["stop_reason"] == "cost_cap", run
        assert 0 < run["cost_usd"] <= cap and run["done"] < 3
        spent = 0.0
        for number in (2, 3, 4):  # what every chapter job of the run cost, the stopped one's calls too
            spent += client.get(f"/api/books/{book_id}/chapters/{number}").json()["cost_usd"]
        assert spent <= cap


def test_a_killed_worker_resumes_the_book_at_the_chapter_in_flight(served: ServeProcess) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        book_id = _book(client, 4)
        r = client.post(f"/api/books/{book_id}/runs", json={"first": 1, "last": 4, "versions": 2})
        run_id = r.json()["id"]
        run = _until(client, book_id, run_id, lambda x: x["chapter"] == 2 and x["job_id"] is not None)
        job_id = run["job_id"]
        # Chapter 2 at a slower pace, so the kill lands inside it even on a loaded machine (at the
        # module's pace a chapter can end between two polls).
        _sim_pace(served, ttft_s=0.2, tokens_per_s=300)
        try:
            deadline = time.monotonic() + 60
            while client.get(f"/api/jobs/{job_id}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.4)  # some of chapter 2's steps are done, not all
            assert client.get(f"/api/jobs/{job_id}").json()["status"] == "running"
            for pid in served.pids("workers"):
                psutil.Process(pid).kill()
        finally:
            _sim_pace(served, ttft_s=0.02, tokens_per_s=4000)
        done = _until(client, book_id, run_id, lambda x: x["status"] in {"completed", "failed"}, 180)
        assert done["status"] == "completed" and done["done"] == 4, done
        job = client.get(f"/api/jobs/{job_id}").json()
        kinds = [json.loads(line[5:])["kind"] for line in _lines(client, job_id) if line.startswith("data:")]
        # Chapter 2's job ran again after the kill (a second start), on the steps it had checkpointed.
        assert job["status"] == "completed" and kinds.count("job.started") >= 2, kinds
        first_job = client.get(f"/api/books/{book_id}/chapters/1/versions").json()[0]["job_id"]
        first = [
            json.loads(line[5:])["kind"] for line in _lines(client, first_job) if line.startswith("data:")
        ]
        assert first.count("job.started") == 1  # chapter 1 was not written again
        chapters = client.get(f"/api/books/{book_id}/chapters").json()
        assert [c["state"] for c in chapters] == ["chosen"] * 4
        versions = client.get(f"/api/books/{book_id}/chapters/2/versions").json()
        assert len(versions) == 2  # the re-run overwrote its own versions, nothing doubled


def _sim_pace(served: ServeProcess, *, ttft_s: float, tokens_per_s: float) -> None:
    root = served.simulator_root()
    assert root is not None
    patch = {"default": {"ttft_s": ttft_s, "tokens_per_s": tokens_per_s}}
    httpx.post(f"{root}/sim/config", json=patch, timeout=10).raise_for_status()


def _lines(client: httpx.Client, job_id: str) -> list[str]:
    with client.stream("GET", f"/api/jobs/{job_id}/events?after=0") as r:
        return list(r.iter_lines())
