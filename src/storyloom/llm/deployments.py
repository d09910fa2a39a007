"""What the gateway can send to: deployments per model, fallbacks, tenants and knobs, from settings.

A deployment is one (base URL, key, provider model) with its own limits; several keys of a provider
are several deployments of one model. Without a STORYLOOM_DEPLOYMENTS document the configured
provider is one deployment with STORYLOOM_RPM / TPM / MAX_CONCURRENCY. A model name the document
does not list goes to the default model's deployments under that provider model name (a per-agent
model on the same account), sharing their limits, since quotas are usually per key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from storyloom.config import Settings
from storyloom.errors import ConfigError
from storyloom.limits.breaker import BreakerPolicy
from storyloom.limits.budgets import BudgetLimits
from storyloom.llm.deadlines import TtftPolicy
from storyloom.validation import from_validation

__all__ = ["Deployment", "GatewayConfig", "load_gateway_config"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    name: str  # unique; the key of its shared limits and breaker
    model: str  # the logical model name callers ask for
    base_url: str
    api_key: str | None = None
    provider_model: str
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    window_s: float = 60.0  # rpm/tpm are per this window (60 s at real providers)
    # "reserve": the provider charges prompt + max_tokens at admission (OpenAI, the simulator), so a
    # smaller real usage is not refunded; "usage": settle the reservation to the real usage.
    tpm_settle: Literal["reserve", "usage"] = "reserve"
    connect_timeout_s: float = 10.0
    ttft_timeout_s: float = 60.0
    total_timeout_s: float = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    deployments: tuple[Deployment, ...]
    default_model: str
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tenant_weights: dict[str, float] = field(default_factory=dict)
    tenant_budgets_usd: dict[str, float] = field(default_factory=dict)  # lifetime, per tenant
    tenant_budgets: dict[str, BudgetLimits] = field(default_factory=dict)  # every period, per tenant
    limits_url: str = "memory://"
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    ttft: TtftPolicy = field(default_factory=TtftPolicy)
    cache_ttl_s: float = 0.0
    cache_max_entries: int = 10_000
    lease_ttl_s: float = 30.0
    headroom: float = 0.03  # share of each quota kept as burst capacity (see limits/state.py)
    max_attempts: int = 4
    retry_budget_s: float = 120.0  # total time a call may spend retrying
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    output_estimate_tokens: int = 512  # TPM reservation for a call without max_tokens, before data
    max_queue: int = 100_000  # waiters per model before admission refuses

    def budget_limits(self, tenant: str) -> BudgetLimits:
        """The tenant's budgets in every period (`tenant_budgets_usd` is the lifetime one)."""
        limits = self.tenant_budgets.get(tenant) or BudgetLimits()
        lifetime = self.tenant_budgets_usd.get(tenant)
        return limits if lifetime is None else replace(limits, budget_usd=lifetime)

    def for_model(self, model: str) -> tuple[Deployment, ...]:
        own = tuple(d for d in self.deployments if d.model == model)
        if own:
            return own
        return tuple(
            replace(d, model=model, provider_model=model)
            for d in self.deployments
            if d.model == self.default_model
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _DeploymentDoc(_Strict):
    model: str
    name: str | None = None
    base_url: str
    api_key: str | None = None
    api_key_env: str | None = None  # read the key from this variable (keeps keys out of the file)
    provider_model: str | None = None
    weight: float = Field(default=1.0, gt=0)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    window_s: float = Field(default=60.0, gt=0)
    tpm_settle: Literal["reserve", "usage"] = "reserve"
    connect_timeout_s: float | None = Field(default=None, gt=0)
    ttft_timeout_s: float | None = Field(default=None, gt=0)
    total_timeout_s: float | None = Field(default=None, gt=0)


class _TenantDoc(_Strict):
    weight: float = Field(default=1.0, gt=0)
    budget_usd: float | None = Field(default=None, ge=0)  # lifetime
    daily_budget_usd: float | None = Field(default=None, ge=0)  # per UTC day
    monthly_budget_usd: float | None = Field(default=None, ge=0)  # per UTC month
    daily_budget_tokens: int | None = Field(default=None, ge=0)
    monthly_budget_tokens: int | None = Field(default=None, ge=0)


class _BreakerDoc(_Strict):
    """BreakerPolicy (limits/breaker.py): open on a sustained failure rate, ramp back after closing."""

    failure_rate: float = Field(default=0.5, gt=0, le=1)
    minimum_calls: int = Field(default=20, ge=1)
    window_s: float = Field(default=60.0, gt=0)
    open_s: float = Field(default=15.0, gt=0)
    max_open_s: float = Field(default=60.0, gt=0)
    half_open_calls: int = Field(default=3, ge=1)
    ramp_s: float = Field(default=10.0, ge=0)
    ramp_start: float = Field(default=0.1, gt=0, le=1)


class _TtftDoc(_Strict):
    """TtftPolicy (deadlines.py): the first-token deadline learnt per deployment."""

    adaptive: bool = True
    factor: float = Field(default=3.0, ge=1)
    percentile: float = Field(default=0.99, gt=0, le=1)
    floor_s: float = Field(default=2.0, gt=0)
    min_samples: int = Field(default=20, ge=1)
    window: int = Field(default=200, ge=1)
    widen_above: float = Field(default=0.1, gt=0, le=1)


class _GatewayDoc(_Strict):
    lease_ttl_s: float = Field(default=30.0, gt=0)
    headroom: float = Field(default=0.03, gt=0, lt=1)
    max_attempts: int = Field(default=4, ge=1, le=20)
    retry_budget_s: float = Field(default=120.0, gt=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=20.0, ge=0)
    output_estimate_tokens: int = Field(default=512, ge=1)
    cache_max_entries: int = Field(default=10_000, ge=1)
    max_queue: int = Field(default=100_000, ge=1)
    breaker: _BreakerDoc = Field(default_factory=_BreakerDoc)
    ttft: _TtftDoc = Field(default_factory=_TtftDoc)


class _Document(_Strict):
    default_model: str | None = None
    deployments: list[_DeploymentDoc] = Field(default_factory=list)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    tenants: dict[str, _TenantDoc] = Field(default_factory=dict)
    gateway: _GatewayDoc = Field(default_factory=_GatewayDoc)


def _read_document(value: str) -> _Document:
    text = value
    stripped = value.strip()
    if not stripped.startswith(("{", "[", "-")) and "\n" not in stripped:
        path = Path(stripped)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read STORYLOOM_DEPLOYMENTS file {path}: {exc.strerror or exc}."
            ) from exc
    try:
        data: Any = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise ConfigError(f"STORYLOOM_DEPLOYMENTS is not valid JSON/YAML: {exc}.") from exc
    if isinstance(data, list):
        data = {"deployments": data}
    if not isinstance(data, dict):
        raise ConfigError("STORYLOOM_DEPLOYMENTS must be a list of deployments or a mapping.")
    try:
        return _Document.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, "STORYLOOM_DEPLOYMENTS", error=ConfigError) from exc


