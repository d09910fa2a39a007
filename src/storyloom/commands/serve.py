"""`storyloom serve`: API + supervised workers (+ the simulator for the sim profile) until SIGTERM."""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
from pathlib import Path

import typer

from storyloom.errors import ConfigError

__all__ = ["is_loopback", "parse_worker_range", "register", "resolve_auth"]

_MAX_WORKERS = 64
_MAX_API_PROCESSES = 32


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
        port: int = typer.Option(8000, min=0, max=65535, help="Port (0 = any free port)."),
        workers: str = typer.Option(
            "1..4", help="Worker processes as MIN..MAX (or one number; 0: an API node, workers elsewhere)."
        ),
        data_dir: Path | None = typer.Option(None, help="Directory for the SQLite database and metrics."),
        database_url: str | None = typer.Option(None, help="sqlite+aiosqlite:///… or postgresql+asyncpg://…"),
        concurrency: int = typer.Option(100, min=1, max=10_000, help="Jobs run at once by each worker."),
        max_pending: int = typer.Option(10_000, min=1, help="Queued jobs before submissions get 429."),
        lease_s: float = typer.Option(15.0, min=1.0, help="Lease; a dead worker's jobs return after it."),
        grace_s: float = typer.Option(10.0, min=0.0, help="On stop: time for running jobs to finish."),
        heartbeat_s: float = typer.Option(15.0, min=0.05, help="SSE heartbeat comment interval."),
        sim_config: Path | None = typer.Option(None, help="SimConfig file (JSON/YAML) for the simulator."),
        worker_nice: int = typer.Option(
            5, min=0, max=19, help="Added to the workers' niceness: the API first when CPU is short."
        ),
        api_processes: int = typer.Option(
            1, min=1, max=_MAX_API_PROCESSES, help="API processes sharing the port (Linux: SO_REUSEPORT)."
        ),
        auth: bool | None = typer.Option(
            None,
            "--auth/--no-auth",
            help="Require an API key (`storyloom keys create`) on every route but health. "
            "Default: on unless --host is a loopback address.",
        ),
    ) -> None:
        """Serve the HTTP API with MIN..MAX worker processes; prints the URL once it is ready."""
        from storyloom.commands._settings import load_settings

        min_workers, max_workers = (0, 0) if workers.strip() == "0" else parse_worker_range(workers)
        if max_workers == 0 and api_processes > 1:
            raise ConfigError("--workers 0 (an API node) runs one API process; start more nodes instead.")
        if sim_config is not None and not sim_config.is_file():
            raise ConfigError(f"--sim-config {sim_config} is not a file.")
        settings = load_settings(data_dir=data_dir, database_url=database_url)
        settings.provider()  # a missing key or URL is one sentence now, not a failure later
        auth_on = resolve_auth(host, auth)
        _prepare_metrics_dir(settings.data_dir)  # before anything imports prometheus_client

        from storyloom.api.tenant_limits import parse_tenant_limits

        parse_tenant_limits(settings.tenant_limits)  # a wrong STORYLOOM_TENANT_LIMITS: one sentence now

        from storyloom import eventloop
        from storyloom.api.services import ApiOptions
        from storyloom.logs import configure_logging
        from storyloom.serve.service import ServeConfig, run_service

        configure_logging(level=settings.log_level, json=settings.log_json)
        if not auth_on and not is_loopback(host):
            typer.echo(
                f"warning: serving on {host} without authentication (--no-auth): anyone who can reach "
                "this port can read, submit and cancel every tenant's jobs.",
                err=True,
            )
        config = ServeConfig(
            settings=settings,
            host=host,
            port=port,
            min_workers=min_workers,
            max_workers=max_workers,
            concurrency=concurrency,
            lease_s=lease_s,
            grace_s=grace_s,
            sim_config=sim_config,
            api_processes=api_processes,
            worker_nice=worker_nice,
            api=ApiOptions(max_pending=max_pending, heartbeat_s=heartbeat_s, auth=auth_on),
        )

        def ready(url: str) -> None:
            typer.echo(url)  # the first line is the API's URL alone: scripts and tests read it
            typer.echo(f"studio: {url}/" + ("  (sign in with an API key)" if auth_on else ""))
            sys.stdout.flush()

        from storyloom.registry import installed_apps

        eventloop.run(run_service(config, installed_apps(), on_ready=ready))


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (a name other than localhost counts as not)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_auth(host: str, flag: bool | None) -> bool:
    """--auth/--no-auth as given; unset: on whenever the API listens beyond loopback."""
    return flag if flag is not None else not is_loopback(host)


def parse_worker_range(text: str) -> tuple[int, int]:
    """'2..6' -> (2, 6); '3' -> (3, 3). Anything else is a ConfigError with one sentence."""
    lo_text, sep, hi_text = text.strip().partition("..")
    try:
        lo = int(lo_text)
        hi = int(hi_text) if sep else lo
    except ValueError:
        raise ConfigError(f"--workers must look like MIN..MAX (e.g. 2..6), not {text!r}.") from None
    if not 1 <= lo <= hi <= _MAX_WORKERS:
        raise ConfigError(f"--workers needs 1 <= MIN <= MAX <= {_MAX_WORKERS}, got {text!r}.")
    return lo, hi


def _prepare_metrics_dir(data_dir: Path) -> None:
    """Prometheus multiprocess mode for the API and every worker: a fresh directory per run, set in
    the environment before prometheus_client is first imported (it reads the variable at import)."""
    if "prometheus_client" in sys.modules:
        return
    path = (data_dir / "prometheus").resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
