"""A user-written app, installed with pip from its own directory, served by `storyloom serve`
with no edit anywhere in storyloom: submitted through /api/apps, followed over SSE, and answered
through /v1/chat/completions by the official `openai` SDK."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from storyloom.sim import ModelProfile, SimConfig, run_sim_in_thread

pytestmark = pytest.mark.slow

PLUGIN = Path(__file__).with_name("plugin_haiku")


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment that sees this storyloom and has the plug-in installed into it."""
    root = tmp_path_factory.mktemp("plugin-env")
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    source = root / "plugin"
    shutil.copytree(PLUGIN, source)
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", str(source)],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return python


@pytest.fixture
def provider() -> Iterator[Any]:
    config = SimConfig(seed=3, default=ModelProfile(ttft_s=0.01, tokens_per_s=20_000.0, answer_tokens=60))
    with run_sim_in_thread(config) as sim:
        yield sim


@pytest.fixture
def served(plugin_python: Path, provider: Any, tmp_path: Path) -> Iterator[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")},
        "STORYLOOM_BASE_URL": provider.url,
        "STORYLOOM_MODEL": "sim-writer",
        "STORYLOOM_LOG_LEVEL": "WARNING",
    }
    cmd = [plugin_python, "-m", "storyloom.cli", "serve", "--port", "0", "--workers", "1"]
    cmd += ["--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_an_installed_app_is_served_everywhere(plugin_python: Path, served: str, provider: Any) -> None:
    listed = subprocess.run(
        [plugin_python, "-m", "storyloom.cli", "apps", "--json"], capture_output=True, text=True, check=True
    )
    assert "haiku" in {a["name"] for a in json.loads(listed.stdout)["apps"]}

    with httpx.Client(base_url=served, timeout=60) as http:
        assert "haiku" in {a["name"] for a in http.get("/api/apps").json()}
        bad = http.post("/api/apps/haiku/jobs", json={"input": {}})
        assert bad.status_code == 422 and "topic" in bad.text
        assert http.post("/api/apps/nope/jobs", json={"input": {}}).status_code == 404

        before = provider.stats()["total_tokens"]
        job = http.post("/api/apps/haiku/jobs", json={"input": {"topic": "moss"}, "priority": 7})
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        kinds = []
        with http.stream("GET", f"/api/jobs/{job_id}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    kinds.append(json.loads(line[6:])["kind"])
        assert kinds[0] == "job.submitted" and kinds[-1] == "job.completed" and "step.delta" in kinds
        done = http.get(f"/api/jobs/{job_id}").json()
        assert done["status"] == "completed" and done["text"].strip() and done["app"] == "haiku"
        assert done["usage"]["calls"] == 2
        assert done["usage"]["total_tokens"] == provider.stats()["total_tokens"] - before

    client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused-on-loopback")
    before = provider.stats()["total_tokens"]
    answer = client.chat.completions.create(
        model="storyloom/haiku", messages=[{"role": "user", "content": "ice"}]
    )
    assert answer.choices[0].message.content and answer.usage is not None
    assert answer.usage.total_tokens == provider.stats()["total_tokens"] - before

    before = provider.stats()["total_tokens"]
    stream = client.chat.completions.create(
        model="storyloom/haiku",
        messages=[{"role": "user", "content": "fog"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    for chunk in stream:
        usage = chunk.usage or usage
        parts += [c.delta.content for c in chunk.choices if c.delta.content]
    assert "".join(parts).strip() and usage is not None
    assert usage.total_tokens == provider.stats()["total_tokens"] - before
    assert sys.executable  # the plug-in ran in its own environment, storyloom untouched
