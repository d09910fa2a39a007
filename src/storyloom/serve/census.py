"""The supervisor's live worker count, shared with the API processes that do not host it.

`storyloom serve` runs the supervisor in its parent process; extra API processes (`--api-processes`)
must still answer /api/health with the same count, or a health check would pass or fail depending on
which process its connection reached. The parent rewrites a small JSON file (atomically, by rename)
every `every_s`; a reader treats a file older than `stale_s` as zero workers, so an API process
whose parent died reports itself degraded instead of healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["CensusReader", "write_census_forever"]


async def write_census_forever(path: Path, count: Callable[[], int], *, every_s: float = 0.5) -> None:
    """Keep `path` current until cancelled; removes it on the way out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        while True:
            tmp.write_text(json.dumps({"workers": count(), "at": time.time()}))
            os.replace(tmp, path)
            await asyncio.sleep(every_s)
    finally:
        for leftover in (tmp, path):
            with contextlib.suppress(OSError):
                leftover.unlink()


class CensusReader:
    """`ApiOptions.worker_count` for an API process that reads the parent's census file."""

    def __init__(self, path: Path, *, stale_s: float = 5.0) -> None:
        self.path = path
        self.stale_s = stale_s

    async def __call__(self) -> int:
        try:
            doc = json.loads(self.path.read_text())
            workers, at = int(doc["workers"]), float(doc["at"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        return workers if time.time() - at <= self.stale_s else 0
