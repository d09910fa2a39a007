"""Settings, read from `STORYLOOM_*` environment variables and a `.env` file, only at the edge.

Library code receives the typed objects below; it never reads the environment itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from storyloom.errors import ConfigError

__all__ = ["PROFILES", "ProfileName", "ProviderConfig", "Settings"]

ProfileName = Literal["sim", "deepseek", "openai", "ark", "vllm", "ollama", "generic"]


@dataclass(frozen=True, slots=True)
class _Profile:
    base_url: str | None
    model: str
    key_env: str | None  # a provider's conventional key variable, used when STORYLOOM_API_KEY is unset
    needs_key: bool


PROFILES: dict[str, _Profile] = {
    # base_url None: the built-in simulator, started in-process on a loopback port.
    "sim": _Profile(None, "sim-writer", None, False),
    "deepseek": _Profile("https://api.deepseek.com/v1", "deepseek-chat", "DEEPSEEK_API_KEY", True),
    "openai": _Profile("https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY", True),
    # Volcengine Ark: the model is the endpoint id (ep-...) of your deployment.
    "ark": _Profile("https://ark.cn-beijing.volces.com/api/v3", "", "ARK_API_KEY", True),
    "vllm": _Profile("http://127.0.0.1:8000/v1", "", None, False),
    "ollama": _Profile("http://127.0.0.1:11434/v1", "qwen2.5:7b", None, False),
    "generic": _Profile(None, "", None, False),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    """One resolved provider: where to send calls, with what key and limits. base_url None = simulator."""

    profile: str
    base_url: str | None
    api_key: str | None
    model: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    connect_timeout_s: float = 10.0
    ttft_timeout_s: float = 60.0
    total_timeout_s: float = 600.0

    @property
    def is_simulated(self) -> bool:
        return self.base_url is None


class Settings(BaseSettings):
    """Every knob, with the environment variable `STORYLOOM_<NAME>` for each field."""

    model_config = SettingsConfigDict(env_prefix="STORYLOOM_", env_file=".env", extra="ignore")

    profile: ProfileName | None = None
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    # Per-agent model override, e.g. STORYLOOM_AGENT_MODELS='{"quality": "deepseek-chat"}'.
    agent_models: dict[str, str] = Field(default_factory=dict)

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    ttft_timeout_s: float = Field(default=60.0, gt=0)
    total_timeout_s: float = Field(default=600.0, gt=0)

    # Seed 002's names: candidate versions per chapter and the cap on parallel version requests.
    writer_chapter_version_count: int = Field(default=2, ge=1, le=10)
    writer_max_parallel_requests: int = Field(default=3, ge=1, le=10)

    # The LLM gateway. STORYLOOM_DEPLOYMENTS: a JSON/YAML document, or the path of one, listing
    # deployments (several keys/base URLs per model), fallbacks, tenants and gateway knobs.
    deployments: str | None = None
    # Where shared limits live: memory:// (one process), sqlite:///path (one machine), redis://...
    # Unset: Redis when STORYLOOM_REDIS_URL is set, else a SQLite file in data_dir when limits are set.
    limits_url: str | None = None
    tenant_weights: dict[str, float] = Field(default_factory=dict)
    tenant_budgets_usd: dict[str, float] = Field(default_factory=dict)  # lifetime spend per tenant
    # Per UTC day / month, reset at each period's start (STORYLOOM_TENANT_DAILY_BUDGETS_USD='{"a": 5}').
    tenant_daily_budgets_usd: dict[str, float] = Field(default_factory=dict)
    tenant_monthly_budgets_usd: dict[str, float] = Field(default_factory=dict)
    tenant_daily_budgets_tokens: dict[str, int] = Field(default_factory=dict)
    tenant_monthly_budgets_tokens: dict[str, int] = Field(default_factory=dict)
    fallback_models: dict[str, list[str]] = Field(default_factory=dict)
    llm_cache_ttl_s: float = Field(default=0.0, ge=0)  # 0: the exact-match cache is off
    # How long one model call of a step may keep retrying a failing model before the step's own
    # failure policy (skip, fallback, fail its version) takes over: a broken per-agent model must
    # not stall a chapter for the gateway's whole retry budget.
    step_retry_budget_s: float = Field(default=45.0, gt=0)

    # The HTTP API. Per-tenant limits: JSON/YAML text or a file's path, `"*"` the default (see
    # api/tenant_limits.py). CORS: origins allowed to call the API from a browser, comma-separated
    # (`*` for any); empty: same origin only, no CORS headers at all.
    tenant_limits: str | None = None
    cors_origins: str = ""
    # The SSE limiter (api/stream_gate.py): open event streams per API process, and per tenant in
    # each process for tenants whose limits name no max_streams; beyond either a stream queues.
    sse_max_streams: int | None = Field(default=None, ge=1)
    sse_max_streams_per_tenant: int | None = Field(default=None, ge=1)

    data_dir: Path = Path("./storyloom-data")
    database_url: str | None = None
    redis_url: str | None = None
    # udp://host:port[,…] of the API processes' event hubs, woken by workers after each commit
    # (`storyloom serve` sets it for the workers it starts; see jobs/wake.py).
    event_wake_url: str | None = None
    # Wake-ups across machines (jobs/hub.py): redis://host:6379/0 for Redis pub/sub; unset or
    # poll://: polling (plus the UDP wake-ups above on one machine). The database stays the truth.
    event_hub_url: str | None = None
    # Streamed text becomes step.delta events every 50 ms, stretched (up to the max interval) when
    # so many steps of one worker process stream at once that they would emit more than this.
    delta_events_per_s: float = Field(default=400.0, gt=0)
    delta_max_interval_s: float = Field(default=0.5, ge=0.05, le=5.0)
    # Disk: a finished job's token deltas are merged into one event per step after this many
    # seconds (the text stays, resumable); its events and checkpoints go after the events'
    # retention, the job row after the jobs' (see README "Disk").
    compact_deltas_after_s: float = Field(default=600.0, gt=0)
    events_retention_days: float = Field(default=7.0, gt=0)
    jobs_retention_days: float = Field(default=30.0, gt=0)

    # Tools (storyloom.tools). web_search's backend: sim (the simulator's search, default), searxng,
    # tavily or brave, at STORYLOOM_SEARCH_URL with STORYLOOM_SEARCH_API_KEY. Per-tool policy
    # overrides: STORYLOOM_TOOL_POLICIES='{"web_search": {"calls_per_minute": 100, "cache_ttl_s": 600}}'.
    # Their shared limits: STORYLOOM_TOOLS_LIMITS_URL, else the gateway's limits store (Redis, or
    # data_dir/llm-limits.db). MCP servers: STORYLOOM_MCP_SERVERS (JSON/YAML text or a file's path).
    search_backend: Literal["sim", "searxng", "tavily", "brave"] = "sim"
    search_url: str | None = None
    search_api_key: str | None = None
    # fetch_page reaches public addresses only: its URLs come from models (see tools.netguard).
    fetch_allow_private: bool = False
    tool_policies: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tools_limits_url: str | None = None
    mcp_servers: str | None = None

    # OpenTelemetry (the `otel` extra; storyloom.tracing): an OTLP/HTTP collector, e.g.
    # http://collector:4318; unset: no traces. Each process reports as this service name.
    otel_endpoint: str | None = None
    otel_service_name: str = "storyloom"

    sim_seed: int = 42
    log_level: str = "INFO"
    log_json: bool = True

    def resolved_profile(self) -> str:
        if self.profile is not None:
            return self.profile
        return "generic" if self.base_url else "sim"

    def provider(self) -> ProviderConfig:
        """Resolve the profile; STORYLOOM_BASE_URL alone is enough for any OpenAI-compatible server."""
        name = self.resolved_profile()
        prof = PROFILES[name]
        base_url = self.base_url or prof.base_url
        if name == "generic" and not base_url:
            raise ConfigError(
                "the generic provider needs STORYLOOM_BASE_URL (e.g. http://127.0.0.1:8000/v1)."
            )
        api_key = self.api_key
        if api_key is None and prof.key_env:
            import os  # read only here, at the edge, for the provider's conventional variable

            api_key = os.environ.get(prof.key_env)
        if prof.needs_key and not api_key:
            raise ConfigError(
                f"the {name} provider needs an API key: set STORYLOOM_API_KEY"
                + (f" or {prof.key_env}." if prof.key_env else ".")
            )
        model = self.model or prof.model
        if not model:
            raise ConfigError(f"the {name} provider needs a model name: set STORYLOOM_MODEL.")
        return ProviderConfig(
            profile=name,
            base_url=base_url.rstrip("/") if base_url else None,
            api_key=api_key,
            model=model,
            rpm=self.rpm,
            tpm=self.tpm,
            max_concurrency=self.max_concurrency,
            connect_timeout_s=self.connect_timeout_s,
            ttft_timeout_s=self.ttft_timeout_s,
            total_timeout_s=self.total_timeout_s,
        )

    def model_for(self, agent: str) -> str:
        """The model an agent uses: its override, else the provider's model."""
        return self.agent_models.get(agent) or self.provider().model

    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'storyloom.db').resolve()}"
