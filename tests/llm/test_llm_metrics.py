"""The gateway's metric children: made once per label values, the same objects labels() gives."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter

from storyloom.llm.metrics import MetricChildren


def test_children_are_made_once_per_label_values_and_count_like_labels() -> None:
    registry = CollectorRegistry()
    requests = Counter("t_requests", "x", ["deployment", "outcome"], registry=registry)
    made: list[tuple[str, ...]] = []
    real = requests.labels

    def spy(*values: str) -> Any:
        made.append(values)
        return real(*values)

    requests.labels = spy  # type: ignore[method-assign]
    child = MetricChildren()
    for _ in range(5):
        child(requests, "d1", "ok").inc()
    child(requests, "d1", "fail").inc(2)
    assert made == [("d1", "ok"), ("d1", "fail")]
    assert child(requests, "d1", "ok") is real("d1", "ok")
    assert registry.get_sample_value("t_requests_total", {"deployment": "d1", "outcome": "ok"}) == 5
    assert registry.get_sample_value("t_requests_total", {"deployment": "d1", "outcome": "fail"}) == 2
