"""`storyloom book ...`: a whole book from the terminal, over the same store as `storyloom serve`.

Commands that write (`new`, `write`, `choose` of a waiting run, `rewrite`) run a worker in this
process and show live progress on stderr; everything else only reads or edits the database.
Bad input is one sentence on stderr and exit code 2 (a `UserError`, as everywhere in the CLI).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from storyloom.errors import InputError

if TYPE_CHECKING:
    from storyloom.apps.novel.book.local import Local
    from storyloom.apps.novel.book.runs import BookRun
    from storyloom.config import Settings

__all__ = ["parse_range", "register"]

T = TypeVar("T")

_DATA_DIR = typer.Option(None, "--data-dir", help="Directory of the embedded SQLite database (as for serve).")
_DATABASE_URL = typer.Option(None, "--database-url", help="sqlite+aiosqlite:///… or postgresql+asyncpg://…")
_TENANT = typer.Option("default", "--tenant", help="The tenant the book belongs to.")
_PROFILE = typer.Option(None, "--profile", help="Provider profile: sim (default), deepseek, openai, ...")
_QUIET = typer.Option(False, "--quiet", "-q", help="No live progress.")


def parse_range(text: str) -> tuple[int, int]:
    """`3` or `1-3` (chapter numbers, inclusive)."""
    found = re.fullmatch(r"\s*(\d{1,6})\s*(?:-\s*(\d{1,6})\s*)?", text)
    if not found:
        raise InputError(f"--chapters must be a number or a range like 1-3, not {text!r}.")
    first = int(found.group(1))
    last = int(found.group(2) or first)
    if first < 1 or last < first:
        raise InputError(f"--chapters {text} is not a range of chapter numbers from 1 up.")
    return first, last


def _settings(data_dir: Path | None, database_url: str | None, profile: str | None = None) -> Settings:
    from pydantic import ValidationError

    from storyloom.config import Settings
    from storyloom.errors import ConfigError
    from storyloom.validation import from_validation

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    if profile is not None:
        overrides["profile"] = profile
    try:
        settings = Settings(**overrides)
        settings.provider()
    except ValidationError as exc:
        raise from_validation(exc, "settings", error=ConfigError) from exc
    return settings


def _run(settings: Settings, action: Callable[[Local], Awaitable[T]], *, worker: bool = False) -> T:
    from storyloom import eventloop
    from storyloom.apps.novel.book.local import local_engine
    from storyloom.logs import configure_logging

    configure_logging(level="WARNING", json=False)  # stdout is the command's answer; logs go to stderr

    async def main() -> T:
        async with local_engine(settings, worker=worker) as local:
            return await action(local)

    return eventloop.run(main())


class _Progress:
    """One line per change on stderr, or a live bar on a terminal."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self._last = ""

    def show(self, line: str) -> None:
        if self.quiet or line == self._last:
            return
        self._last = line
        if self.live:
            self.console.print(line, end="\r", soft_wrap=True, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.live and self._last:
            self.console.print()


def _run_line(run: BookRun) -> str:
    eta = run.eta_s()
    eta_text = f", ETA {eta:.0f}s" if eta is not None and not run.status.is_terminal else ""
    at = min(run.chapter, run.last)
    return (
        f"run {run.id[:8]} {run.status.value}: chapter {at} of {run.first}-{run.last} "
        f"({run.done}/{run.of} done), {run.tokens} tokens, ${run.cost_usd:.4f}{eta_text}"
    )


async def _follow(local: Local, run: BookRun, progress: _Progress) -> BookRun:
    """Until the run stops running (done, waiting for a choice, paused, stopped)."""
    import asyncio

    from storyloom.apps.novel.book.runs import RunStatus

    current: BookRun | None = run
    while current is not None and current.status is RunStatus.RUNNING:
        progress.show(_run_line(current))
        await asyncio.sleep(0.2)
        current = await local.control.runs.get(run.id)
    assert current is not None
    progress.show(_run_line(current))
    progress.done()
    return current


def _end_line(run: BookRun) -> str:
    if run.status.value == "waiting":
        command = f"storyloom book choose {run.book_id} {run.chapter} VERSION"
        return f"chapter {run.chapter} waits for your choice: {command}"
    if run.status.value == "stopped":
        return f"stopped ({run.stop_reason}): {run.error}"
    if run.status.value == "failed":
        return f"failed: {run.error}"
    return f"{run.status.value}: {run.done} chapters, {run.tokens} tokens, ${run.cost_usd:.4f}"


def register(app: typer.Typer) -> None:
    book_app = typer.Typer(
        help="A whole book: bible, outline, chapters, choices, exports.", no_args_is_help=True
    )
    app.add_typer(book_app, name="book")
    register_more(book_app)

    @book_app.command("new")
    def new(
        title: str = typer.Argument(..., help="The book's title."),
        premise: str = typer.Option(..., "--premise", help="What the book is about."),
        chapters: int = typer.Option(..., "--chapters", help="Chapters to outline, 1-500."),
        lang: str = typer.Option("en", "--lang", help="en or zh."),
        genre: str = typer.Option("", "--genre", help="The genre."),
        target_length: int | None = typer.Option(
            None, "--target-length", help="Per chapter: words (en) / characters (zh)."
        ),
        tenant: str = _TENANT,
        profile: str | None = _PROFILE,
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
        quiet: bool = _QUIET,
    ) -> None:
        """Create a book and generate its bible and outline; prints the book's id alone on the last line."""
        from pydantic import ValidationError

        from storyloom.apps.novel.book.plan import PLAN_JOB_KIND
        from storyloom.apps.novel.outline import BookPlanRequest
        from storyloom.apps.novel.projects import ProjectStore
        from storyloom.validation import from_validation

        if lang not in ("en", "zh"):
            raise InputError(f"--lang must be en or zh, not {lang!r}.")
        try:
            request = BookPlanRequest(
                title=title,
                premise=premise,
                chapters=chapters,
                language=lang,
                genre=genre,
                target_length=target_length,  # type: ignore[arg-type]
            )
        except ValidationError as exc:
            raise from_validation(exc, "the book") from exc
        if not title.strip() or not premise.strip():
            raise InputError("the title and the premise must not be blank.")
        settings = _settings(data_dir, database_url, profile)
        progress = _Progress(quiet)

        async def action(local: Local) -> tuple[str, dict[str, Any]]:
            import asyncio

            book = await ProjectStore(local.db).create_project(
                tenant=tenant, title=title, premise=premise, language=lang, genre=genre
            )
            job = await local.queue.submit(
                PLAN_JOB_KIND, {"book_id": book.id, "request": request.model_dump(mode="json")}, tenant=tenant
            )
            started = time.monotonic()
            while True:
                job = await local.queue.get(job.id)
                if job.status.is_terminal:
                    break
                steps = sum(
                    1 for e in await local.queue.events(job.id, limit=100_000) if e.kind == "step.finished"
                )
                progress.show(f"planning {title!r}: {steps} steps done, {time.monotonic() - started:.0f}s")
                await asyncio.sleep(0.25)
            progress.done()
            if job.status.value != "completed":
                raise InputError(f"the bible and outline could not be generated: {job.error}")
            return book.id, dict(job.result or {})

        book_id, result = _run(settings, action, worker=True)
        coverage = result.get("coverage") or {}
        typer.echo(
            f"outlined {result.get('chapters')} chapters "
            f"(coverage {'complete' if coverage.get('ok') else 'repaired'}), "
            f"${float(result.get('cost_usd') or 0):.4f}"
        )
        for reason in result.get("degraded") or []:
            typer.echo(f"degraded: {reason}", err=True)
        typer.echo(book_id)

    @book_app.command("write")
    def write(
        book: str = typer.Argument(..., help="The book's id or title."),
        chapters: str = typer.Option(..., "--chapters", help="A chapter or a range, e.g. 1-3."),
        versions: int = typer.Option(2, "--versions", help="Versions per chapter, 1-10."),
        chooser: str = typer.Option("judge", "--chooser", help="judge (default) or author."),
        cost_cap: float | None = typer.Option(
            None, "--cost-cap", help="Stop before the run would cost more (USD)."
        ),
        tenant: str = _TENANT,
        profile: str | None = _PROFILE,
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
        quiet: bool = _QUIET,
    ) -> None:
        """Write chapters in order, N versions each; the judge chooses, or the run waits for you."""
        from storyloom.apps.novel.book.runs import Chooser
        from storyloom.apps.novel.book.view import find_book

        first, last = parse_range(chapters)
        if not 1 <= versions <= 10:
            raise InputError(f"--versions must be between 1 and 10 (got {versions}).")
        if chooser not in ("judge", "author"):
            raise InputError(f"--chooser must be judge or author, not {chooser!r}.")
        if cost_cap is not None and not cost_cap > 0:
            raise InputError(f"--cost-cap must be more than 0 (got {cost_cap}).")
        settings = _settings(data_dir, database_url, profile)
        progress = _Progress(quiet)

        async def action(local: Local) -> BookRun:
            found = await find_book(local.db, book, tenant=tenant)
            run = await local.control.start(
                found,
                first=first,
                last=last,
                versions=versions,
                chooser=Chooser(chooser),
                cost_cap_usd=cost_cap,
            )
            return await _follow(local, run, progress)

        typer.echo(_end_line(_run(settings, action, worker=True)))

    @book_app.command("status")
    def status(
        book: str = typer.Argument(..., help="The book's id or title."),
        as_json: bool = typer.Option(False, "--json", help="JSON: every outlined chapter."),
        tenant: str = _TENANT,
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
    ) -> None:
        """Every outlined chapter: number, title, state, chosen version, length, cost."""
        from storyloom.apps.novel.book.view import chapter_states, find_book

        async def action(local: Local) -> tuple[Any, list[Any], list[Any]]:
            found = await find_book(local.db, book, tenant=tenant)
            return (
                found,
                await chapter_states(local.db, found),
                await local.control.runs.of_book(found.id, limit=5),
            )

        found, states, runs = _run(_settings(data_dir, database_url), action)
        if as_json:
            doc = {
                "book_id": found.id,
                "title": found.title,
                "chapters": [
                    {k: v for k, v in c.to_dict().items() if k not in ("chapter_id", "outline", "summary")}
                    for c in states
                ],
                "runs": [
                    {
                        "id": r.id,
                        "status": r.status.value,
                        "chapter": r.chapter,
                        "done": r.done,
                        "of": r.of,
                        "cost_usd": round(r.cost_usd, 8),
                        "tokens": r.tokens,
                    }
                    for r in runs
                ],
            }
            typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{found.title} ({found.id})")
        for col in ("#", "title", "state", "chosen", "length", "cost", "stale because"):
            table.add_column(col)
        for c in states:
            table.add_row(
                str(c.number),
                c.title,
                c.state,
                str(c.chosen_version or "-"),
                str(c.length),
                f"${c.cost_usd:.4f}",
                c.stale_reason or "",
            )
        Console().print(table)
        for r in runs[:1]:
            typer.echo(_run_line(r))

    @book_app.command("outline")
    def outline(
        book: str = typer.Argument(..., help="The book's id or title."),
        as_json: bool = typer.Option(False, "--json", help="As JSON."),
        tenant: str = _TENANT,
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
    ) -> None:
        """The outlined chapters: number, title, summary."""
        from storyloom.apps.novel.book.view import find_book
        from storyloom.apps.novel.projects import ProjectStore

        async def action(local: Local) -> list[Any]:
            found = await find_book(local.db, book, tenant=tenant)
            return await ProjectStore(local.db).list_chapters(found.id)

        chapters = _run(_settings(data_dir, database_url), action)
        if as_json:
            typer.echo(
                json.dumps(
                    [{"number": c.index, "title": c.title, "summary": c.outline} for c in chapters],
                    ensure_ascii=False,
                    indent=2,
                )
            )
            return
        for c in chapters:
            typer.echo(f"{c.index:>4}. {c.title}: {c.outline}")

    @book_app.command("choose")
    def choose(
        book: str = typer.Argument(..., help="The book's id or title."),
        chapter: int = typer.Argument(..., help="The chapter's number."),
        version: int = typer.Argument(..., help="The version's number (see `book status`)."),
        tenant: str = _TENANT,
        profile: str | None = _PROFILE,
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
        quiet: bool = _QUIET,
    ) -> None:
        """Choose a chapter's version; a run waiting for it goes on (here, with live progress)."""
        from storyloom.apps.novel.book.runs import RunStatus
        from storyloom.apps.novel.book.view import find_book, numbered_versions
        from storyloom.apps.novel.projects import ProjectStore

        settings = _settings(data_dir, database_url, profile)
        progress = _Progress(quiet)

        async def action(local: Local) -> str:
            found = await find_book(local.db, book, tenant=tenant)
            store = ProjectStore(local.db)
            row = next((c for c in await store.list_chapters(found.id) if c.index == chapter), None)
            if row is None:
                raise InputError(f"book {found.title!r} has no chapter {chapter}.")
            versions = numbered_versions(await store.list_versions(row.id))
            picked = next((v for n, v in versions if n == version), None)
            if picked is None:
                raise InputError(
                    f"chapter {chapter} has {len(versions)} versions; there is no version {version}."
                )
            waiting = [
                r.id
                for r in await local.control.runs.active(found.id)
                if r.status is RunStatus.WAITING and r.chapter == chapter
            ]
            await local.control.choose(found, row, picked)
            line = f"chapter {chapter}: version {version} chosen"
            for run_id in waiting:
                run = await local.control.runs.get(run_id)
                if run is not None:
                    line = _end_line(await _follow(local, run, progress))
            return line

        typer.echo(_run(settings, action, worker=True))

    @book_app.command("export")
    def export(
        book: str = typer.Argument(..., help="The book's id or title."),
        fmt: str = typer.Option(..., "--format", help="md, txt, epub or docx."),
        out: Path = typer.Option(..., "--out", help="The file to write."),
        author: str = typer.Option("storyloom", "--author", help="The author's name in the metadata."),
        tenant: str = _TENANT,
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
    ) -> None:
        """The chosen chapters as one file."""
        from storyloom.apps.novel.book.export import FORMATS, export_book
        from storyloom.apps.novel.book.view import chapter_states, find_book

        if fmt not in FORMATS:
            raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}.")
        if out.exists() and out.is_dir():
            raise InputError(f"--out {out} is a directory; give a file name.")

        async def action(local: Local) -> Any:
            found = await find_book(local.db, book, tenant=tenant)
            return export_book(
                found, await chapter_states(local.db, found, with_text=True), fmt, author=author
            )

        result = _run(_settings(data_dir, database_url), action)
        try:
            out.write_bytes(result.data)
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc.strerror or exc}.") from exc
        missing = f"; not chosen yet: {', '.join(map(str, result.missing[:20]))}" if result.missing else ""
        typer.echo(f"wrote {out}: {result.chapters} chapters ({len(result.data)} bytes){missing}")

    @book_app.command("eval")
    def evaluate(
        book: str = typer.Argument(..., help="The book's id or title."),
        as_json: bool = typer.Option(False, "--json", help="As JSON."),
        tenant: str = _TENANT,
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
    ) -> None:
        """Quality measures of every chosen chapter and their trend across the book."""
        from storyloom.apps.novel.book.view import find_book
        from storyloom.apps.novel.bookstore import BookStore
        from storyloom.apps.novel.quality import book_eval

        async def action(local: Local) -> dict[str, Any]:
            found = await find_book(local.db, book, tenant=tenant)
            return (await book_eval(BookStore(local.db), found.id, tenant=tenant)).model_dump(mode="json")

        doc = _run(_settings(data_dir, database_url), action)
        if as_json:
            typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        def cell(v: Any) -> str:
            return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

        table = Table(title="quality per chapter")
        cols = (
            "number",
            "length",
            "length_score",
            "quality_score",
            "repetition",
            "slop",
            "continuity_issues",
        )
        for col in cols:
            table.add_column(col)
        for row in doc["chapters"]:
            table.add_row(*(cell(row[c]) for c in cols))
        Console().print(table)
        for metric, t in doc["trend"].items():
            if t is not None:
                flag = " DEGRADED" if t["degraded"] else ""
                typer.echo(f"{metric}: {t['first']:.2f} -> {t['last']:.2f} (slope {t['slope']:+.4f}){flag}")


