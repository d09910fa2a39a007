"""`App`: what a multi-agent application declares to run on the engine.

An app is data: a name, a pydantic input model, and either a `Flow` (the engine runs it as a
durable job: checkpointed steps, events, metered model calls) or a `handler` for jobs that are not
one flow (a book that enqueues chapters, a batch export). Everything else is optional and has a
default a newcomer need not think about:

- the result is the flow's last step's output (`result=` turns the run into a pydantic model or
  JSON instead), and the text answer is that result's `text` (`text=` says otherwise);
- called as a chat model (`/v1/chat/completions`, model `storyloom/<name>`), an input model with a
  single required string field takes the last user message (`from_messages=` says otherwise), and
  the answer streams while `answer_step` (default: the last step) streams;
- `tools` (the app's own `storyloom.tools.Tool`s, offered beside the built-ins),
  `routes` (a FastAPI router factory), `tables` (SQLAlchemy metadata with its alembic scripts),
  `schedules` (periodic jobs), `jobs` (more job kinds, named `<app>.<kind>`) and `cli` (sub-commands)
  plug the app into the API, the store, the scheduler and the CLI without editing any of them.

Apps are found by `storyloom.registry` through the entry-point group `storyloom.apps`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from storyloom.errors import ConfigError, InputError
from storyloom.flow import Flow, RunResult

if TYPE_CHECKING:
    import sqlalchemy as sa
    import typer
    from fastapi import APIRouter

    from storyloom.runner import AppJob
    from storyloom.tools.base import Tool

__all__ = ["App", "AppHandler", "AppTables", "Schedule", "default_from_messages"]

InputT = TypeVar("InputT", bound=BaseModel)

AppHandler = Callable[["AppJob[Any]"], Awaitable[Any]]
"""A job handler of an app: gets the job (validated input, model access, queue) and returns its
result (a pydantic model or JSON-compatible data)."""

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class AppTables:
    """An app's own tables: the folder of its alembic revisions (its own chain, with its own
    version table), and optionally their metadata (for tools that inspect them)."""

    migrations: Path
    metadata: sa.MetaData | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A periodic job of an app: `kind` is one of its job kinds, run every `every_s` seconds."""

    name: str
    kind: str
    every_s: float
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class App(Generic[InputT]):
    """A pluggable application. `flow` or `handler` (exactly one) does the main job's work."""

    name: str
    input: type[InputT]
    flow: Flow | None = None
    handler: AppHandler | None = None
    title: str = ""
    description: str = ""
    deps: Callable[[AppJob[InputT]], Any] | None = None  # the flow's `ctx.deps` for one job
    result: Callable[[RunResult], Any] | None = None  # the run's outputs -> the job's result
    text: Callable[[Any], str] | None = None  # the result -> a plain-text answer
    answer_step: str | None = None  # whose streamed text is the chat answer; default: the last step
    from_messages: Callable[[Sequence[Mapping[str, Any]]], InputT] | None = None
    routes: Callable[[], APIRouter] | None = None
    tables: AppTables | None = None
    schedules: Sequence[Schedule] = ()
    jobs: Mapping[str, AppHandler] = field(default_factory=dict)
    cli: Callable[[typer.Typer], None] | None = None
    tools: Sequence[Tool[Any]] = ()  # the app's own tools, beside the built-ins (ctx.tool, models)
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"app name {self.name!r} must be 1-40 lowercase letters, digits, '-' or '_', "
                "starting with a letter"
            )
        if (self.flow is None) == (self.handler is None):
            raise ConfigError(f"app {self.name!r} needs exactly one of flow= and handler=")
        if not (isinstance(self.input, type) and issubclass(self.input, BaseModel)):
            raise ConfigError(f"app {self.name!r}: input= must be a pydantic model class")
        for kind in self.jobs:
            if not _NAME.match(kind):
                raise ConfigError(f"app {self.name!r}: job kind {kind!r} is not a valid name")
        if self.flow is not None and self.answer_step is not None and self.answer_step not in self.flow:
            raise ConfigError(
                f"app {self.name!r}: answer_step {self.answer_step!r} is not a step of its flow"
            )

    # -- what the engine asks of an app ----------------------------------------------------------

    @property
    def kinds(self) -> dict[str, AppHandler | None]:
        """Job kind -> handler for every kind this app runs (None: the engine runs `flow`)."""
        out: dict[str, AppHandler | None] = {self.name: self.handler}
        out.update({f"{self.name}.{kind}": handler for kind, handler in self.jobs.items()})
        return out

    @property
    def display_title(self) -> str:
        return self.title or self.name.replace("-", " ").replace("_", " ").capitalize()

    def input_schema(self) -> dict[str, Any]:
        return self.input.model_json_schema()

    def final_step(self) -> str | None:
        """The step whose output is the default result (the flow's last declared step)."""
        if self.flow is None or not len(self.flow):
            return None
        return self.flow.step_names[-1]

    def streaming_step(self) -> str | None:
        """The step whose deltas are the chat answer."""
        return self.answer_step or self.final_step()

    def make_result(self, run: RunResult) -> Any:
        if self.result is not None:
            return self.result(run)
        last = self.final_step()
        return run.outputs.get(last) if last is not None else None

    def make_text(self, result: Any) -> str:
        """The plain-text answer: `text(result)`, else the result's `text`, else its JSON."""
        if self.text is not None:
            return self.text(result)
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        if isinstance(result, Mapping) and isinstance(result.get("text"), str):
            return str(result["text"])
        if isinstance(result, str):
            return result
        import json

        return json.dumps(result, ensure_ascii=False)

    def input_from_messages(self, messages: Sequence[Mapping[str, Any]]) -> InputT:
        if self.from_messages is not None:
            return self.from_messages(messages)
        return default_from_messages(self.input, messages)


def default_from_messages(model: type[InputT], messages: Sequence[Mapping[str, Any]]) -> InputT:
    """The last user message as the input: the value of a model's single required string field,
    or else a JSON object of the input itself."""
    from pydantic import ValidationError

    from storyloom.validation import from_validation

    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if last is None:
        raise InputError("the conversation has no user message to answer.")
    content = last.get("content")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    text = str(content or "")
    required = [n for n, f in model.model_fields.items() if f.is_required()]
    try:
        if len(required) == 1 and model.model_fields[required[0]].annotation is str:
            return model.model_validate({required[0]: text})
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise from_validation(exc, "the last user message") from exc
