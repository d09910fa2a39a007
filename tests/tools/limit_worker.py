"""One worker process of the shared-limit test: hammers web_search for a while, prints a JSON line.

limit_worker.py <limits_url> <sim_url> <seconds> <calls_per_window> <window_s> <concurrency>
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from storyloom.tools import (
    SimSearchBackend,
    ToolRegistry,
    ToolRuntime,
    search_policy,
    search_tool,
    tool_breaker,
)


async def main(url: str, sim_url: str, seconds: float, calls: int, window_s: float, concurrency: int) -> None:
    policy = search_policy(
        calls_per_minute=calls,
        window_s=window_s,
        max_concurrency=concurrency,
        cache_ttl_s=0.0,
        max_wait_s=0.5,
        retries=0,
        breaker=tool_breaker(minimum_calls=10_000),
    )
    runtime = ToolRuntime(
        ToolRegistry([search_tool(SimSearchBackend(sim_url), policy=policy)]), limits_url=url
    )
    outcomes: dict[str, int] = {}
    stop_at = time.monotonic() + seconds

    async def client(i: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            result = await runtime.call("web_search", {"query": f"p{i} q{n}"})
            key = result.reason or "ok"
            outcomes[key] = outcomes.get(key, 0) + 1

    try:
        await asyncio.gather(*(client(i) for i in range(concurrency * 2)))
    finally:
        await runtime.aclose()
    print(json.dumps(outcomes), flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], float(a[2]), int(a[3]), float(a[4]), int(a[5])))