def register_more(book_app: typer.Typer) -> None:
    @book_app.command("rewrite")
    def rewrite(
        book: str = typer.Argument(..., help="The book's id or title."),
        chapter: int = typer.Argument(..., help="The chapter's number."),
        start: int = typer.Option(..., "--start", help="First character of the passage in the chosen text."),
        end: int = typer.Option(..., "--end", help="One past its last character."),
        instruction: str = typer.Option(..., "--instruction", help='e.g. "more tension", "shorter".'),
        candidates: int = typer.Option(2, "--candidates", help="Candidate rewrites, 1-5."),
        accept: int | None = typer.Option(None, "--accept", help="Accept this candidate at once."),
        as_json: bool = typer.Option(False, "--json", help="The candidates as JSON."),
        tenant: str = _TENANT,
        profile: str | None = _PROFILE,
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
    ) -> None:
        """Candidate rewrites of a passage in the chapter's voice; `--accept N` makes one the text."""
        import asyncio

        from storyloom.apps.novel.book.control import REMEMBER_JOB_KIND, REWRITE_JOB_KIND
        from storyloom.apps.novel.book.view import find_book
        from storyloom.apps.novel.bookstore import BookStore
        from storyloom.apps.novel.projects import ProjectStore

        if not 1 <= candidates <= 5:
            raise InputError(f"--candidates must be between 1 and 5 (got {candidates}).")
        if not instruction.strip():
            raise InputError("--instruction must say what to change.")
        settings = _settings(data_dir, database_url, profile)

        async def wait(local: Local, job_id: str) -> Any:
            while True:
                job = await local.queue.get(job_id)
                if job.status.is_terminal:
                    return job
                await asyncio.sleep(0.1)

        async def action(local: Local) -> dict[str, Any]:
            found = await find_book(local.db, book, tenant=tenant)
            chosen = await BookStore(local.db).chosen_text(found.id, chapter, tenant=tenant)
            if chosen is None:
                raise InputError(f"chapter {chapter} of {found.title!r} has no chosen text to rewrite yet.")
            if not 0 <= start < end <= len(chosen.text):
                raise InputError(
                    f"the passage {start}-{end} is not within the chosen text (0-{len(chosen.text)})."
                )
            job = await local.queue.submit(
                REWRITE_JOB_KIND,
                {
                    "book_id": found.id,
                    "chapter": chapter,
                    "version_id": chosen.version_id,
                    "start": start,
                    "end": end,
                    "instruction": instruction,
                    "candidates": candidates,
                },
                tenant=tenant,
                priority=7,
            )
            job = await wait(local, job.id)
            if job.status.value != "completed":
                raise InputError(f"the rewrite failed: {job.error}")
            result = dict(job.result or {})
            result["job_id"] = job.id
            if accept is not None:
                row = next(
                    c for c in await ProjectStore(local.db).list_chapters(found.id) if c.index == chapter
                )
                await local.control.accept_rewrite(found, row, job.id, accept)
                version = await ProjectStore(local.db).get_chapter(row.id)
                assert version is not None and version.current_version_id is not None
                remember = await local.queue.submit(  # the accept's own memory job (same idempotency key)
                    REMEMBER_JOB_KIND,
                    {"book_id": found.id, "chapter": chapter},
                    priority=7,
                    idempotency_key=f"remember:{version.current_version_id}",
                    tenant=tenant,
                )
                await wait(local, remember.id)
                result["accepted"] = accept
            return result

        result = _run(settings, action, worker=True)
        if as_json:
            typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
            return
        for i, c in enumerate(result.get("candidates") or [], start=1):
            typer.echo(f"--- candidate {i} ---\n{c['passage']}")
        if result.get("accepted"):
            typer.echo(
                f"candidate {result['accepted']} is chapter {chapter}'s text; later chapters are stale."
            )
        else:
            typer.echo(f"rewrite job {result['job_id']}: accept one with --accept N, or via the API.")

    @book_app.command("memory")
    def memory(
        book: str = typer.Argument(..., help="The book's id or title."),
        as_json: bool = typer.Option(False, "--json", help="As JSON."),
        at: int | None = typer.Option(None, "--at", help="As it stood before this chapter."),
        tenant: str = _TENANT,
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
    ) -> None:
        """The story memory: open foreshadowing, character sheets, each chapter's summary."""
        from storyloom.apps.novel.book.view import find_book
        from storyloom.apps.novel.bookstore import BookStore

        async def action(local: Local) -> dict[str, Any]:
            found = await find_book(local.db, book, tenant=tenant)
            books = BookStore(local.db)
            return {
                "book_id": found.id,
                "chapters": [
                    m.model_dump(mode="json") for m in await books.memory(found.id, tenant=tenant, upto=at)
                ],
                "open_foreshadowing": [
                    t.model_dump(mode="json")
                    for t in await books.open_foreshadowing(found.id, tenant=tenant, at_chapter=at)
                ],
                "characters": [
                    c.model_dump(mode="json")
                    for c in await books.character_sheets(found.id, tenant=tenant, upto=at)
                ],
            }

        doc = _run(_settings(data_dir, database_url), action)
        if as_json:
            typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
            return
        typer.echo("open foreshadowing:")
        for t in doc["open_foreshadowing"]:
            due = " (due)" if t.get("due") else ""
            typer.echo(f"  {t['key']}: opened in {t['opened_in']}{due} {t.get('detail', '')}")
        typer.echo("characters:")
        for c in doc["characters"]:
            state = "alive" if c.get("alive", True) else f"dead (chapter {c.get('died_in')})"
            typer.echo(
                f"  {c['name']}: {state}, at {c.get('location') or '?'}, "
                f"last seen {c.get('last_seen') or '-'}"
            )
        typer.echo("chapters:")
        for m in doc["chapters"]:
            typer.echo(f"  {m['number']}: {m['memory'].get('summary', '')}")
