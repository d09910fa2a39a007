"""The gateway's per-period tenant budgets, asked by the API before it accepts a job.

`open_budget_check(settings, stack)` reads the gateway's configuration (the same settings the
workers' gateways read), opens the shared limits store the gateway's budget holds live in, and
returns a `BudgetCheck` calling `llm.budget_status.budget_status`: a tenant that has already spent
a period's budget gets 429 at submission instead of a job that fails at its first model call.
None when no tenant has a budget (no read on the submission path), or when the llm part does not
provide `budget_status` (before issue 10's llm work is merged; the gateway still refuses each call
that would overshoot).
"""

from __future__ import annotations

import importlib
from contextlib import AsyncExitStack
from typing import Any

from storyloom.api.tenant_limits import BudgetCheck, BudgetVerdict
from storyloom.config import Settings

__all__ = ["open_budget_check"]

# The API makes no model call: the gateway's configuration only needs some provider URL to load.
_NO_PROVIDER = "http://127.0.0.1:9/v1"


async def open_budget_check(settings: Settings, stack: AsyncExitStack) -> BudgetCheck | None:
    try:
        status_module: Any = importlib.import_module("storyloom.llm.budget_status")
    except ImportError:  # the llm part without per-period budgets: nothing to ask
        return None
    from storyloom.limits.base import LimitBackend
    from storyloom.llm.deployments import load_gateway_config

    config: Any = load_gateway_config(settings, sim_url=_NO_PROVIDER)
    tenants = set(getattr(config, "tenant_budgets", {})) | set(config.tenant_budgets_usd)
    if not any(config.budget_limits(t).any for t in tenants):
        return None
    backend = LimitBackend.from_url(config.limits_url, config.breaker)
    stack.push_async_callback(backend.aclose)
    budget_status = status_module.budget_status

    async def check(tenant: str) -> BudgetVerdict:
        verdict: BudgetVerdict = await budget_status(backend, tenant, config.budget_limits(tenant))
        return verdict

    return check
