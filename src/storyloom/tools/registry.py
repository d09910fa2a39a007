"""`ToolRegistry`: the tools a process offers (built-ins, every app's own, MCP servers'), by name.

Names are unique across the sources: two different tools under one name is a configuration error
(said once, at start), never a silent override. A source that holds connections (an MCP server)
registers a closer, run by `aclose`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast, get_type_hints

from pydantic import BaseModel

from storyloom.errors import ConfigError
from storyloom.tools.base import Tool, ToolNotFoundError, ToolPolicy

__all__ = ["ToolRegistry", "tool"]

In = TypeVar("In", bound=BaseModel)


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool[Any]] = ()) -> None:
        self._tools: dict[str, Tool[Any]] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []
        for t in tools:
            self.add(t)

    def add(self, tool: Tool[Any], *, replace: bool = False) -> Tool[Any]:
        old = self._tools.get(tool.name)
        if old is not None and old is not tool and not replace:
            raise ConfigError(f"two different tools are named {tool.name!r}; rename one of them")
        self._tools[tool.name] = tool
        return tool

    def extend(self, tools: Iterable[Tool[Any]]) -> None:
        for t in tools:
            self.add(t)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run `closer` when the registry closes (an MCP session, an HTTP pool)."""
        self._closers.append(closer)

    def get(self, name: str) -> Tool[Any]:
        found = self._tools.get(name)
        if found is None:
            known = ", ".join(sorted(self._tools)) or "none"
            raise ToolNotFoundError(f"no tool named {name!r} (known: {known})")
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool[Any]]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    def specs(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """OpenAI `tools` entries for `names` (default: all), in the order given."""
        chosen = names if names is not None else self.names
        return [self.get(n).spec() for n in chosen]

    async def aclose(self) -> None:
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            await close()


def tool(
    name: str | None = None, *, description: str | None = None, policy: ToolPolicy | None = None
) -> Callable[[Callable[[In], Awaitable[Any]]], Tool[In]]:
    """Make a `Tool` of an async function taking one pydantic model:

        @tool(policy=ToolPolicy(calls_per_minute=60, cache_ttl_s=600))
        async def lookup(args: LookupInput) -> dict: ...

    The name defaults to the function's, the description to its docstring's first paragraph."""

    def wrap(fn: Callable[[In], Awaitable[Any]]) -> Tool[In]:
        hints = get_type_hints(fn)
        params = [v for k, v in hints.items() if k != "return"]
        if len(params) != 1 or not (isinstance(params[0], type) and issubclass(params[0], BaseModel)):
            raise ConfigError(f"tool function {fn.__name__!r} must take exactly one pydantic model argument")
        doc = (fn.__doc__ or "").strip().split("\n\n")[0].strip()
        model = cast("type[In]", params[0])
        return Tool(
            name=name or fn.__name__,
            input=model,
            fn=fn,
            description=description if description is not None else " ".join(doc.split()),
            policy=policy or ToolPolicy(),
        )

    return wrap
