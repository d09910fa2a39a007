"""Per-tenant limits over real HTTP: jobs at once, submissions per minute (shared by two API
processes' apps on one database), open streams, and the gateway's period budgets; plus the
settings' one-sentence errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from storyloom.api.services import ApiOptions
from storyloom.api.tenant_limits import TenantLimits, parse_tenant_limits
from storyloom.errors import ConfigError
from support.api_server import ActingWorker, Keys, Served, chapter_result, novel_input, serve_app


def _limits(doc: object) -> str:
    return json.dumps(doc)


async def _submit(served: Served, headers: dict[str, str], key: str | None = None) -> httpx.Response:
    body: dict[str, object] = {"novel_input": novel_input()}
    if key is not None:
        body["idempotency_key"] = key
    return await served.client.post("/api/novel/generate", json=body, headers=headers)


def _assert_limited(r: httpx.Response, limit: str) -> None:
    assert r.status_code == 429, r.text
    assert limit in r.json()["detail"] and r.json()["detail"].endswith((".", ")"))
    assert int(r.headers["retry-after"]) >= 1


async def test_max_jobs_counts_queued_and_running_jobs_of_the_tenant(tmp_path: Path) -> None:
    limits = _limits({"*": {"max_jobs": 2}, "bob": {"max_jobs": 3}})
    options = ApiOptions(auth=True, heartbeat_s=0.5)
    async with serve_app(tmp_path, options, tenant_limits=limits) as served:
        keys = await Keys.make(served.db)
        alice, bob = keys.auth("alice"), keys.auth("bob")
        first = await _submit(served, alice, key="a1")
        assert first.status_code == 200
        worker = ActingWorker(served)
        try:
            await worker.claim(first.json()["task_id"])  # running counts as much as queued
            assert (await _submit(served, alice)).status_code == 200
            over = await _submit(served, alice)
            _assert_limited(over, "max_jobs 2")
            assert "tenant 'alice' has 2 jobs queued or running" in over.json()["detail"]
            # a repeat of an accepted submission is its job, over the limit or not
            again = await _submit(served, alice, key="a1")
            assert again.status_code == 200 and again.json()["task_id"] == first.json()["task_id"]
            for _ in range(3):  # Bob's own limit, and Alice's jobs are not his
                assert (await _submit(served, bob)).status_code == 200
            _assert_limited(await _submit(served, bob), "max_jobs 3")
            await worker.complete(first.json()["task_id"], chapter_result(["t"]))
        finally:
            await worker.close()
        assert (await _submit(served, alice)).status_code == 200  # one finished: room again
        stats = await served.queue.stats()
        assert stats.counts["pending"] + stats.counts["running"] == 2 + 3


async def test_submissions_per_minute_are_shared_by_every_api_process(tmp_path: Path) -> None:
    limits = _limits({"*": {"submissions_per_minute": 3}, "bob": {"submissions_per_minute": 1}})
    options = ApiOptions(auth=True, heartbeat_s=0.5)
    async with (
        serve_app(tmp_path, options, tenant_limits=limits) as one,
        serve_app(tmp_path, options, tenant_limits=limits) as two,
    ):
        keys = await Keys.make(one.db)
        alice = keys.auth("alice")
        assert (await _submit(one, alice)).status_code == 200
        assert (await _submit(two, alice)).status_code == 200
        assert (await _submit(one, alice)).status_code == 200
        started = time.time()
        for served in (two, one):
            over = await _submit(served, alice)
            _assert_limited(over, "submissions_per_minute 3")
            assert int(over.headers["retry-after"]) <= 60
        # finishing jobs does not give submissions back: the window is time
        worker = ActingWorker(one)
        try:
            jobs = await one.queue.claim(worker.name, limit=10, lease_s=60)
            for job in jobs:
                assert await one.queue.complete(job.id, worker.name, chapter_result(["t"]))
        finally:
            await worker.close()
        _assert_limited(await _submit(two, alice), "submissions_per_minute")
        assert (await _submit(two, keys.auth("bob"))).status_code == 200
        _assert_limited(await _submit(one, keys.auth("bob")), "submissions_per_minute 1")
        assert time.time() - started < 60  # the refusals above were inside one window
        # refused submissions left nothing behind
        assert sum((await one.queue.stats()).counts.values()) == 4


async def test_max_streams_per_tenant_and_a_closed_stream_gives_its_slot_back(tmp_path: Path) -> None:
    limits = _limits({"*": {"max_streams": 1}})
    options = ApiOptions(auth=True, heartbeat_s=0.2)
    async with serve_app(tmp_path, options, tenant_limits=limits) as served:
        keys = await Keys.make(served.db)
        alice = keys.auth("alice")
        job_id = (await _submit(served, alice)).json()["task_id"]
        path = f"/api/jobs/{job_id}/events"
        async with served.client.stream("GET", path, headers=alice) as held:
            assert held.status_code == 200
            second = await served.client.get(path, headers=alice)
            _assert_limited(second, "max_streams 1")
            token = second.json()["queue_token"]  # a place in the stream queue (api/stream_gate.py)
            assert second.json()["queue_position"] == 1
            before = (await served.queue.stats()).queued
            refused = await served.client.post(
                "/api/novel/generate/stream", json={"novel_input": novel_input()}, headers=alice
            )
            _assert_limited(refused, "max_streams")
            assert (await served.queue.stats()).queued == before  # a refused stream made no job
            async with served.client.stream("GET", path, headers=keys.auth("admin")) as other:
                assert other.status_code == 200  # another tenant's streams are its own
        # The server notices the close at its next write (a heartbeat); then the slot is free.
        deadline = time.monotonic() + 10
        while True:  # with its token: a client without one would queue behind it
            async with served.client.stream(
                "GET", path, headers=alice, params={"queue_token": token}
            ) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the closed stream's slot was never given back"
            await asyncio.sleep(0.1)
        slots = served.app.state.services.streams
        while slots.open_streams("alice"):  # and that last one, closed too, is given back as well
            assert time.monotonic() < deadline, "a closed stream's slot was never given back"
            await asyncio.sleep(0.1)


@dataclass(frozen=True)
class _Verdict:
    over: bool
    limit_name: str = ""
    retry_after_s: float | None = None
    message: str = ""


class _Ledger:
    """Answers like the gateway's budget_status: is a tenant over a period budget, until when."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    async def __call__(self, tenant: str) -> _Verdict:
        if self.spent.get(tenant, 0.0) < 2.0:
            return _Verdict(False)
        message = (
            f"tenant {tenant!r} has spent its daily budget of $2.0000 (daily_budget_usd); it resets at …."
        )
        return _Verdict(True, "daily_budget_usd", 3600.0, message)


