"""`storyloom bench service`: concurrent clients submit chapter jobs and follow their SSE streams."""

from __future__ import annotations

import json

import typer

from storyloom.errors import ConfigError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("service")
    def bench_service(
        clients: int = typer.Option(500, min=1, max=5000, help="Concurrent clients, one job each."),
        versions: int = typer.Option(2, min=1, max=10, help="Candidate versions per chapter job."),
        workers: str = typer.Option("2..2", help="Worker processes of the service, MIN..MAX."),
        api_processes: int = typer.Option(1, min=1, max=32, help="API processes of the service (one port)."),
        follow: str = typer.Option(
            "events",
            help="events: POST, then GET /api/jobs/{id}/events (a browser); stream: POST …/generate/stream.",
        ),
        worker_nice: int = typer.Option(
            5, min=0, max=19, help="The service's --worker-nice (0: workers as important as the API)."
        ),
        concurrency: int = typer.Option(400, min=1, help="Jobs at once per worker process."),
        ttft_s: float = typer.Option(2.0, min=0.0, help="Simulated time to first token, seconds."),
        tokens_per_s: float = typer.Option(60.0, min=1.0, help="Simulated tokens per second."),
        sim_jitter: float = typer.Option(
            0.3, min=0.0, max=0.9, help="Spread of each answer's ttft and token rate (±fraction); 0: none."
        ),
        lease_s: float = typer.Option(15.0, min=1.0, help="Worker lease of the service under test."),
        settle_s: float = typer.Option(
            3.0, min=0.0, help="Seconds for the workers to boot before the clients start."
        ),
        sim_nice: int = typer.Option(
            10, min=0, max=19, help="Niceness of the simulator (a remote provider's CPU); 0: none."
        ),
        timeout_s: float = typer.Option(900.0, min=10.0, help="Give up on unfinished clients after this."),
        as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
        watchers_per_job: int = typer.Option(
            1,
            min=1,
            max=100,
            help="SSE clients per job: the submitter and K-1 more on the same stream (200 x 10 = 2,000).",
        ),
        client_processes: int = typer.Option(
            1, min=1, max=16, help="Processes the clients are spread over (so they are not the bottleneck)."
        ),
        nodes: bool = typer.Option(
            False,
            "--nodes",
            help="Scale-out: 2 API nodes + 2 worker nodes as processes on 127.0.0.x, Postgres + Redis.",
        ),
        database_url: str | None = typer.Option(
            None, help="--nodes: a PostgreSQL to use (postgresql+asyncpg://…); default: a private one."
        ),
        redis_url: str | None = typer.Option(None, help="--nodes: a Redis to use; default: a private one."),
    ) -> None:
        """Start `storyloom serve` (simulator latencies scaled down), drive it, print the figures."""
        from storyloom.bench.service import BenchConfig, run_bench
        from storyloom.commands.serve import parse_worker_range

        parse_worker_range(workers)
        if follow not in ("events", "stream"):
            raise ConfigError(f"--follow must be events or stream, not {follow!r}.")
        config = BenchConfig(
            clients=clients,
            versions=versions,
            workers=workers,
            api_processes=api_processes,
            follow=follow,
            worker_nice=worker_nice,
            concurrency=concurrency,
            timeout_s=timeout_s,
            ttft_s=ttft_s,
            tokens_per_s=tokens_per_s,
            jitter=sim_jitter,
            lease_s=lease_s,
            sim_nice=sim_nice,
            settle_s=settle_s,
            watchers_per_job=watchers_per_job,
            client_processes=client_processes,
        )
        if nodes:
            if watchers_per_job > 1 or client_processes > 1:
                raise ConfigError("--watchers-per-job and --client-processes are not for --nodes yet.")
            from storyloom.bench.nodes import NodesConfig, run_nodes_bench

            if database_url is not None and not database_url.startswith("postgresql"):
                raise ConfigError(f"--nodes needs PostgreSQL (postgresql+asyncpg://…), not {database_url!r}.")
            result = run_nodes_bench(
                NodesConfig(bench=config, database_url=database_url, redis_url=redis_url)
            )
        else:
            if database_url is not None or redis_url is not None:
                raise ConfigError("--database-url and --redis-url go with --nodes.")
            result = run_bench(config)
        if as_json:
            typer.echo(json.dumps(result))
        else:
            for key, value in result.items():
                typer.echo(f"{key:32} {value}")
