"""Tools from MCP servers (the official SDK as client) over stdio and streamable HTTP: registered
under the same policies, offered to models with the server's schema, degraded when they fail."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mcp")
pytestmark = pytest.mark.slow  # each test starts Python MCP servers: seconds on a busy machine

from storyloom.config import Settings  # noqa: E402
from storyloom.errors import ConfigError  # noqa: E402
from storyloom.tools import ToolArgumentsError, ToolRegistry, ToolRuntime  # noqa: E402
from storyloom.tools.mcp import load_mcp_servers, register_mcp_servers  # noqa: E402
from storyloom.tools.setup import build_runtime  # noqa: E402

SERVER = Path(__file__).with_name("mcp_server.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(timeout=10)


def _stdio_doc() -> str:
    return (
        f'{{"servers": [{{"name": "calc", "command": "{sys.executable}", "args": ["{SERVER}"],'
        ' "policy": {"calls_per_minute": 600, "cache_ttl_s": 60, "retries": 0, "timeout_s": 8}}]}'
    )


async def test_a_stdio_servers_tools_run_under_the_policy() -> None:
    registry = ToolRegistry()
    await register_mcp_servers(registry, load_mcp_servers(_stdio_doc()))
    runtime = ToolRuntime(registry)
    try:
        assert registry.names == ["calc_add", "calc_broken", "calc_shout"]
        spec = registry.get("calc_add").spec()["function"]
        assert spec["description"] == "Add two integers." and spec["parameters"]["required"] == ["a", "b"]
        assert registry.get("calc_add").policy.calls_per_minute == 600
        added = await runtime.call("calc_add", {"a": 2, "b": 40})
        assert not added.degraded and added.output == {"result": 42}
        assert (await runtime.call("calc_add", {"a": 2, "b": 40})).cached
        parallel = await runtime.call_many([("calc_shout", {"text": "hi"}), ("calc_add", {"a": 1, "b": 1})])
        assert [r.output for r in parallel] == [{"result": "HI"}, {"result": 2}]
        broken = await runtime.call("calc_broken", {})
        assert broken.degraded and broken.reason is not None and broken.reason.startswith("failed: broken")
        with pytest.raises(ToolArgumentsError, match="a: Input should be a valid integer"):
            await runtime.call("calc_add", {"a": "two", "b": 1})
    finally:
        await runtime.aclose()


async def test_a_streamable_http_server_and_the_settings_seam(http_server: str, tmp_path: Path) -> None:
    doc = f"servers:\n  - name: web\n    url: {http_server}\n    prefix: ''\n    tools: [shout]\n"
    settings = Settings(data_dir=tmp_path, mcp_servers=doc, limits_url="memory://", _env_file=None)  # type: ignore[call-arg]
    runtime = build_runtime(settings, ToolRegistry())
    try:
        result = await runtime.call("shout", {"text": "over http"})  # connects on the first call
        assert result.output == {"result": "OVER HTTP"} and not result.degraded
        assert "add" not in runtime.registry  # only the tools named
    finally:
        await runtime.aclose()


async def test_a_server_that_is_gone_degrades_the_call_and_a_bad_document_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of command"):
        load_mcp_servers('[{"name": "x"}]')
    with pytest.raises(ConfigError, match="unknown tool policy field"):
        load_mcp_servers('[{"name": "x", "url": "http://127.0.0.1:1/mcp", "policy": {"rpm": 5}}]')
    registry = ToolRegistry()
    await register_mcp_servers(registry, load_mcp_servers(_stdio_doc()))
    runtime = ToolRuntime(registry)
    try:
        assert not (await runtime.call("calc_shout", {"text": "a"})).degraded
        # Kill the server under the session: the call degrades, the next one reconnects.
        for proc in _children():
            proc.kill()
        await asyncio.sleep(0.2)
        down = await runtime.call("calc_shout", {"text": "b"})
        assert down.degraded and down.reason is not None and "calc" in down.reason
        # A new server starts on the next call (slow to import on a busy machine: a few tries).
        deadline = time.monotonic() + 90
        back = await runtime.call("calc_shout", {"text": "c"})
        while back.degraded and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            back = await runtime.call("calc_shout", {"text": "c"})
        assert not back.degraded and back.output == {"result": "C"}
    finally:
        await runtime.aclose()


def _children() -> list[subprocess.Popen[bytes]]:
    """This process's child MCP servers (by their script), as killable handles."""
    import psutil

    me = psutil.Process()
    found = []
    for child in me.children(recursive=True):
        try:
            if str(SERVER) in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found  # type: ignore[return-value]
