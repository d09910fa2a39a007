"""`Worker`: one process running many jobs at once in asyncio, under leases.

Per process: one claim loop, one heartbeat (a single UPDATE renewing every lease this worker holds
and reporting cancel requests and lost jobs), one group-commit writer for all runs' checkpoints
and events, one scheduler tick. A run is an asyncio task; cancelling it cancels the flow's steps.

Why a run stops early, and what happens to its job:
- cancel requested (seen on a heartbeat) -> `cancelled`;
- lease lost (another worker owns the job now) -> nothing: the new owner's writes win;
- the handler raised `WaitFor` -> the job is parked (`waiting`, no slot) until its children end or
  its signal arrives, then runs again from the top (checkpoints make that cheap);
- shutdown after the grace period -> leases released, the job is `pending` again and a re-run
  skips the steps already checkpointed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from storyloom import tracing
from storyloom.errors import is_permanent
from storyloom.heap import HeapTrimmer
from storyloom.jobs.context import Handler, JobContext
from storyloom.jobs.durable import DurableCheckpoints, GroupCommitWriter, JobEventSink
from storyloom.jobs.models import Job
from storyloom.jobs.queue import JobQueue
from storyloom.jobs.schedule import tick
from storyloom.jobs.waits import WaitFor
from storyloom.logs import get_logger
from storyloom.store.database import Database

__all__ = ["Worker", "WorkerConfig"]

_log = get_logger("storyloom.jobs.worker")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    concurrency: int = 100
    lease_s: float = 15.0  # a killed worker's jobs are claimable again after at most this long
    heartbeat_s: float = 1.0  # also the bound on how long a running job takes to see its cancel
    poll_s: float = 0.25  # claim interval while idle
    claim_batch: int = 50
    # With few slots free and jobs running, wait this long for more to free before claiming: a
    # claim is a write transaction whatever its size, and short jobs freeing slots one at a time
    # otherwise cost one claim each.
    claim_wait_s: float = 0.02
    grace_s: float = 10.0  # on stop: how long running jobs may finish before they are released
    max_rss_mb: float | None = None  # stop claiming above this resident size
    schedule_every_s: float | None = 5.0  # None: this worker does not tick the schedules
    worker_id: str | None = None


class Worker:
    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, Handler],
        *,
        config: WorkerConfig | None = None,
        services: Any = None,
        queue: JobQueue | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.handlers = dict(handlers)
        self.config = config or WorkerConfig()
        self.services = services
        self.queue = queue or JobQueue(db)
        self.id = self.config.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.writer = GroupCommitWriter(db, on_commit=on_commit)
        self.checkpoints = DurableCheckpoints(db, self.writer)
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._stop_reason: dict[str, str] = {}  # job id -> why we cancelled its task
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._proc = psutil.Process()
        self._memory_blocked = False
        self.completed = 0
        self.failed = 0
        self.started = 0
        # Freed pages back to the OS after bursts and under steady load (storyloom.heap).
        self._trimmer = HeapTrimmer()

    @property
    def running(self) -> int:
        return len(self._runs)

    def stop(self) -> None:
        """Stop claiming; `run` then waits up to `grace_s` for running jobs and returns."""
        self._stopping.set()
        self._slot_freed.set()

    async def run(self) -> None:
        """Claim and run jobs until `stop()`; then drain, release what is left, flush, return."""
        log = _log.bind(worker=self.id)
        await self.writer.start()
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        scheduler = (
            asyncio.create_task(self._schedule_loop(), name="scheduler")
            if self.config.schedule_every_s is not None
            else None
        )
        log.info("worker_started", concurrency=self.config.concurrency, lease_s=self.config.lease_s)
        try:
            await self._claim_loop()
        finally:
            await self._drain(log)
            for task in (heartbeat, scheduler):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await self.writer.stop()
            log.info("worker_stopped", completed=self.completed, failed=self.failed)

    # ---- loops ---------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        low_water = max(1, min(self.config.claim_batch, self.config.concurrency) // 2)
        while not self._stopping.is_set():
            free = self.config.concurrency - len(self._runs)
            if 0 < free < low_water and self._runs and self.config.claim_wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.claim_wait_s):
                        await self._stopping.wait()
                free = self.config.concurrency - len(self._runs)
            claimed: list[Job] = []
            if free > 0 and self._memory_ok():
                try:
                    claimed = await self.queue.claim(
                        self.id, limit=min(free, self.config.claim_batch), lease_s=self.config.lease_s
                    )
                except Exception as exc:
                    _log.warning("claim_failed", worker=self.id, error=str(exc))
            starts: dict[str, tuple[int, bool]] = {}
            if claimed and not self._stopping.is_set():
                try:
                    starts = await self.queue.run_starts([job.id for job in claimed])
                except Exception as exc:  # each run then looks for itself
                    _log.warning("run_starts_failed", worker=self.id, error=str(exc))
            for job in claimed:
                if self._stopping.is_set():  # claimed during shutdown: hand it straight back
                    await self.queue.release(self.id, [job.id])
                    continue
                run = self._run_job(job, starts.get(job.id))
                self._runs[job.id] = asyncio.create_task(run, name=f"job-{job.id}")
            if claimed and len(claimed) == min(free, self.config.claim_batch):
                continue  # more may be waiting
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_s):
                    await self._slot_freed.wait() if free <= 0 else await self._stopping.wait()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            if not self._runs:
                continue
            self._trimmer.maybe_trim()
            # Judge only the jobs this beat asked about: a job claimed while the UPDATE was in flight
            # is absent from the reply but its fresh lease is fine (treating it as lost cost attempts).
            sent = list(self._runs)
            try:
                hb = await self.queue.heartbeat(self.id, lease_s=self.config.lease_s, job_ids=sent)
            except Exception as exc:  # leases outlive a few missed beats; the fences guard the rest
                _log.warning("heartbeat_failed", worker=self.id, error=str(exc))
                continue
            for job_id in sent:
                task = self._runs.get(job_id)
                if task is None or job_id in self._stop_reason:
                    continue
                if job_id in hb.cancel_requested:
                    self._stop_reason[job_id] = "cancel"
                    task.cancel()
                elif job_id not in hb.owned and not task.done():
                    self._stop_reason[job_id] = "lost"
                    task.cancel()

    async def _schedule_loop(self) -> None:
        assert self.config.schedule_every_s is not None
        while True:
            try:
                await tick(self.queue)
            except Exception as exc:
                _log.warning("schedule_tick_failed", worker=self.id, error=str(exc))
            await asyncio.sleep(self.config.schedule_every_s)

    def _memory_ok(self) -> bool:
        limit = self.config.max_rss_mb
        if limit is None:
            return True
        rss_mb = self._proc.memory_info().rss / 1e6
        blocked = rss_mb > limit
        if blocked != self._memory_blocked:
            self._memory_blocked = blocked
            _log.warning(
                "memory_guard", worker=self.id, rss_mb=round(rss_mb), limit_mb=limit, claiming=not blocked
            )
        return not blocked

    # ---- one run -------------------------------------------------------------------------------

    async def _traceparent(self, job_id: str) -> str | None:
        """The submission's trace, from the job's first event (read only while tracing is on)."""
        first = await self.queue.events(job_id, 0, 1)
        value = first[0].data.get("traceparent") if first and first[0].kind == "job.submitted" else None
        return value if isinstance(value, str) else None

    async def _run_job(self, job: Job, start: tuple[int, bool] | None = None) -> None:
        """Run one claimed job. `start`: its last event seq and whether it has checkpoints, read for
        a whole claim at once (a burst of hundreds of jobs otherwise costs two queries each)."""
        log = _log.bind(worker=self.id, job=job.id, kind=job.kind, attempt=job.attempts)
        finalizing = False
        try:
            if job.cancel_requested:
                await self.queue.finish_cancelled(job.id, self.id)
                return
            handler = self.handlers.get(job.kind)
            if handler is None:
                await self.queue.fail(
                    job.id, self.id, f"no handler for job kind {job.kind!r}", retryable=False
                )
                return
            if start is None:
                sink = await JobEventSink.open(self.db, self.writer, job.id)
            else:
                sink = JobEventSink(self.writer, job.id, last_seq=start[0])
                if not start[1]:
                    self.checkpoints.known_empty.add(job.id)
            sink.append("job.started", {"worker": self.id, "attempt": job.attempts})
            ctx = JobContext(
                job=job,
                queue=self.queue,
                sink=sink,
                checkpoints=self.checkpoints,
                worker_id=self.id,
                services=self.services,
            )
            self.started += 1
            t0 = time.monotonic()
            log.debug("job_started")  # per-job lines at INFO cost a third of a no-op job's CPU
            try:
                if tracing.enabled():
                    with tracing.job_span(
                        job_id=job.id,
                        kind=job.kind,
                        tenant=job.tenant,
                        attempt=job.attempts,
                        worker=self.id,
                        traceparent=await self._traceparent(job.id),
                    ):
                        result = await handler(ctx)
                else:
                    result = await handler(ctx)
            except asyncio.CancelledError:
                finalizing = True
                await self._after_cancel(job, log)
                return
            except WaitFor as wait:
                finalizing = True
                await self.writer.flush()
                status = await self.queue.suspend(job.id, self.id, wait)
                log.info("job_waiting", wait=str(wait), now=status.value if status else "lease lost")
                return
            except Exception as exc:
                finalizing = True
                await self.writer.flush()
                error = f"{type(exc).__name__}: {exc}"
                status = await self.queue.fail(job.id, self.id, error, retryable=not is_permanent(exc))
                self.failed += 1
                log.warning("job_failed", error=error, now=status.value if status else "lease lost")
                return
            finalizing = True
            value = result if isinstance(result, dict) else {"value": result}
            # The completion commits with the run's last events (no ack before that commit).
            if await self.writer.commit_with(self.queue.completion(job.id, self.id, value)):
                self.queue.completed()
                self.completed += 1
                log.debug("job_completed", elapsed_s=round(time.monotonic() - t0, 3))
            else:
                log.warning("job_lease_lost_before_completion")
        except asyncio.CancelledError:
            if not finalizing:
                with contextlib.suppress(Exception):
                    await self._after_cancel(job, log)
        except Exception as exc:  # the database failed around the run: retry it later if we can
            log.error("job_bookkeeping_failed", error=str(exc))
            with contextlib.suppress(Exception):
                await self.queue.fail(job.id, self.id, f"worker bookkeeping failed: {exc}")
        finally:
            self._runs.pop(job.id, None)
            self._stop_reason.pop(job.id, None)
            self.checkpoints.known_empty.discard(job.id)
            job_ended = getattr(self.services, "job_ended", None)  # runner.WorkerServices
            if callable(job_ended):
                with contextlib.suppress(Exception):
                    job_ended(job.id)
            self._trimmer.done()
            if not self._runs:
                self._trimmer.maybe_trim(idle=True)
            self._slot_freed.set()

    async def _after_cancel(self, job: Job, log: Any) -> None:
        reason = self._stop_reason.get(job.id, "shutdown")
        await asyncio.shield(self.writer.flush())
        if reason == "cancel":
            await asyncio.shield(self.queue.finish_cancelled(job.id, self.id))
            log.info("job_cancelled")
        elif reason == "shutdown":
            await asyncio.shield(self.queue.release(self.id, [job.id]))
            log.info("job_released")
        else:
            log.warning("job_lease_lost")

    async def _drain(self, log: Any) -> None:
        if self._runs:
            log.info("worker_draining", running=len(self._runs), grace_s=self.config.grace_s)
            _, pending = await asyncio.wait(list(self._runs.values()), timeout=self.config.grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10.0)
        # Anything still leased (a run that could not release) goes back now, not after the lease.
        with contextlib.suppress(Exception):
            await self.queue.release(self.id)
