"""The smallest app, exactly as the issue and docs/EXTENDING.md write it (kept working by tests)."""

from pydantic import BaseModel

from storyloom import App, Flow, StepContext


class HaikuInput(BaseModel):
    topic: str


flow = Flow("haiku")


@flow.step()
async def draft(ctx: StepContext) -> dict:
    return {"text": await ctx.llm.text(f"Write a haiku about {ctx.run_input.topic}.")}


@flow.step(after=("draft",))
async def polish(ctx: StepContext) -> dict:
    return {"text": await ctx.llm.text("Polish this haiku: " + ctx.inputs["draft"]["text"])}


app = App(name="haiku", input=HaikuInput, flow=flow)
