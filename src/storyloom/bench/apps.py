"""Apps the benchmarks run (loaded with STORYLOOM_APPS=storyloom.bench.apps:<name>, never built in).

`echo`: a short planning step, then an answer step that streams: the shape of any chat app whose
last writing step is what the user reads (the OpenAI-compatible front streams it as content).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from storyloom.app import App
from storyloom.flow import Flow, StepContext

__all__ = ["EchoInput", "echo"]


class EchoInput(BaseModel):
    question: str = Field(min_length=1, max_length=20_000)


_flow = Flow("bench-echo")


@_flow.step()
async def plan(ctx: StepContext[Any]) -> dict[str, Any]:
    return {"text": await ctx.llm.text(f"Plan an answer to: {ctx.run_input.question}", stream=False)}


@_flow.step(after=("plan",))
async def answer(ctx: StepContext[Any]) -> dict[str, Any]:
    prompt = f"Question: {ctx.run_input.question}\nPlan: {ctx.inputs['plan']['text']}\nAnswer it."
    return {"text": await ctx.llm.text(prompt)}


echo: App[EchoInput] = App(
    name="bench-echo", title="Bench echo", input=EchoInput, flow=_flow, answer_step="answer"
)