async def test_a_tenant_over_a_period_budget_is_refused_until_it_resets(tmp_path: Path) -> None:
    ledger = _Ledger()
    options = ApiOptions(auth=True, heartbeat_s=0.5)
    async with serve_app(tmp_path, options, budget_check=ledger) as served:
        services = served.app.state.services
        keys = await Keys.make(served.db)
        alice = keys.auth("alice")
        first = await _submit(served, alice, key="b1")
        assert first.status_code == 200
        ledger.spent["alice"] = 2.5
        await asyncio.sleep(services.budgets.ttl_s + 0.05)  # the gate reads each tenant once a second
        over = await _submit(served, alice)
        _assert_limited(over, "daily_budget_usd")
        assert over.json()["detail"].startswith("tenant 'alice' has spent its daily budget")
        assert over.headers["retry-after"] == "3600"
        streamed = await served.client.post(
            "/api/novel/generate/stream", json={"novel_input": novel_input()}, headers=alice
        )
        _assert_limited(streamed, "daily_budget_usd")
        again = await _submit(served, alice, key="b1")  # a repeat costs nothing: its job
        assert again.status_code == 200 and again.json()["task_id"] == first.json()["task_id"]
        assert (await _submit(served, keys.auth("bob"))).status_code == 200
        ledger.spent["alice"] = 0.0  # a new day
        await asyncio.sleep(services.budgets.ttl_s + 0.05)
        assert (await _submit(served, alice)).status_code == 200


