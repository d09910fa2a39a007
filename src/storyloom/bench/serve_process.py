"""`ServeProcess`: `storyloom serve` as a subprocess for the benchmarks, with its process tree's
CPU time, resident memory, and an orderly stop (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import psutil

__all__ = ["ServeProcess", "process_parts"]


def process_parts(root: psutil.Process) -> list[tuple[str, psutil.Process]]:
    """(api | worker | simulator | api_child, process) for `serve` and every child of it."""
    out = [("api", root)]
    with contextlib.suppress(psutil.Error):
        for child in root.children(recursive=True):
            try:
                cmd = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if " sim " in f"{cmd} ":
                out.append(("simulator", child))
            elif "api_child" in cmd:
                out.append(("api", child))
            elif " worker " in f"{cmd} ":
                out.append(("workers", child))
    return out


class ServeProcess:
    """Start `storyloom serve --port 0 ...args` in `workdir`; `url` once it answers."""

    def __init__(
        self,
        workdir: Path,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 90,
    ) -> None:
        self.workdir = workdir
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("STORYLOOM_", "PROMETHEUS_"))}
        clean["STORYLOOM_LOG_LEVEL"] = "WARNING"
        self.log_path = workdir / "serve.log"
        cmd = [
            sys.executable,
            "-m",
            "storyloom.cli",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(workdir / "data"),
        ]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [*cmd, *args], stdout=subprocess.PIPE, stderr=log, text=True, env={**clean, **(env or {})}
            )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError(f"storyloom serve did not start; see {self.log_path}")
        self.root = psutil.Process(self.proc.pid)
        self._wait_healthy(timeout_s)

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/health", timeout=5).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"storyloom serve never became healthy; see {self.log_path}")

    def cpu_seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for part, proc in process_parts(self.root):
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[part] = out.get(part, 0.0) + t.user + t.system
        return out

    def rss_mb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for part, proc in process_parts(self.root):
            with contextlib.suppress(psutil.Error):
                out[part] = out.get(part, 0.0) + proc.memory_info().rss / 1e6
        return out

    def renice_simulator(self, nice: int) -> None:
        for part, proc in process_parts(self.root):
            if part == "simulator" and nice > 0:
                with contextlib.suppress(psutil.Error):
                    proc.nice(nice)

    def simulator_root(self) -> str | None:
        """http://127.0.0.1:<port> of the simulator child (sim profile), from its listening socket."""
        for part, proc in process_parts(self.root):
            if part != "simulator":
                continue
            with contextlib.suppress(psutil.Error):
                for conn in proc.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr:
                        return f"http://127.0.0.1:{conn.laddr.port}"
        return None

    def pids(self, part: str) -> list[int]:
        return [p.pid for name, p in process_parts(self.root) if name == part]

    def stop(self, timeout_s: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
