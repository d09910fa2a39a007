"""The DAG engine: steps that start when their own inputs are done, fan-out, bounded loops, events."""

from storyloom.flow.types import CheckpointStore, Event, EventKind, EventSink

__all__ = ["CheckpointStore", "Event", "EventKind", "EventSink"]