def _default_limits_url(settings: Settings, deployments: tuple[Deployment, ...], budgets: bool) -> str:
    if settings.limits_url:
        return settings.limits_url
    if settings.redis_url:
        return settings.redis_url
    if budgets or any(d.rpm or d.tpm or d.max_concurrency for d in deployments):
        # Every process of this data dir (serve's workers) shares one file; no server needed.
        return f"sqlite:///{(settings.data_dir / 'llm-limits.db').resolve()}"
    return "memory://"  # no limits to share: keep the hot path free of I/O


def load_gateway_config(settings: Settings, *, sim_url: str | None = None) -> GatewayConfig:
    """Resolve deployments from settings (and STORYLOOM_DEPLOYMENTS); raise ConfigError when wrong."""
    doc = _read_document(settings.deployments) if settings.deployments else _Document()
    deployments: list[Deployment] = []
    if doc.deployments:
        for i, d in enumerate(doc.deployments):
            key = (
                d.api_key
                if d.api_key is not None
                else (os.environ.get(d.api_key_env) if d.api_key_env else None)
            )
            if d.api_key_env and not key:
                raise ConfigError(
                    f"deployment {d.name or i} needs its key in ${d.api_key_env}, which is unset."
                )
            deployments.append(
                Deployment(
                    name=d.name or f"{d.model}#{i}",
                    model=d.model,
                    base_url=d.base_url.rstrip("/"),
                    api_key=key,
                    provider_model=d.provider_model or d.model,
                    weight=d.weight,
                    rpm=d.rpm,
                    tpm=d.tpm,
                    max_concurrency=d.max_concurrency,
                    window_s=d.window_s,
                    tpm_settle=d.tpm_settle,
                    connect_timeout_s=d.connect_timeout_s or settings.connect_timeout_s,
                    ttft_timeout_s=d.ttft_timeout_s or settings.ttft_timeout_s,
                    total_timeout_s=d.total_timeout_s or settings.total_timeout_s,
                )
            )
        default_model = doc.default_model or deployments[0].model
    else:
        provider = settings.provider()
        base_url = provider.base_url or sim_url
        if base_url is None:
            raise ConfigError("the sim profile needs a running simulator: pass its URL (sim_url).")
        deployments.append(
            Deployment(
                name=provider.profile,
                model=provider.model,
                base_url=base_url.rstrip("/"),
                api_key=provider.api_key,
                provider_model=provider.model,
                rpm=provider.rpm,
                tpm=provider.tpm,
                max_concurrency=provider.max_concurrency,
                connect_timeout_s=provider.connect_timeout_s,
                ttft_timeout_s=provider.ttft_timeout_s,
                total_timeout_s=provider.total_timeout_s,
            )
        )
        default_model = provider.model
    names = [d.name for d in deployments]
    if len(set(names)) != len(names):
        raise ConfigError("STORYLOOM_DEPLOYMENTS has two deployments with the same name.")
    fallbacks = {m: tuple(chain) for m, chain in {**doc.fallbacks, **settings.fallback_models}.items()}
    weights = {t: td.weight for t, td in doc.tenants.items()} | settings.tenant_weights
    budgets = {t: td.budget_usd for t, td in doc.tenants.items() if td.budget_usd is not None}
    budgets |= settings.tenant_budgets_usd
    periods = _tenant_budgets(doc, settings, budgets)
    g = doc.gateway
    all_deps = tuple(deployments)
    return GatewayConfig(
        deployments=all_deps,
        default_model=default_model,
        fallbacks=fallbacks,
        tenant_weights=weights,
        tenant_budgets_usd=budgets,
        tenant_budgets=periods,
        limits_url=_default_limits_url(settings, all_deps, any(b.any for b in periods.values())),
        breaker=BreakerPolicy(**g.breaker.model_dump()),
        ttft=TtftPolicy(**g.ttft.model_dump()),
        cache_ttl_s=settings.llm_cache_ttl_s,
        cache_max_entries=g.cache_max_entries,
        lease_ttl_s=g.lease_ttl_s,
        headroom=g.headroom,
        max_attempts=g.max_attempts,
        retry_budget_s=g.retry_budget_s,
        backoff_base_s=g.backoff_base_s,
        backoff_max_s=g.backoff_max_s,
        output_estimate_tokens=g.output_estimate_tokens,
        max_queue=g.max_queue,
    )


