"""The durable job layer: queue, event log fan-out, checkpoints, workers and their supervisor."""

from storyloom.jobs.durable import DurableCheckpoints, GroupCommitWriter, JobEventSink
from storyloom.jobs.events import EventHub, Subscription
from storyloom.jobs.models import TERMINAL_EVENT_KINDS, Job, JobStatus, QueueStats, StoredEvent
from storyloom.jobs.queue import Heartbeat, JobQueue
from storyloom.jobs.waits import WaitFor

__all__ = [
    "TERMINAL_EVENT_KINDS",
    "DurableCheckpoints",
    "EventHub",
    "GroupCommitWriter",
    "Heartbeat",
    "Job",
    "JobEventSink",
    "JobQueue",
    "JobStatus",
    "QueueStats",
    "StoredEvent",
    "Subscription",
    "WaitFor",
]
