"""Every error storyloom raises on purpose, in one small hierarchy.

Three families are kept apart so callers can react correctly:

    StoryloomError
    ├── UserError                  the caller's input or configuration is wrong: CLI exit 2, HTTP 4xx
    │   ├── ConfigError
    │   ├── InputError
    │   │   └── IdempotencyConflictError   a reused idempotency key with a different body (422)
    │   ├── NotFoundError          no such app, project, chapter or version (404)
    │   ├── ConflictError          the resource is not in a state that allows this (409)
    │   ├── AuthenticationError    no key, or a key that is unknown or revoked (401)
    │   └── PermissionDeniedError  a valid key whose role may not do this (403)
    ├── ProviderError              a model call failed; carries status and Retry-After
    │   ├── RateLimitError         429 (provider or our own gateway quota)
    │   ├── ProviderUnavailable    5xx
    │   ├── ProviderTimeout        connect / time-to-first-token / total deadline
    │   ├── ProviderConnectionError
    │   ├── StreamCutError         the stream ended before its finish_reason
    │   ├── BadResponseError       the provider answered something that is not the protocol
    │   ├── BadRequestError        400/401/403/404/422: retrying cannot help
    │   │   └── ProviderAuthError  401/403: the provider refused our key; never retried, body not kept
    │   ├── CircuitOpenError       every deployment of the model is open
    │   └── BudgetExceededError    the tenant's budget would be overshot
    ├── OutputParseError           a model answered, but not in the shape the agent needs
    ├── FlowError
    │   ├── StepFailedError        a step failed and its policy is to fail the run
    │   └── AllVersionsFailedError every candidate version of a chapter failed
    ├── StoreError
    │   └── JobNotFoundError
    ├── QueueFullError             admission refused; retry after `retry_after_s`
    └── TenantLimitError           a tenant's own limit (jobs, submissions, streams, budget); 429

`is_permanent(exc)` says whether retrying a failed job can help (the worker's question).

Control-flow signals (cancellation) use asyncio.CancelledError and are never wrapped.
"""

from __future__ import annotations

__all__ = [
    "AllVersionsFailedError",
    "AuthenticationError",
    "BadRequestError",
    "BadResponseError",
    "BudgetExceededError",
    "CircuitOpenError",
    "ConfigError",
    "ConflictError",
    "FlowError",
    "IdempotencyConflictError",
    "InputError",
    "JobNotFoundError",
    "NotFoundError",
    "OutputParseError",
    "PermissionDeniedError",
    "ProviderAuthError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "QueueFullError",
    "RateLimitError",
    "StepFailedError",
    "StoreError",
    "StoryloomError",
    "StreamCutError",
    "TenantLimitError",
    "UserError",
    "is_permanent",
]


class StoryloomError(Exception):
    """Base of every error raised on purpose by storyloom."""


class UserError(StoryloomError):
    """The input or configuration is wrong; the message is one sentence a person can act on."""


class ConfigError(UserError):
    """Settings are missing or contradictory."""


class InputError(UserError):
    """A request, file or argument is invalid."""


class IdempotencyConflictError(InputError):
    """The idempotency key was already used for a different request; nothing new was accepted."""


class NotFoundError(UserError):
    """A named resource (an app, a project, a chapter, a version) does not exist (HTTP 404)."""


class ConflictError(UserError):
    """The resource exists but its state forbids the request (retrying a job that did not fail)."""


class AuthenticationError(UserError):
    """No API key, or one that is unknown or revoked (HTTP 401)."""


class PermissionDeniedError(UserError):
    """The key is valid but its role may not do this (HTTP 403)."""


class ProviderError(StoryloomError):
    """A model call failed. `retryable` tells the gateway's single retry loop what to do."""

    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        deployment: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
        self.deployment = deployment


class RateLimitError(ProviderError):
    """429: over the provider's (or our gateway's) quota."""


class ProviderUnavailable(ProviderError):
    """5xx from the provider."""


class ProviderTimeout(ProviderError):
    """A deadline passed. `phase` is 'connect', 'ttft' (time to first token) or 'total'."""

    def __init__(self, message: str, *, phase: str, deployment: str | None = None) -> None:
        super().__init__(message, status=None, deployment=deployment)
        self.phase = phase


class ProviderConnectionError(ProviderError):
    """The provider could not be reached or dropped the connection."""


class StreamCutError(ProviderError):
    """The stream ended without a finish_reason; the partial text is kept on the error."""

    def __init__(self, message: str, *, partial_text: str = "", deployment: str | None = None) -> None:
        super().__init__(message, deployment=deployment)
        self.partial_text = partial_text


class BadResponseError(ProviderError):
    """The provider's answer broke the wire protocol (not JSON, missing fields)."""


class BadRequestError(ProviderError):
    """400/401/403/404/422: the request itself is wrong; retrying cannot help."""

    retryable = False


class ProviderAuthError(BadRequestError):
    """401/403 from a provider: our key is wrong or lacks a permission. The message never holds the
    provider's body (some echo part of the key), and no retry or job re-run can fix it."""


class CircuitOpenError(ProviderError):
    """Every deployment able to serve the model is open (failing); try after `retry_after_s`."""


class BudgetExceededError(ProviderError):
    """The tenant's budget would be overshot by this call."""

    retryable = False


class OutputParseError(StoryloomError):
    """The model answered, but the answer could not be turned into the structure asked for."""

    def __init__(self, message: str, *, raw: str = "") -> None:
        super().__init__(message)
        self.raw = raw


class FlowError(StoryloomError):
    """A flow is malformed or a run failed."""


class StepFailedError(FlowError):
    """A step failed and its policy says the run fails with it."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"step {step!r} failed: {type(cause).__name__}: {cause}")
        self.step = step
        self.cause = cause


class AllVersionsFailedError(FlowError):
    """Every candidate version of a chapter failed; `errors` holds each version's reason."""

    def __init__(self, errors: list[str], *, permanent: bool = False) -> None:
        detail = "; ".join(f"v{i + 1}: {e}" for i, e in enumerate(errors))
        super().__init__(f"all {len(errors)} versions failed ({detail})")
        self.errors = errors
        self.permanent = permanent  # every version failed for a reason no re-run can fix


class StoreError(StoryloomError):
    """The database failed or refused an operation."""


class JobNotFoundError(StoreError):
    """No job with that id."""


class QueueFullError(StoryloomError):
    """Admission refused because the queue is full; nothing was accepted."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TenantLimitError(StoryloomError):
    """A tenant is over one of its own limits; `limit` names it, nothing was accepted."""

    def __init__(self, message: str, *, limit: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = retry_after_s


_PERMANENT: tuple[type[BaseException], ...] = (UserError, BadRequestError, BudgetExceededError)


def is_permanent(exc: BaseException) -> bool:
    """Whether re-running the job cannot help: the error itself, or what it wraps, is the caller's
    mistake, a refused request or a spent budget. Follows `StepFailedError.cause` and `__cause__`,
    and an `AllVersionsFailedError` whose versions all failed permanently."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _PERMANENT):
            return True
        if isinstance(current, AllVersionsFailedError):
            return current.permanent
        current = current.cause if isinstance(current, StepFailedError) else current.__cause__
    return False