def _tenant_budgets(
    doc: _Document, settings: Settings, lifetime: dict[str, float]
) -> dict[str, BudgetLimits]:
    """Every tenant's budgets: the document's `tenants` entries, each overridden by the settings'
    maps (STORYLOOM_TENANT_BUDGETS_USD, ..._DAILY_BUDGETS_USD, ..._MONTHLY_BUDGETS_USD, ...TOKENS)."""
    maps: dict[str, dict[str, Any]] = {
        "daily_budget_usd": settings.tenant_daily_budgets_usd,
        "monthly_budget_usd": settings.tenant_monthly_budgets_usd,
        "daily_budget_tokens": settings.tenant_daily_budgets_tokens,
        "monthly_budget_tokens": settings.tenant_monthly_budgets_tokens,
    }
    tenants = set(doc.tenants) | set(lifetime) | {t for m in maps.values() for t in m}
    out: dict[str, BudgetLimits] = {}
    for t in sorted(tenants):
        td = doc.tenants.get(t) or _TenantDoc()
        fields: dict[str, Any] = {k: getattr(td, k) for k in maps}
        fields |= {k: m[t] for k, m in maps.items() if t in m}
        limits = BudgetLimits(budget_usd=lifetime.get(t), **fields)
        if limits.any:
            out[t] = limits
    return out
