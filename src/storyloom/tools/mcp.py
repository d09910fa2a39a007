"""Tools from MCP servers: the official `mcp` SDK as client, over stdio or streamable HTTP.

Each server's tools are registered as ordinary `Tool`s named `<prefix><tool>` (prefix default
`<server name>_`: OpenAI function names allow letters, digits, `_` and `-` only), under the
server's `ToolPolicy` (limits, cache, breaker, degraded answer) and offered to models with the
server's own input schema. A call answers the tool's `structured_content` when it has one, else
`{"text": <its text contents joined>}`; an `is_error` answer is the tool's refusal (degraded, not
retried); a broken session is a transient failure, and the next call reconnects.

`STORYLOOM_MCP_SERVERS` (JSON/YAML text, or a file's path):

    servers:
      - name: files
        command: python            # stdio: the command and its args (and env)
        args: ["-m", "my_mcp_server"]
      - name: search
        url: http://127.0.0.1:8000/mcp   # streamable HTTP
        prefix: ""                       # register the tools under their own names
        tools: [lookup]                  # only these (default: all)
        policy: {calls_per_minute: 60, cache_ttl_s: 300}

Each session is owned by one task (the SDK's sessions live in anyio task groups, which must be
entered and left by the same task); calls from any task of the loop go through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from storyloom.errors import ConfigError
from storyloom.tools.base import Tool, ToolError, ToolPolicy
from storyloom.tools.registry import ToolRegistry

__all__ = ["McpConnection", "McpServerConfig", "load_mcp_servers", "mcp_tools", "register_mcp_servers"]

_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}


class McpServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    url: str | None = None
    prefix: str | None = None
    tools: list[str] | None = None
    policy: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=30.0, gt=0)  # connecting and listing tools

    def tool_name(self, tool: str) -> str:
        prefix = f"{self.name}_" if self.prefix is None else self.prefix
        return f"{prefix}{tool}"


def load_mcp_servers(text: str) -> list[McpServerConfig]:
    """The servers of `STORYLOOM_MCP_SERVERS`: a document `{servers: [...]}` or a list, or a path."""
    import yaml

    raw: Any = text
    path = Path(text)
    if "\n" not in text and len(text) < 4096 and path.suffix in (".json", ".yaml", ".yml") and path.exists():
        raw = path.read_text(encoding="utf-8")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"STORYLOOM_MCP_SERVERS is not JSON or YAML: {exc}") from exc
    items = doc.get("servers") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ConfigError("STORYLOOM_MCP_SERVERS must be a list of servers, or {servers: [...]}")
    try:
        servers = [McpServerConfig.model_validate(item) for item in items]
    except ValidationError as exc:
        from storyloom.validation import from_validation

        raise from_validation(exc, "STORYLOOM_MCP_SERVERS", error=ConfigError) from exc
    for s in servers:
        if (s.command is None) == (s.url is None):
            raise ConfigError(f"MCP server {s.name!r} needs exactly one of command (stdio) and url (HTTP)")
        ToolPolicy().with_overrides(s.policy)  # a wrong field is said at start, not at the first call
    return servers


class McpConnection:
    """One MCP server's session, owned by a background task; reconnects after a failure."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self._client: Any = None
        self._owner: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None
        self._connecting: asyncio.Future[Any] | None = None

    def _target(self) -> Any:
        from mcp import StdioServerParameters

        c = self.config
        if c.url is not None:
            return c.url
        assert c.command is not None
        return StdioServerParameters(command=c.command, args=list(c.args), env=c.env)

    async def _own(self, ready: asyncio.Future[Any]) -> None:
        from mcp import Client

        closing = self._closing = asyncio.Event()
        made: Any = None
        try:
            async with Client(self._target(), read_timeout_seconds=self.config.timeout_s) as client:
                made = client
                ready.set_result(client)
                await closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if self._client is made:  # not a newer session made meanwhile
                self._client = None

    async def client(self) -> Any:
        """The live session, connecting first if there is none. A caller that gives up (its
        timeout) does not stop the connection: the next call finds it made, or still coming."""
        if self._client is not None:
            return self._client
        loop = asyncio.get_running_loop()
        if self._connecting is None:
            ready: asyncio.Future[Any] = loop.create_future()
            self._connecting = ready
            self._owner = loop.create_task(self._own(ready), name=f"mcp:{self.config.name}")
        connecting = self._connecting
        try:
            async with asyncio.timeout(self.config.timeout_s):
                client = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._connecting is connecting:
                await self._stop()
            raise ToolError(
                f"MCP server {self.config.name!r} could not be reached: {type(exc).__name__}: {exc}"
            ) from exc
        if self._connecting is connecting:
            self._client = client
        return client

    async def list_tools(self) -> list[Any]:
        client = await self.client()
        return list((await client.list_tools()).tools)

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        client = await self.client()
        try:
            result = await client.call_tool(tool, arguments)
        except Exception as exc:  # the session is broken (server gone, protocol error): reconnect next time
            await self._stop()
            raise ToolError(f"MCP server {self.config.name!r}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            # Cancelled (the tool's timeout): a server that does not answer may be gone without the
            # session noticing, so the next call starts a new one; this one is closed in the background.
            if self._client is client:
                self._client, self._connecting = None, None
                self._retire(self._owner, self._closing)
            raise
        texts = [
            getattr(part, "text", "") for part in result.content or () if getattr(part, "type", "") == "text"
        ]
        if result.is_error:
            raise ToolError(
                f"{tool}: {' '.join(texts)[:300] or 'the tool reported an error'}", transient=False
            )
        if result.structured_content is not None:
            return result.structured_content
        return {"text": "\n".join(texts)}

    def _retire(self, owner: asyncio.Task[None] | None, closing: asyncio.Event | None) -> None:
        self._owner, self._closing = None, None
        if closing is not None:
            closing.set()
        if owner is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(5.0, owner.cancel)  # a session that does not close in time is cancelled

    async def _stop(self) -> None:
        owner, self._owner = self._owner, None
        self._client, self._connecting = None, None
        if self._closing is not None:
            self._closing.set()
        if owner is not None and not owner.done():
            try:
                async with asyncio.timeout(5.0):
                    await owner
            except TimeoutError:
                owner.cancel()
                with contextlib.suppress(BaseException):
                    await owner
            except BaseException:
                pass

    async def aclose(self) -> None:
        await self._stop()


def _input_model(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model that checks a call's arguments against the tool's JSON schema (types of
    the top-level properties and which are required; deeper rules are the server's to check)."""
    props = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    fields: dict[str, Any] = {}
    for key, prop in props.items():
        kind = _TYPES.get(str(prop.get("type"))) if isinstance(prop, dict) else None
        annotation: Any = kind if kind is not None else Any
        fields[key] = (annotation, ...) if key in required else (annotation | None, None)
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        f"Mcp_{name}", __config__=ConfigDict(extra="allow"), **fields
    )
    return model


def mcp_tools(connection: McpConnection, listed: Sequence[Any]) -> list[Tool[Any]]:
    """The `Tool`s of a server's listed tools, under its policy and with their own schemas."""
    config = connection.config
    policy = ToolPolicy().with_overrides(config.policy)
    out: list[Tool[Any]] = []
    for t in listed:
        if config.tools is not None and t.name not in config.tools:
            continue
        schema = dict(t.input_schema or {"type": "object", "properties": {}})
        model = _input_model(t.name, schema)
        remote = t.name

        async def run(args: BaseModel, _remote: str = remote) -> Any:
            return await connection.call(_remote, args.model_dump(exclude_none=True))

        out.append(
            Tool(
                name=config.tool_name(t.name),
                input=model,
                fn=run,
                description=t.description or "",
                policy=policy,
                schema=schema,
            )
        )
    return out


async def register_mcp_servers(registry: ToolRegistry, servers: Sequence[McpServerConfig]) -> None:
    """Connect each server, list its tools and register them; the sessions close with the registry."""
    for config in servers:
        connection = McpConnection(config)
        try:
            listed = await connection.list_tools()
        except ToolError as exc:
            await connection.aclose()
            raise ConfigError(str(exc)) from exc
        registry.extend(mcp_tools(connection, listed))
        registry.on_close(connection.aclose)
