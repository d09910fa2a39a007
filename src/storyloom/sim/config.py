"""The simulator's configuration: typed, loadable from JSON/YAML, patchable live by deep merge.

A model name that is not in `models` uses `default`; a named model's profile only overrides the
fields it sets, so `{"models": {"scene": {"latency_s": 2.0}}}` keeps every other knob of `default`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from storyloom.errors import ConfigError
from storyloom.validation import from_validation

__all__ = [
    "FAULT_KINDS",
    "FaultRates",
    "ModelProfile",
    "Quota",
    "SearchFaults",
    "SearchProfile",
    "SimConfig",
    "deep_merge",
    "load_sim_config",
]

FAULT_KINDS = (
    "error_5xx",
    "error_429",
    "hang",
    "stream_cut",
    "prose_json",
    "prose_only",
    "empty",
    "broken_tool_args",
)
"""Fault kinds in the fixed order their rates are laid out on [0, 1) when one is drawn."""

_Rate = Field(default=0.0, ge=0.0, le=1.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultRates(_Strict):
    """Probability (0..1) that a request gets each fault; kinds are mutually exclusive per request."""

    error_5xx: float = _Rate
    error_429: float = _Rate
    hang: float = _Rate
    stream_cut: float = _Rate
    prose_json: float = _Rate  # applies only when the request asked for JSON
    prose_only: float = _Rate  # asked for JSON, answers prose with no JSON in it at all
    empty: float = _Rate
    broken_tool_args: float = _Rate  # applies only to answers with tool calls: one call's JSON cut short

    def overridden_by(self, other: FaultRates | None) -> FaultRates:
        """These rates with the fields `other` sets explicitly replaced (a model's own rates)."""
        if other is None or not other.model_fields_set:
            return self
        return self.model_copy(update={k: getattr(other, k) for k in other.model_fields_set})


class ModelProfile(_Strict):
    """Latency and length of one model's answers.

    An answer takes `ttft_s + n / tokens_per_s` for n completion tokens, unless `latency_s` is set:
    then the whole answer takes exactly `latency_s` (first token after `ttft_s`, capped to it), which
    is what a benchmark wants when it gives each agent a fixed model time. `jitter` spreads both.
    """

    ttft_s: float = Field(default=0.2, ge=0.0)
    tokens_per_s: float = Field(default=400.0, gt=0.0)
    answer_tokens: int = Field(default=300, ge=1)
    latency_s: float | None = Field(default=None, ge=0.0)
    # Each answer's ttft and token rate (or latency_s) drawn within ±jitter of the above, from the
    # answer's content key: a real provider's latency varies, and without it identical jobs started
    # together stay in lockstep and load the service in bursts no real provider would cause.
    jitter: float = Field(default=0.0, ge=0.0, lt=1.0)
    score_range: tuple[int, int] | None = None  # values for a JSON property named "score"
    faults: FaultRates | None = None

    @model_validator(mode="after")
    def _check_range(self) -> ModelProfile:
        if self.score_range is not None and self.score_range[0] > self.score_range[1]:
            raise ValueError("score_range must be [low, high] with low <= high")
        return self

    def overridden_by(self, other: ModelProfile) -> ModelProfile:
        """This profile with the fields `other` sets explicitly replaced."""
        update: dict[str, Any] = {k: getattr(other, k) for k in other.model_fields_set if k != "faults"}
        if "faults" in other.model_fields_set:
            base = self.faults or FaultRates()
            update["faults"] = base.overridden_by(other.faults) if other.faults else None
        return self.model_copy(update=update)


class Quota(_Strict):
    """Limits of one simulator instance (= one account/key). None = unlimited.

    `tpm_charge`: "reserve" charges prompt + (max_tokens, else the answer's length) at admission and
    never settles, as real providers do; "usage" settles the charge to the real usage at the end.
    """

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)
    mode: Literal["enforce", "count"] = "enforce"
    tpm_charge: Literal["reserve", "usage"] = "reserve"


class SearchFaults(_Strict):
    """Rates of the simulated search's faults (mutually exclusive per request, in this order)."""

    error_5xx: float = _Rate
    error_429: float = _Rate
    hang: float = _Rate


class SearchProfile(_Strict):
    """The simulated web search (`POST /v1/search`, see sim/search.py)."""

    latency_s: float = Field(default=0.05, ge=0.0)
    jitter: float = Field(default=0.0, ge=0.0, lt=1.0)
    quota: Quota = Field(default_factory=Quota)  # rpm / concurrency of the search "account"
    window_s: float = Field(default=60.0, gt=0.0)
    faults: SearchFaults = Field(default_factory=SearchFaults)
    hang_s: float = Field(default=600.0, gt=0.0)
    retry_after_s: float = Field(default=1.0, ge=0.0)  # Retry-After of an injected 429


class SimConfig(_Strict):
    """Everything the simulator does; see `sim/server.py` for how each knob is used."""

    seed: int = 42
    default: ModelProfile = Field(default_factory=ModelProfile)
    models: dict[str, ModelProfile] = Field(default_factory=dict)
    quota: Quota = Field(default_factory=Quota)
    window_s: float = Field(default=60.0, gt=0.0)  # the sliding window of RPM/TPM and of count mode
    faults: FaultRates = Field(default_factory=FaultRates)
    api_keys: list[str] = Field(default_factory=list)  # empty: any key (or none) is accepted
    chunk_interval_s: float = Field(default=0.05, gt=0.0)  # one write per stream at most this often
    chunk_tokens: int = Field(default=4, ge=1)  # tokens per SSE event
    hang_s: float = Field(default=600.0, gt=0.0)  # a hang ends when the client leaves, or after this
    fault_retry_after_s: float = Field(default=1.0, ge=0.0)  # Retry-After of an injected 429
    # A prompt cache per API key, as DeepSeek and OpenAI bill it (usage reports the cached tokens).
    prompt_cache: bool = True
    prompt_cache_block_chars: int = Field(default=128, ge=1)
    search: SearchProfile = Field(default_factory=SearchProfile)

    def profile(self, model: str) -> ModelProfile:
        """The effective profile of a model name: `default` overridden by the model's own fields."""
        own = self.models.get(model)
        return self.default if own is None else self.default.overridden_by(own)

    def fault_rates(self, model: str) -> FaultRates:
        """The global rates overridden by the model's own (its profile's `faults`)."""
        return self.faults.overridden_by(self.profile(model).faults)

    def patched(self, patch: dict[str, Any]) -> SimConfig:
        """A new config: this one deep-merged with `patch` and validated (raises ConfigError)."""
        merged = deep_merge(self.model_dump(exclude_unset=True), patch)
        return _validate(merged, "the config patch")


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`base` with `patch` merged in recursively; a non-dict value (or None) replaces."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _validate(data: Any, what: str) -> SimConfig:
    try:
        return SimConfig.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, what, error=ConfigError) from exc


def load_sim_config(path: str | Path) -> SimConfig:
    """Read a JSON or YAML file into a SimConfig; any problem is a ConfigError with one sentence."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the simulator config {p}: {exc.strerror or exc}.") from exc
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"the simulator config {p} is not valid JSON/YAML: {exc}.") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the simulator config {p} must be a mapping at the top level.")
    return _validate(data, f"the simulator config {p}")