def test_limits_merge_the_default_with_a_tenants_own_fields() -> None:
    config = parse_tenant_limits(
        "'*': {max_jobs: 5, submissions_per_minute: 30}\n"
        "studio: {max_jobs: 50, submissions_per_minute: null}\n"
    )
    assert config.for_tenant("anyone") == TenantLimits(max_jobs=5, submissions_per_minute=30)
    assert config.for_tenant("studio") == TenantLimits(max_jobs=50, submissions_per_minute=None)
    assert parse_tenant_limits(None).for_tenant("x") == TenantLimits()
    assert parse_tenant_limits(None).for_tenant("x").caps() is None


def test_limits_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("'*':\n  max_streams: 4\n")
    assert parse_tenant_limits(str(path)).for_tenant("a").max_streams == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"*": {"max_jobs": 0}}', "STORYLOOM_TENANT_LIMITS is invalid at *.max_jobs: Input should be"),
        ('{"bob": {"max_job": 3}}', "STORYLOOM_TENANT_LIMITS is invalid at bob.max_job: Extra inputs"),
        ('{"bob": 3}', "STORYLOOM_TENANT_LIMITS is invalid at bob: Input should be"),
        ("{nope", "STORYLOOM_TENANT_LIMITS is not valid JSON or YAML"),
        ("/no/such/limits.yaml", "STORYLOOM_TENANT_LIMITS must map tenants to limits"),
    ],
)
def test_bad_limits_are_one_sentence(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tenant_limits(text)
    assert str(caught.value).startswith(message) and str(caught.value).endswith(".")


def test_serve_refuses_bad_limits_with_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    env["STORYLOOM_TENANT_LIMITS"] = '{"*": {"max_streams": -1}}'
    done = subprocess.run(
        [sys.executable, "-m", "storyloom.cli", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: STORYLOOM_TENANT_LIMITS is invalid at *.max_streams")
    assert "Traceback" not in done.stderr


async def test_the_gateways_own_period_budgets_refuse_a_spent_tenant(tmp_path: Path) -> None:
    """With the llm part's budget_status: spend settled in the shared limits store (as a worker's
    gateway settles it) makes the API refuse that tenant's next submission."""
    pytest.importorskip("storyloom.llm.budget_status")
    from storyloom.limits.base import LimitBackend
    from storyloom.limits.budgets import BudgetHold, BudgetLimits

    limits_url = f"sqlite:///{tmp_path / 'llm-limits.db'}"
    options = ApiOptions(auth=True, heartbeat_s=0.5)
    budgets = {"alice": 1.0}
    async with serve_app(
        tmp_path, options, limits_url=limits_url, tenant_daily_budgets_usd=budgets
    ) as served:
        keys = await Keys.make(served.db)
        alice = keys.auth("alice")
        assert (await _submit(served, alice)).status_code == 200
        backend = LimitBackend.from_url(limits_url)
        try:
            hold = await backend.reserve_budget("alice", BudgetLimits(daily_budget_usd=1.0), 1.0, 0, 30)
            assert isinstance(hold, BudgetHold)
            await backend.settle_budget(hold, 1.0)
        finally:
            await backend.aclose()
        await asyncio.sleep(served.app.state.services.budgets.ttl_s + 0.05)
        over = await _submit(served, alice)
        _assert_limited(over, "daily_budget_usd")
        assert 1 <= int(over.headers["retry-after"]) <= 86_400
        assert (await _submit(served, keys.auth("bob"))).status_code == 200
