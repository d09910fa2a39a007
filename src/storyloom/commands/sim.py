"""`storyloom sim`: run the simulated OpenAI-compatible provider until SIGTERM or Ctrl-C.

The first line on stdout is the base URL (ending in /v1), flushed, so another process can wait for
it; the socket is already listening when it is printed.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from storyloom.errors import ConfigError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("sim")
    def sim(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
        port: int = typer.Option(8900, help="Port (0 = any free port)."),
        seed: int | None = typer.Option(None, help="Seed for content and fault draws."),
        config: Path | None = typer.Option(None, "--config", help="SimConfig as a JSON or YAML file."),
        rpm: int | None = typer.Option(None, help="Requests per window (quota)."),
        tpm: int | None = typer.Option(None, help="Tokens per window (quota)."),
        concurrency: int | None = typer.Option(None, help="Concurrent requests (quota)."),
        ttft: float | None = typer.Option(None, help="Default time to first token, seconds."),
        tps: float | None = typer.Option(None, help="Default tokens per second."),
        answer_tokens: int | None = typer.Option(None, help="Default answer length, tokens."),
        window: float | None = typer.Option(None, "--window", help="Quota window, seconds (default 60)."),
        mode: str | None = typer.Option(None, help="Quota mode: enforce (429) or count (record only)."),
        log_level: str = typer.Option("warning", help="uvicorn log level."),
    ) -> None:
        """Run the simulated provider (OpenAI chat completions with latency, quotas and faults)."""
        patch = _patch_from_flags(
            seed=seed,
            rpm=rpm,
            tpm=tpm,
            concurrency=concurrency,
            ttft=ttft,
            tps=tps,
            answer_tokens=answer_tokens,
            window=window,
            mode=mode,
        )
        _run(host, port, config, patch, log_level)


def _patch_from_flags(**flags: Any) -> dict[str, Any]:
    if flags["mode"] is not None and flags["mode"] not in ("enforce", "count"):
        raise ConfigError(f"--mode must be 'enforce' or 'count', not {flags['mode']!r}.")
    patch: dict[str, Any] = {}
    quota = {k: flags[k] for k in ("rpm", "tpm", "concurrency", "mode") if flags[k] is not None}
    default = {
        name: flags[flag]
        for flag, name in (("ttft", "ttft_s"), ("tps", "tokens_per_s"), ("answer_tokens", "answer_tokens"))
        if flags[flag] is not None
    }
    if quota:
        patch["quota"] = quota
    if default:
        patch["default"] = default
    if flags["seed"] is not None:
        patch["seed"] = flags["seed"]
    if flags["window"] is not None:
        patch["window_s"] = flags["window"]
    return patch


def _run(host: str, port: int, config_path: Path | None, patch: dict[str, Any], log_level: str) -> None:
    import uvicorn

    from storyloom.heap import limit_arenas
    from storyloom.sim.config import SimConfig, load_sim_config
    from storyloom.sim.embedded import bind_socket, uvicorn_config
    from storyloom.sim.server import create_sim_app

    limit_arenas()  # a long-lived server process, like the API's (storyloom.heap)
    base = load_sim_config(config_path) if config_path is not None else SimConfig()
    cfg = base.patched(patch) if patch else base
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.") from exc
    bound_port = sock.getsockname()[1]
    typer.echo(f"http://{host}:{bound_port}/v1")
    sys.stdout.flush()

    class _Server(uvicorn.Server):
        """Stops gracefully on SIGTERM/SIGINT and exits 0, instead of re-raising the signal."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C stops without waiting
            self.should_exit = True

    server = _Server(uvicorn_config(create_sim_app(cfg), log_level=log_level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
