"""`storyloom tools`: the tools this installation offers (built-ins, apps', MCP servers'), and one call.

    storyloom tools [--json]                                  list with their policies
    storyloom tools call web_search --input '{"query": "tea"}' [--json]   one call, as a step makes it

A call runs under the tool's policy and shared limits (the same store the workers use), so an
operator sees exactly what a step would get, degraded answers included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from storyloom.errors import InputError

__all__ = ["register"]


def _policy(tool: Any) -> dict[str, Any]:
    p = tool.policy
    return {
        "max_concurrency": p.max_concurrency,
        "calls_per_minute": p.calls_per_minute,
        "timeout_s": p.timeout_s,
        "retries": p.retries,
        "cache_ttl_s": p.cache_ttl_s,
        "max_wait_s": p.max_wait_s,
    }


def register(app: typer.Typer) -> None:
    tools_app = typer.Typer(help="The tools steps and models may call.", invoke_without_command=True)
    app.add_typer(tools_app, name="tools")

    @tools_app.callback()
    def list_tools(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="The data directory."),
    ) -> None:
        """List every tool with its policy (MCP servers' are connected to list theirs)."""
        if ctx.invoked_subcommand is not None:
            return
        from storyloom import eventloop

        rows = eventloop.run(_list(data_dir))
        if as_json:
            typer.echo(json.dumps({"tools": rows}, ensure_ascii=False, indent=2))
            return
        for row in rows:
            p = row["policy"]
            limits = f"{p['calls_per_minute'] or '-'}/min, {p['max_concurrency'] or '-'} at once"
            typer.echo(f"{row['name']:<20} {limits}, cache {p['cache_ttl_s']:g} s  {row['description']}")

    @tools_app.command("call")
    def call(
        name: str = typer.Argument(..., help="The tool's name."),
        input_json: str = typer.Option("{}", "--input", help="The arguments as a JSON object."),
        tenant: str = typer.Option("default", "--tenant"),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="The data directory."),
    ) -> None:
        """Call one tool and print its result (`degraded` says when it answered without the tool)."""
        try:
            arguments = json.loads(input_json)
        except json.JSONDecodeError as exc:
            raise InputError(f"--input is not valid JSON: {exc.msg} at character {exc.pos}.") from exc
        if not isinstance(arguments, dict):
            raise InputError("--input must be a JSON object of the tool's arguments.")
        from storyloom import eventloop

        result = eventloop.run(_call(data_dir, name, arguments, tenant))
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))


async def _runtime(data_dir: Path | None) -> Any:
    from storyloom.commands._settings import load_settings
    from storyloom.registry import installed_apps
    from storyloom.tools.setup import build_tool_runtime

    settings = load_settings(data_dir=data_dir, database_url=None)
    runtime = build_tool_runtime(settings, [t for a in installed_apps() for t in a.tools])
    await runtime.ready()
    return runtime


async def _list(data_dir: Path | None) -> list[dict[str, Any]]:
    runtime = await _runtime(data_dir)
    try:
        return [
            {"name": t.name, "description": t.description, "policy": _policy(t), "parameters": t.parameters()}
            for t in sorted(runtime.registry, key=lambda t: t.name)
        ]
    finally:
        await runtime.aclose()


async def _call(data_dir: Path | None, name: str, arguments: dict[str, Any], tenant: str) -> dict[str, Any]:
    from storyloom.tools.base import ToolCallMeta

    runtime = await _runtime(data_dir)
    try:
        result = await runtime.call(name, arguments, ToolCallMeta(tenant=tenant))
    finally:
        await runtime.aclose()
    out: dict[str, Any] = result.to_dict()
    return out
