"""The `storyloom` command: parse, load settings, call the library. The library never imports this.

Each command lives in `storyloom/commands/<name>.py` with a `register(app)` function, so commands
load their heavy imports only when they run.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import typer

from storyloom.errors import UserError

__all__ = ["app", "bench_app", "main"]

app = typer.Typer(
    name="storyloom",
    help="Fast, concurrent, crash-safe multi-agent LLM writing workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks; each prints its results as JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

_COMMANDS = ("sim", "serve", "worker", "apps", "run", "jobs", "keys", "tools")
_BENCHES = ("chapter", "engine", "gateway", "service", "openai", "chaos", "tools", "queue")


def _register_all() -> None:
    for name in _COMMANDS:
        _register(f"storyloom.commands.{name}", app)
    for name in _BENCHES:
        _register(f"storyloom.commands.bench_{name}", bench_app)
    _register_apps()


def _register_apps() -> None:
    """Each installed app's own sub-commands (e.g. the novel's `write`)."""
    from storyloom.registry import installed_apps

    for plugin in installed_apps():
        if plugin.cli is not None:
            plugin.cli(app)


def _register(module_name: str, target: typer.Typer) -> None:
    if importlib.util.find_spec(module_name) is None:
        return
    importlib.import_module(module_name).register(target)


_register_all()


def main() -> None:
    """Entry point: a UserError becomes one sentence and exit code 2, never a traceback."""
    try:
        app(standalone_mode=True)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
