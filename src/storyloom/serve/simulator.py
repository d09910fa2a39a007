"""`SimProcess`: the one way storyloom starts the simulated provider in a process of its own.

`serve` (sim profile), `worker --processes N`, and every benchmark run the simulator as
`storyloom sim --port 0 --config FILE` and talk to it over HTTP, as they would to a provider on
another machine: it shares neither their event loop nor their GIL. The first stdout line is its
base URL (the socket is already listening then); the rest of its output is drained so it never
blocks on a full pipe. It may be niced, to stand for a provider whose CPU is not ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from storyloom.errors import ConfigError
from storyloom.serve.children import renice

__all__ = ["SimProcess"]


class SimProcess:
    """Start on construction; `url` ends in /v1. A context manager, sync and async."""

    def __init__(
        self,
        config: dict[str, Any] | Path | None = None,
        *,
        seed: int | None = None,
        nice: int = 0,
        start_timeout_s: float = 60.0,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        argv = [sys.executable, "-m", "storyloom.cli", "sim", "--host", "127.0.0.1", "--port", "0"]
        if isinstance(config, dict):
            self._tmp = tempfile.TemporaryDirectory(prefix="storyloom-sim-")
            path = Path(self._tmp.name) / "sim.json"
            path.write_text(json.dumps(config), encoding="utf-8")
            argv += ["--config", str(path)]
        elif config is not None:
            argv += ["--config", str(config)]
        if seed is not None:
            argv += ["--seed", str(seed)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=dict(os.environ)
        )
        line = self._first_line(start_timeout_s)
        if not line.startswith("http"):
            self.close()
            raise ConfigError(f"the simulator did not start (it printed {line!r}; see its error above).")
        self.url = line
        self.root = line.removesuffix("/v1")
        threading.Thread(target=self._drain, name="sim-stdout", daemon=True).start()
        if nice:
            renice(self.proc.pid, nice)
        self._http = httpx.Client(timeout=10)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _first_line(self, timeout_s: float) -> str:
        """The first line, or "" if none comes in time (a thread: a pipe read has no timeout)."""
        stream = self.proc.stdout
        assert stream is not None
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        return found[0].strip() if found else ""

    def _drain(self) -> None:
        stream = self.proc.stdout
        if stream is not None:
            for _ in stream:
                pass

    # -- driving it over HTTP ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = self._http.get(f"{self.root}/stats").json()
        return doc

    def configure(self, patch: dict[str, Any]) -> None:
        self._http.post(f"{self.root}/sim/config", json=patch).raise_for_status()

    def reset(self) -> None:
        self._http.post(f"{self.root}/stats/reset").raise_for_status()

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        http = getattr(self, "_http", None)
        if http is not None:
            http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SimProcess:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio

        await asyncio.to_thread(self.close)
