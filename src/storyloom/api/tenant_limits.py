"""Per-tenant limits of the HTTP API: what each tenant may have at once and submit per minute.

`STORYLOOM_TENANT_LIMITS` (JSON or YAML text, or the path of such a file) maps tenants to limits,
`"*"` being everyone's default; a tenant's entry overrides the fields it names:

    {"*": {"max_jobs": 20, "submissions_per_minute": 60, "max_streams": 10},
     "studio": {"max_jobs": 200, "submissions_per_minute": null}}

`max_jobs` (queued + running) and `submissions_per_minute` are counted in the database, in the
transaction that stores a submission (`jobs.intake.TenantCaps`), so every API process of a
deployment shares them. `max_streams` counts open SSE streams in each API process (`StreamSlots`),
and across processes and nodes when they share a limits store (api/shared_streams.py). The token
and cost budgets per day and month are the gateway's (`BudgetCheck`): a submission of a tenant
already over one is refused.
Over any limit: `TenantLimitError`, HTTP 429 with Retry-After and a sentence naming the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from storyloom.errors import ConfigError, ProviderError, TenantLimitError
from storyloom.jobs.intake import TenantCaps
from storyloom.logs import get_logger

__all__ = [
    "BudgetCheck",
    "BudgetGate",
    "BudgetVerdict",
    "StreamSlots",
    "TenantLimits",
    "TenantLimitsConfig",
    "parse_tenant_limits",
]

_STREAM_RETRY_S = 5.0  # a tenant at its stream limit: when one of its streams may have ended
_NEVER_RETRY_S = 86_400.0  # a spent lifetime budget: no retry helps until an operator raises it
_log = get_logger("storyloom.api")


class TenantLimits(BaseModel):
    """One tenant's limits; None: unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_jobs: int | None = Field(default=None, ge=1, description="queued + running jobs")
    submissions_per_minute: int | None = Field(default=None, ge=1, description="accepted jobs, last 60 s")
    max_streams: int | None = Field(default=None, ge=1, description="open SSE streams per API process")

    def caps(self) -> TenantCaps | None:
        caps = TenantCaps(max_jobs=self.max_jobs, per_minute=self.submissions_per_minute)
        return caps if caps.any else None


class TenantLimitsConfig(RootModel[dict[str, TenantLimits]]):
    """Tenant -> limits; `"*"` is the default every tenant starts from."""

    def for_tenant(self, tenant: str) -> TenantLimits:
        base = self.root.get("*", TenantLimits())
        own = self.root.get(tenant)
        if own is None:
            return base
        return base.model_copy(update={name: getattr(own, name) for name in own.model_fields_set})


def parse_tenant_limits(text: str | None) -> TenantLimitsConfig:
    """`STORYLOOM_TENANT_LIMITS`: JSON/YAML text or a file's path; a ConfigError sentence when wrong."""
    if text is None or not text.strip():
        return TenantLimitsConfig({})
    source = text
    candidate = Path(text.strip()).expanduser() if "\n" not in text.strip() else None
    if candidate is not None and candidate.is_file():
        source = candidate.read_text(encoding="utf-8")
    try:
        doc: Any = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"STORYLOOM_TENANT_LIMITS is not valid JSON or YAML ({type(exc).__name__})."
        ) from exc
    if not isinstance(doc, dict | None):
        raise ConfigError(
            "STORYLOOM_TENANT_LIMITS must map tenants to limits (JSON or YAML), or name a file that does."
        )
    try:
        return TenantLimitsConfig.model_validate(doc if doc is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"STORYLOOM_TENANT_LIMITS is invalid at {where}: {first['msg']}.") from exc


class StreamSlots:
    """Open SSE streams per tenant in this process; `acquire` refuses one over `max_streams`."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def open_streams(self, tenant: str) -> int:
        return self._open.get(tenant, 0)

    def acquire(self, tenant: str, limit: int | None) -> Callable[[], None]:
        """Take a slot; the returned function gives it back (once, however often it is called)."""
        held = self._open.get(tenant, 0)
        if limit is not None and held >= limit:
            raise TenantLimitError(
                f"tenant {tenant!r} has {held} event streams open, its limit (max_streams {limit}); "
                "close one first.",
                limit="max_streams",
                retry_after_s=_STREAM_RETRY_S,
            )
        self._open[tenant] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._open.get(tenant, 1) - 1
            if left > 0:
                self._open[tenant] = left
            else:
                self._open.pop(tenant, None)  # no entry per tenant that ever streamed

        return release


class BudgetVerdict(Protocol):
    """What the gateway's `llm.budget_status(...)` answers for a tenant (its `BudgetStatus`)."""

    @property
    def over(self) -> bool: ...
    @property
    def limit_name(self) -> str: ...  # e.g. daily_budget_usd
    @property
    def retry_after_s(self) -> float | None: ...  # None: the budget never resets (a lifetime one)
    @property
    def message(self) -> str: ...  # one sentence naming the limit and when it resets


# Is the tenant already over one of its period budgets? See api/budgets.py for the gateway's.
BudgetCheck = Callable[[str], Awaitable[BudgetVerdict]]


class BudgetGate:
    """Refuse new work of a tenant already over a period budget. Each tenant's verdict is read at
    most once per `ttl_s` (a burst of submissions costs one read of the shared store)."""

    def __init__(self, check: BudgetCheck, *, ttl_s: float = 1.0, max_entries: int = 10_000) -> None:
        self._check = check
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, BudgetVerdict | None]] = {}
        self._reading: dict[str, asyncio.Future[BudgetVerdict | None]] = {}

    async def refusal(self, tenant: str) -> TenantLimitError | None:
        """Why the tenant may start nothing new (a budget it has spent), or None."""
        verdict = await self._read(tenant)
        if verdict is None or not verdict.over:
            return None
        retry = verdict.retry_after_s
        return TenantLimitError(
            verdict.message,
            limit=verdict.limit_name,
            retry_after_s=_NEVER_RETRY_S if retry is None else max(1.0, retry),
        )

    async def _read(self, tenant: str) -> BudgetVerdict | None:
        cached = self._cache.get(tenant)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        reading = self._reading.get(tenant)
        if reading is None:
            reading = asyncio.ensure_future(self._fetch(tenant))
            reading.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._reading[tenant] = reading
        return await asyncio.shield(reading)

    async def _fetch(self, tenant: str) -> BudgetVerdict | None:
        try:
            verdict: BudgetVerdict | None = await self._check(tenant)
        except ProviderError as exc:
            # The limits store is unreachable: accept (the gateway still holds every call against
            # the budget) rather than refuse every tenant's work for an outage of a side store.
            _log.warning("api.budget_check_failed", tenant=tenant, error=type(exc).__name__)
            verdict = None
        finally:
            self._reading.pop(tenant, None)
        if len(self._cache) >= self.max_entries:
            self._cache.clear()  # a bound, not an LRU: entries live a second anyway
        self._cache[tenant] = (time.monotonic(), verdict)
        return verdict
