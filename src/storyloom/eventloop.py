"""`run`: asyncio.run on uvloop where it is installed (it comes with uvicorn[standard]).

The service's processes spend much of their CPU in the event loop itself (hundreds of sockets, tens
of thousands of callbacks a second); uvloop runs the same code with less of it. Elsewhere, and on
Windows, the standard loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

__all__ = ["cancel_all", "run"]

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


async def cancel_all(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel background tasks and wait until each has stopped, so a closed owner leaves none
    running against what it closes next (connections, backends)."""
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
