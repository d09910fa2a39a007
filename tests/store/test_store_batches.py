"""`Batcher`: concurrent calls served together, each caller with its own answer."""

from __future__ import annotations

import asyncio

import pytest

from storyloom.store.batches import Batcher


async def test_calls_arriving_together_are_served_together_each_with_its_own_answer() -> None:
    served: list[list[int]] = []

    async def serve(items: list[int]) -> list[int | Exception]:
        served.append(items)
        await asyncio.sleep(0.01)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(serve, max_batch=4)
    first = asyncio.ensure_future(batcher(0))
    await asyncio.sleep(0)  # the first call goes alone, at once
    outcomes = await asyncio.gather(first, *(batcher(i) for i in range(1, 7)), return_exceptions=True)
    assert served == [[0], [1, 2, 3, 4], [5, 6]]  # waiting callers go together, at most 4 a batch
    assert outcomes[0] == 0 and outcomes[2] == 20 and outcomes[6] == 60
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "odd 1"


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    calls = 0

    async def serve(items: list[str]) -> list[str | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database gone")
        return [s.upper() for s in items]

    batcher: Batcher[str, str] = Batcher(serve)
    with pytest.raises(ConnectionError):
        await batcher("a")
    assert await batcher("b") == "B"


async def test_a_caller_that_gave_up_before_its_batch_started_is_left_out() -> None:
    served: list[list[str]] = []
    release = asyncio.Event()

    async def serve(items: list[str]) -> list[str | Exception]:
        served.append(items)
        await release.wait()
        return items

    batcher: Batcher[str, str] = Batcher(serve)
    first = asyncio.ensure_future(batcher("first"))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(batcher("gone"))
    kept = asyncio.ensure_future(batcher("kept"))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    assert await first == "first" and await kept == "kept"
    await batcher.idle()
    assert served == [["first"], ["kept"]]
