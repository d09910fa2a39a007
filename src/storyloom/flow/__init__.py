"""The DAG engine: steps that start when their own inputs are done, fan-out, bounded loops, events."""

from storyloom.flow.coalesce import DeltaPacing
from storyloom.flow.context import Prompt, StepContext, StepLLM, StepServices
from storyloom.flow.engine import run_flow
from storyloom.flow.graph import Flow, OnError
from storyloom.flow.memory import ListSink, MemoryCheckpoints, NullSink
from storyloom.flow.results import Outcome, RunResult
from storyloom.flow.types import CheckpointStore, Event, EventKind, EventSink

__all__ = [
    "CheckpointStore",
    "DeltaPacing",
    "Event",
    "EventKind",
    "EventSink",
    "Flow",
    "ListSink",
    "MemoryCheckpoints",
    "NullSink",
    "OnError",
    "Outcome",
    "Prompt",
    "RunResult",
    "StepContext",
    "StepLLM",
    "StepServices",
    "run_flow",
]
