"""`storyloom worker`: run jobs from the queue (one process, or P under a supervisor)."""

from __future__ import annotations

from pathlib import Path

import typer

from storyloom.errors import ConfigError, StoreError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        concurrency: int = typer.Option(100, min=1, max=10_000, help="Jobs run at once by each process."),
        processes: int = typer.Option(
            1, min=1, max=64, help="Worker processes (more than 1: under a supervisor)."
        ),
        data_dir: Path | None = typer.Option(None, help="Directory of the embedded SQLite database."),
        database_url: str | None = typer.Option(None, help="sqlite+aiosqlite:///… or postgresql+asyncpg://…"),
        lease_s: float = typer.Option(
            15.0, min=1.0, help="Lease length; a dead worker's jobs return after it."
        ),
        grace_s: float = typer.Option(10.0, min=0.0, help="On SIGTERM: time for running jobs to finish."),
        max_rss_mb: float | None = typer.Option(None, min=50.0, help="Stop claiming above this memory use."),
        worker_id: str | None = typer.Option(None, help="Name in leases and logs (default host-pid-random)."),
        sim_url: str | None = typer.Option(
            None, help="A running simulator's URL (…/v1) for the sim profile."
        ),
        schedule: bool = typer.Option(True, help="Tick the periodic jobs (retention, cost roll-up)."),
    ) -> None:
        """Claim jobs and run them until SIGTERM; then finish or hand back running jobs and exit 0."""
        from storyloom import eventloop
        from storyloom.commands._settings import load_settings
        from storyloom.jobs.worker import WorkerConfig
        from storyloom.logs import configure_logging
        from storyloom.registry import installed_apps
        from storyloom.serve.worker_process import run_supervised, run_worker_process

        settings = load_settings(data_dir=data_dir, database_url=database_url)
        configure_logging(level=settings.log_level, json=settings.log_json)
        config = WorkerConfig(
            concurrency=concurrency,
            lease_s=lease_s,
            grace_s=grace_s,
            max_rss_mb=max_rss_mb,
            worker_id=worker_id,
            schedule_every_s=5.0 if schedule else None,
        )
        try:
            registry = installed_apps()
            if processes > 1:
                eventloop.run(run_supervised(settings, config, registry, processes=processes))
            else:
                eventloop.run(run_worker_process(settings, config, registry, sim_url=sim_url))
        except StoreError as exc:  # mostly: the database is unreachable or refuses us at start
            raise ConfigError(f"the worker cannot use its database ({exc}).") from exc
