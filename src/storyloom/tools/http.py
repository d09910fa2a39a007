"""The HTTP side of tools: pooled aiohttp sessions per event loop, and status → `ToolError`.

Per loop because a session is bound to the loop that opened it (tests and the CLI run several
loops in one process); `close_sessions()` closes the current loop's when the runtime closes.
Calls to configured APIs (search backends) share the plain session; fetches of model-chosen URLs
get a session whose resolver refuses addresses by a rule (`tools.netguard`), one per rule.
"""

from __future__ import annotations

import asyncio
import weakref

import aiohttp

from storyloom.llm.client import parse_retry_after
from storyloom.tools.base import ToolError
from storyloom.tools.netguard import AddressRule, GuardedResolver

__all__ = ["close_sessions", "raise_for_status", "session"]

_SESSIONS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[AddressRule | None, aiohttp.ClientSession]
] = weakref.WeakKeyDictionary()


def session(guard: AddressRule | None = None) -> aiohttp.ClientSession:
    """The loop's session; with `guard`, one whose connections reach only addresses it allows."""
    loop = asyncio.get_running_loop()
    by_rule = _SESSIONS.setdefault(loop, {})
    s = by_rule.get(guard)
    if s is None or s.closed:
        # No aiohttp timeout: each call runs under its tool's own `timeout_s`.
        s = by_rule[guard] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0),
            connector=aiohttp.TCPConnector(
                limit=256,
                keepalive_timeout=30.0,
                resolver=GuardedResolver(guard) if guard is not None else None,
            ),
        )
    return s


async def close_sessions() -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for s in _SESSIONS.pop(loop, {}).values():
        if not s.closed:
            await s.close()


async def raise_for_status(response: aiohttp.ClientResponse, what: str) -> None:
    """A failed answer as a `ToolError`: 429 rate-limited (with Retry-After), 5xx/408 transient,
    401/403 the key refused, other 4xx the API's refusal of this input (not retried)."""
    status = response.status
    if status < 400:
        return
    body = (await response.read())[:300].decode("utf-8", "replace").strip()
    if status == 429:
        raise ToolError(
            f"{what} is rate limited (HTTP 429)",
            status=status,
            retry_after_s=parse_retry_after(response.headers),
            rate_limited=True,
        )
    if status >= 500 or status == 408:
        raise ToolError(f"{what} failed (HTTP {status}): {body[:120]}", status=status)
    if status in (401, 403):  # never the body: some APIs echo the key
        raise ToolError(f"{what} refused the API key (HTTP {status})", status=status, transient=False)
    raise ToolError(
        f"{what} refused the request (HTTP {status}): {body[:120]}", status=status, transient=False
    )
