"""schemathesis against a live `storyloom serve`: every route, every check, no 500, nothing off-spec.

The server is the real thing (the CLI in a subprocess: API, supervisor, one worker, the simulator
at a fast pace), and schemathesis (v4, its CLI `st run`) reads /openapi.json from it like any
outsider would: the coverage phase walks each parameter's edges, the fuzzing phase draws bodies
from the schemas, the stateful phase follows the links it infers (create a project, write a
chapter, follow its job). The figures are printed (`pytest -s`) and the report kept in tmp_path.

The service runs with authentication on and every request carries an admin key; `FUZZ_HEADERS`
(JSON) adds or replaces headers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SEED = 20240610
MAX_EXAMPLES = 25  # per operation in the fuzzing phase; coverage and stateful add more
MIN_CASES = 1000
# The simulator answers at once, so a chapter job takes well under a second of worker CPU.
_SIM = {
    "seed": 7,
    "default": {"ttft_s": 0.0, "tokens_per_s": 100000.0, "answer_tokens": 40},
    "chunk_interval_s": 0.01,
}
# Streams are read up to this many events (or the request timeout); each event is checked.
_CONFIG = """
max-stream-events = 8

# Every check is on (schemathesis' default) but two:
# object_level_authorization needs two users' credentials: the tenant tests cover it.
# use_after_free: DELETE /api/jobs/{id} cancels, and a cancelled job stays readable (its contract);
# schemathesis cannot be told so for that path alone in its stateful phase
# (tests/apps/novel/test_novel_projects_api.py checks that a deleted project answers 404).
[checks]
object_level_authorization.enabled = false
use_after_free.enabled = false

# The studio's routes (/api/me, the admin-only /api/ops/overview|limits|usage, /api/jobs/{id}/usage)
# are fuzzed like every other: this run's admin key reaches them, and ?days is bounded 1..366.
[[operations]]
include-path-regex = "^/api/ops/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422"]

# The chat front makes an app's input from free-form chat messages (the last user message): what the
# app needs from them (a non-blank outline) is not something the messages' schema can say, so a
# schema-valid conversation may be refused with OpenAI's 400, as real providers refuse some prompts.
[[operations]]
include-path = "/v1/chat/completions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]

# /api/books: a schema-valid request may still meet a book's state: a run over chapters another
# run holds, a pause of a finished run, a regenerate with nothing stale (409); a chapter range past
# the outline, a passage outside the chosen text, a choice naming neither version (400).
[[operations]]
include-path-regex = "^/api/books"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]

# schemathesis expects an unknown extra header to be refused on this one operation (it holds the
# Last-Event-ID header and the bearer scheme); HTTP lets a server ignore headers it does not know,
# as every other operation here does without complaint.
[[operations]]
include-path = "/api/jobs/{job_id}/events"
checks.negative_data_rejection.enabled = false
"""


@dataclass
class LiveService:
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "storyloom.cli", *args]


@pytest.fixture
def live_service(tmp_path: Path) -> Iterator[LiveService]:
    """`storyloom serve --auth` on loopback with a bounded queue (extra submissions are a
    documented 429), and an admin key (created with `storyloom keys create`) on every request."""
    sim = tmp_path / "sim.json"
    sim.write_text(json.dumps(_SIM))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORYLOOM_", "PROMETHEUS_"))}
    created = subprocess.run(
        _cli("keys", "create", "--tenant", "fuzz", "--role", "admin", "--data-dir", str(tmp_path / "data")),
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    key = created.stdout.strip().splitlines()[-1]
    args = ["--auth", "--port", "0", "--workers", "1..1", "--data-dir", str(tmp_path / "data")]
    args += ["--sim-config", str(sim), "--concurrency", "8", "--max-pending", "30"]
    args += ["--heartbeat-s", "0.5", "--grace-s", "0.5", "--worker-nice", "0"]
    with (tmp_path / "serve.log").open("a") as log:
        proc = subprocess.Popen(_cli("serve", *args), stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), f"serve did not start; see {tmp_path / 'serve.log'}"
        headers = {"Authorization": f"Bearer {key}", **json.loads(os.environ.get("FUZZ_HEADERS", "{}"))}
        yield LiveService(url=url, headers=headers)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def run_schemathesis(service: LiveService, out: Path, *extra: str) -> dict[str, Any]:
    """`st run` over every operation; returns its JSON report."""
    config = out / "schemathesis.toml"
    config.write_text(_CONFIG)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{service.url}/openapi.json",
        "--phases",
        "coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # One worker: the coverage phase's threads trip a CPython 3.11 ast bug in hypothesis.
        "--workers",
        "1",
        "--request-timeout",
        "5",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "json",
        "--report-dir",
        str(out / "report"),
        *extra,
    ]
    for name, value in service.headers.items():
        command += ["--header", f"{name}: {value}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    # cwd: schemathesis keeps a cache (.schemathesis/) in its working directory
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=out)
    (out / "schemathesis.txt").write_text(run.stdout + run.stderr)
    reports = sorted((out / "report").glob("*.json"))
    assert reports, f"schemathesis wrote no report:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(reports[-1].read_text())
    report["_output"] = run.stdout
    return report


def test_every_route_survives_fuzzing_and_answers_what_the_spec_documents(
    live_service: LiveService, tmp_path: Path
) -> None:
    report = run_schemathesis(live_service, tmp_path)
    cases = report["test_cases"]
    failures = {f["code"]: f for f in report["failures"]}
    print(
        f"\nschemathesis: {cases['generated']} cases, {report['running_time']:.0f} s,"
        f" {len(report['failures'])} kinds of failure, errors {report['errors']}"
    )
    assert report["operations"]["tested"] == report["operations"]["total"] > 0
    assert cases["generated"] >= MIN_CASES
    assert "ST101" not in failures, f"server errors: {failures.get('ST101')}"
    assert not report["failures"], report["_output"][-8000:]
    assert not report["errors"], report["_output"][-8000:]
    assert report["exit_code"] == 0, report["_output"][-8000:]
