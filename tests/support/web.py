"""The studio's browser tests: a real `storyloom serve` subprocess (API, supervisor, one worker,
the simulator), with the haiku app of tests/apps served beside the novel.

The simulator streams at a pace where a three-version chapter takes several seconds: long enough
to reload the page in the middle of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
SIM = {
    "seed": 11,
    "default": {"ttft_s": 0.05, "tokens_per_s": 250.0, "answer_tokens": 60},
    "chunk_interval_s": 0.02,
}


@dataclass
class Studio:
    url: str
    data_dir: Path
    key: str | None = None


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "storyloom.cli", *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORYLOOM_", "PROMETHEUS_"))}
    # The haiku app of tests/apps (docs/EXTENDING.md's example) is served beside the novel.
    paths = [str(ROOT / "src"), str(ROOT / "tests" / "apps"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["STORYLOOM_APPS"] = "haiku_app:app"
    return env


def start_serve(tmp: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    sim = tmp / "sim.json"
    sim.write_text(json.dumps(SIM))
    args = ["--port", "0", "--workers", "1..1", "--data-dir", str(tmp / "data"), "--sim-config", str(sim)]
    args += ["--heartbeat-s", "1", "--grace-s", "0.5", "--worker-nice", "0", *extra]
    log = (tmp / "serve.log").open("a")
    proc = subprocess.Popen(_cli("serve", *args), stdout=subprocess.PIPE, stderr=log, text=True, env=_env())
    log.close()
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://"), f"serve did not start; see {tmp / 'serve.log'}"
    studio_line = proc.stdout.readline().strip()
    assert studio_line.startswith(f"studio: {url}/"), studio_line
    return proc, url


def stop_serve(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def create_key(tmp: Path, tenant: str, role: str = "member") -> str:
    """`storyloom keys create` on the data dir a `start_serve(tmp, "--auth")` will use."""
    made = subprocess.run(
        _cli("keys", "create", "--tenant", tenant, "--role", role, "--data-dir", str(tmp / "data")),
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    )
    return made.stdout.strip().splitlines()[-1]


def new_book(page: Any, studio: Studio, title: str, chapters: int) -> str:
    """A book from a premise through the form; returns its id once its outline is there."""
    page.goto(studio.url + "/")
    page.fill(".new-project input[name=title]", title)
    page.fill(".new-project textarea[name=premise]", "A courier on a river ferry learns the sword.")
    page.select_option(".new-project select[name=language]", "en")
    page.fill(".new-project input[name=chapters]", str(chapters))
    assert page.is_checked(".new-project input[name=generate]")
    page.click(".new-project button[type=submit]")
    page.wait_for_selector("section.plan-job")  # the planning job, live
    page.wait_for_selector(f".outline-list .outline-row[data-number='{chapters}']", timeout=30_000)
    book_id: str = page.evaluate("() => location.hash.split('/')[2]")
    return book_id
