"""The kit every LLM step uses: metered calls through the gateway, defensive structured output,
prose with cut-stream handling, and `ctx.llm` (one usage type: `storyloom.llm.Usage`)."""

from storyloom.agents.call import AgentCall, CallRecord, OnCall
from storyloom.agents.handle import LLMHandle, ModelChoice, RunLLM, agent_call, as_messages
from storyloom.agents.parsing import Parsed, json_candidates, parse_structured, prompt_schema
from storyloom.agents.prose import ask_text, clean_prose
from storyloom.agents.run import AgentRun
from storyloom.agents.services import RunServices, ToolCaller
from storyloom.agents.structured import (
    JSON_MAX_TOKENS,
    NOT_DEGRADABLE,
    ask_json,
    schema_block,
    stricter,
    wire_schema,
)
from storyloom.agents.tool_loop import ToolLoop, parse_arguments, run_tool_loop

__all__ = [
    "JSON_MAX_TOKENS",
    "NOT_DEGRADABLE",
    "AgentCall",
    "AgentRun",
    "CallRecord",
    "LLMHandle",
    "ModelChoice",
    "OnCall",
    "Parsed",
    "RunLLM",
    "RunServices",
    "ToolCaller",
    "ToolLoop",
    "agent_call",
    "as_messages",
    "ask_json",
    "ask_text",
    "clean_prose",
    "json_candidates",
    "parse_arguments",
    "parse_structured",
    "prompt_schema",
    "run_tool_loop",
    "schema_block",
    "stricter",
    "wire_schema",
]
