"""The bench's cheap SSE frame reader agrees with a JSON parse of the frames the API writes."""

from __future__ import annotations

import json

from storyloom.api.sse import SseEvent, format_comment, format_event
from storyloom.bench.clients import parse_frame


def _frame(event: SseEvent) -> bytes:
    return format_event(event).removesuffix(b"\n\n")


def test_the_frames_fields_are_read_without_parsing_the_document() -> None:
    tricky = SseEvent(
        seq=12, kind="step.delta", step='w"ts":9', ts=1700000000.125, data={"ts": 5, "text": '"ts":1,'}
    )
    assert parse_frame(_frame(tricky)) == (12, "step.delta", 1700000000.125)
    last = SseEvent(seq=40, kind="job.completed", step=None, ts=1.5, data={})
    assert parse_frame(_frame(last)) == (40, "job.completed", 1.5)


def test_comments_and_frames_without_an_id_are_skipped() -> None:
    assert parse_frame(format_comment("ping 1.0").removesuffix(b"\n\n")) is None
    assert parse_frame(b'event: task\ndata: {"task_id": "x"}') is None


def test_a_frame_laid_out_otherwise_is_parsed_as_json() -> None:
    doc = {"seq": 3, "kind": "step.started", "step": "s", "ts": 2.25, "data": {}}
    frame = b"id: 3\ndata: " + json.dumps(doc, indent=1).encode()
    assert parse_frame(frame) == (3, "step.started", 2.25)
