"""`storyloom write`: write one chapter with every agent of every version shown live.

Parse, resolve settings, validate, then call `novel.write_chapter`; with the default `sim` profile
the simulator runs in-process on loopback, so the command works with no key and no server.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from storyloom.errors import ConfigError, InputError

if TYPE_CHECKING:
    from storyloom.apps.novel.models import ChapterRequest, ChapterResult
    from storyloom.config import Settings
    from storyloom.sim import SimConfig

__all__ = ["degradation_lines", "register", "sim_config_for_write", "summary_line"]


def _chosen_by(result: ChapterResult) -> str:
    if result.chosen_by == "tie-break":
        rules = {m.tie_break for m in (result.judge.matches if result.judge else []) if m.tie_break}
        return f"tie: {', '.join(sorted(rules)) or 'tie-break'}"
    return f"chosen by {result.chosen_by}"


def summary_line(result: ChapterResult) -> str:
    """The CLI's last line: which version and why, its quality and length, tokens and cost."""
    chosen = result.chosen_version
    unit = "characters" if result.language == "zh" else "words"
    quality = f"quality {chosen.quality_score}" if chosen.quality_measured else "quality not measured"
    return (
        f"version {chosen.index} of {len(result.versions)} ({_chosen_by(result)}), {quality}, "
        f"{chosen.length} {unit} (length score {chosen.length_score:.0f}), "
        f"{result.usage.total_tokens} tokens, ${result.cost_usd:.4f}, {result.elapsed_s:.1f}s"
    )


def degradation_lines(result: ChapterResult) -> list[str]:
    """One line per degraded agent, so a default is never mistaken for the model's answer."""
    lines = []
    for d in result.degraded:
        where = d.agent if d.version is None else f"v{d.version} {d.agent}"
        lines.append(f"degraded: {where}: {d.reason}")
    return lines


