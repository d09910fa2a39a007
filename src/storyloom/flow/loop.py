"""The bounded loop step: revise while a condition is false, at most K rounds, each round checkpointed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storyloom.flow.context import StepContext
    from storyloom.flow.graph import Flow

__all__ = ["LoopStep"]


@dataclass(slots=True, frozen=True)
class LoopStep:
    """The step function `Flow.loop` installs. Round k is the sub-flow `<loop path>/r<k>/...`.

    If the body's `output` step was skipped (None), the loop stops and keeps the previous state:
    there is nothing better to continue from.
    """

    body: Flow
    initial: Callable[[StepContext], Any]
    until: Callable[[Any], bool]
    max_rounds: int
    output: str

    async def __call__(self, ctx: StepContext) -> dict[str, Any]:
        state = self.initial(ctx)
        rounds = 0
        while rounds < self.max_rounds and not self.until(state):
            rounds += 1
            result = await ctx.subflow(self.body, state, f"r{rounds}")
            new_state = result.outputs.get(self.output)
            if new_state is None:
                break
            state = new_state
        return {"state": state, "rounds": rounds}
