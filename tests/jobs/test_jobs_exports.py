"""The public surface of the job and store packages is explicit and importable."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "storyloom.store",
        "storyloom.store.database",
        "storyloom.store.schema",
        "storyloom.jobs",
        "storyloom.jobs.queue",
        "storyloom.jobs.events",
        "storyloom.jobs.durable",
        "storyloom.jobs.worker",
        "storyloom.serve.supervisor",
        "storyloom.jobs.schedule",
        "storyloom.jobs.maintenance",
        "storyloom.serve.worker_process",
        "storyloom.app",
    ],
)
def test_every_exported_name_exists(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__all__, module
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"


def test_job_status_sets() -> None:
    from storyloom.jobs import JobStatus

    assert {s.value for s in JobStatus.TERMINAL} == {"completed", "failed", "cancelled"}
    assert JobStatus("running") is JobStatus.RUNNING and not JobStatus.RUNNING.is_terminal
    assert JobStatus.FAILED == "failed"