def register(app: typer.Typer) -> None:
    @app.command("write")
    def write(
        outline: str | None = typer.Argument(None, help="The chapter outline (or use --input FILE)."),
        input_file: Path | None = typer.Option(None, "--input", "-i", help="A NovelInput as JSON or YAML."),
        versions: int | None = typer.Option(None, help="Candidate versions, 1-10 (default 2)."),
        max_parallel: int | None = typer.Option(None, help="Versions written at once, 1-10 (default 3)."),
        lang: str | None = typer.Option(None, "--lang", help="zh (default) or en."),
        target_length: int | None = typer.Option(None, help="Target length: zh characters / en words."),
        profile: str | None = typer.Option(None, help="Provider profile: sim, deepseek, openai, ark, ..."),
        base_url: str | None = typer.Option(None, help="Any OpenAI-compatible base URL."),
        model: str | None = typer.Option(None, help="Model name for every agent."),
        api_key: str | None = typer.Option(None, help="API key (default: from the environment)."),
        out: Path = typer.Option(Path("."), "--out", "-o", help="Directory for chapter.md and chapter.json."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ) -> None:
        """Write a chapter: plan, parallel agents and versions, a judge; saves chapter.md and chapter.json."""
        settings = _settings(profile=profile, base_url=base_url, model=model, api_key=api_key)
        request = _request(
            settings,
            outline=outline,
            input_file=input_file,
            versions=versions,
            max_parallel=max_parallel,
            lang=lang,
            target_length=target_length,
        )
        out_dir = _out_dir(out)
        result = _run(settings, request, quiet=quiet)
        md, js = _save(result, request, out_dir)
        for line in degradation_lines(result):
            typer.echo(line, err=True)
        typer.echo(f"wrote {md} and {js}: {summary_line(result)}")


def _settings(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    from storyloom.config import Settings
    from storyloom.validation import from_validation

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
        settings.provider()  # resolve now: a missing key or model is a one-sentence error up front
    except ValidationError as exc:
        raise from_validation(exc, "settings", error=ConfigError) from exc
    return settings


def _request(
    settings: Settings,
    *,
    outline: str | None,
    input_file: Path | None,
    versions: int | None,
    max_parallel: int | None,
    lang: str | None,
    target_length: int | None,
) -> ChapterRequest:
    from pydantic import ValidationError

    from storyloom.apps.novel.inputs import load_novel_input, novel_input_from
    from storyloom.apps.novel.models import ChapterRequest, input_error

    if lang is not None and lang not in ("zh", "en"):
        raise InputError(f"--lang must be zh or en, not {lang!r}.")
    for flag, value in (("--versions", versions), ("--max-parallel", max_parallel)):
        if value is not None and not 1 <= value <= 10:
            raise InputError(f"{flag} must be between 1 and 10 (got {value}).")
    overrides = {"language": lang, "target_length": target_length}
    if outline is not None and not outline.strip():
        raise InputError("the outline is empty: describe what happens in this chapter.")
    if input_file is not None:
        inp = load_novel_input(input_file, overrides={**overrides, "chapter_outline": outline})
    elif outline is not None:
        inp = novel_input_from({"chapter_outline": outline}, what="outline", overrides=overrides)
    else:
        raise InputError('give the chapter outline as text (storyloom write "...") or with --input FILE.')
    try:
        return ChapterRequest(
            input=inp,
            versions=versions or settings.writer_chapter_version_count,
            max_parallel=max_parallel or settings.writer_max_parallel_requests,
        )
    except ValidationError as exc:
        raise input_error(exc, "request") from exc


def _out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output directory {out}: {exc.strerror or exc}.") from exc
    return out


def sim_config_for_write(seed: int) -> SimConfig:
    """Realistic but quick: a short wait for the first token, then fast streaming."""
    from storyloom.sim import ModelProfile, SimConfig

    return SimConfig(seed=seed, default=ModelProfile(ttft_s=0.15, tokens_per_s=4000.0, answer_tokens=250))


def _run(settings: Settings, request: ChapterRequest, *, quiet: bool) -> ChapterResult:
    import asyncio

    return asyncio.run(_write(settings, request, quiet=quiet))


async def _write(settings: Settings, request: ChapterRequest, *, quiet: bool) -> ChapterResult:
    import contextlib
    import sys
    import uuid

    from rich.console import Console

    from storyloom.apps.novel.agents import AgentModels
    from storyloom.apps.novel.chapter import write_chapter
    from storyloom.apps.novel.display import ChapterDisplay, PlainProgress
    from storyloom.errors import AllVersionsFailedError, ProviderConnectionError, ProviderTimeout
    from storyloom.flow import NullSink
    from storyloom.llm.factory import build_client
    from storyloom.sim import serve_sim

    provider = settings.provider()
    async with contextlib.AsyncExitStack() as stack:
        sim_url = None
        if provider.is_simulated:
            sim = await stack.enter_async_context(serve_sim(sim_config_for_write(settings.sim_seed)))
            sim_url = sim.url
        else:
            assert provider.base_url is not None
            await _check_reachable(provider.base_url, provider.connect_timeout_s)
        client = build_client(settings, sim_url=sim_url)
        stack.push_async_callback(client.aclose)
        console = Console(stderr=True)
        display: Any
        if quiet:
            display = contextlib.nullcontext(NullSink())
        elif console.is_terminal:
            display = ChapterDisplay(request.versions, console=console)
        else:
            display = PlainProgress(request.versions, sys.stderr)
        with display as sink:
            try:
                return await write_chapter(
                    request,
                    client=client,
                    models=AgentModels.from_settings(settings),
                    run_id=uuid.uuid4().hex,
                    sink=sink,
                )
            except AllVersionsFailedError as exc:
                url = provider.base_url or sim_url
                if all(
                    any(name in e for name in (ProviderConnectionError.__name__, ProviderTimeout.__name__))
                    for e in exc.errors
                ):
                    raise ConfigError(f"cannot reach the model provider at {url}: {exc.errors[0]}.") from exc
                raise ConfigError(f"no version could be written with the provider at {url}: {exc}.") from exc
    raise AssertionError("unreachable")  # the block above always returns or raises


async def _check_reachable(base_url: str, timeout_s: float) -> None:
    """Fail fast, naming the URL, when nothing listens there (before any agent starts)."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the provider URL {base_url!r} is not an http(s) URL.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(min(timeout_s, 5.0)):
            _, writer = await asyncio.open_connection(parts.hostname, port)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ConfigError(f"cannot reach the model provider at {base_url}: {reason}.") from exc
    writer.close()


def _save(result: ChapterResult, request: ChapterRequest, out: Path) -> tuple[Path, Path]:
    chosen = result.chosen_version
    title = _title(request.input.chapter_outline, result.language)
    unit = "字" if result.language == "zh" else "words"
    header = (
        f"<!-- storyloom: version {chosen.index} of {len(result.versions)} ({chosen.style_hint}), "
        f"{_chosen_by(result)}; "
        f"{'quality ' + str(chosen.quality_score) if chosen.quality_measured else 'quality not measured'}; "
        f"{chosen.length} {unit}, "
        f"length score {chosen.length_score:.0f} -->"
    )
    md = out / "chapter.md"
    js = out / "chapter.json"
    try:
        md.write_text(f"{header}\n\n# {title}\n\n{chosen.text.strip()}\n", encoding="utf-8")
        js.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write into {out}: {exc.strerror or exc}.") from exc
    return md, js


def _title(outline: str, language: str) -> str:
    import re

    first = re.split(r"[。！？!?\n]|(?<=\w)\.\s", outline.strip(), maxsplit=1)[0].strip()
    limit = 30 if language == "zh" else 80
    return first if len(first) <= limit else first[: limit - 1] + "…"
