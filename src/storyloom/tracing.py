"""OpenTelemetry traces (the optional `otel` extra): one trace per job, across API -> queue -> worker.

The API's submission opens the trace (`submit <kind>`) and its W3C `traceparent` is stored in the
job's first event (`job.submitted`, data.traceparent): Postgres carries it to whichever worker
claims the job, on any machine, and to every later attempt. The worker's `job <kind>` span is its
child; inside it one span per flow step (`step <path>`), per model call (`chat <model>`, with the
GenAI semantic conventions: gen_ai.request.model, gen_ai.usage.input_tokens/output_tokens,
gen_ai.response.finish_reasons) and per tool call (`execute_tool <name>`, `tool_call`: the hook
the tools layer calls). Log lines carry trace_id and span_id while a span is current.

Off unless `configure_tracing` installed a provider (`STORYLOOM_OTEL_ENDPOINT`: an OTLP/HTTP
collector, e.g. http://collector:4318). While off every helper here is one flag test, so the
engine pays nothing per call for tracing it does not use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import Any

from storyloom.errors import ConfigError

__all__ = [
    "configure_tracing",
    "current_traceparent",
    "enabled",
    "job_span",
    "model_call_span",
    "record_model_result",
    "shutdown_tracing",
    "step_span",
    "submit_span",
    "tool_call",
    "trace_ids",
]

_TRACER: Any = None  # an opentelemetry Tracer once configured; None: tracing is off
_PROVIDER: Any = None


def enabled() -> bool:
    return _TRACER is not None


def configure_tracing(
    *, endpoint: str | None = None, service_name: str = "storyloom", exporter: Any = None
) -> bool:
    """Install a tracer provider exporting to `endpoint` (OTLP/HTTP) or to `exporter` (tests: the
    SDK's InMemorySpanExporter, synchronously). False, and tracing stays off, with neither."""
    global _TRACER, _PROVIDER
    if endpoint is None and exporter is None:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        raise ConfigError(
            "STORYLOOM_OTEL_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'storyloom[otel]'."
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigError(
                "STORYLOOM_OTEL_ENDPOINT needs the OTLP exporter: pip install 'storyloom[otel]'."
            ) from exc
        url = endpoint.rstrip("/") if endpoint else ""
        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=url if url.endswith("/v1/traces") else f"{url}/v1/traces")
            )
        )
    _PROVIDER = provider
    _TRACER = provider.get_tracer("storyloom")
    return True


def shutdown_tracing() -> None:
    """Flush and stop (process exit, tests)."""
    global _TRACER, _PROVIDER
    provider, _PROVIDER, _TRACER = _PROVIDER, None, None
    if provider is not None:
        provider.shutdown()


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to store with a job; None without one."""
    if _TRACER is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def _span(name: str, *, kind: str = "INTERNAL", parent: str | None = None, **attributes: Any) -> Any:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = None
    if parent is not None:
        carrier: MutableMapping[str, str] = {"traceparent": parent}
        context = TraceContextTextMapPropagator().extract(carrier)
    return _TRACER.start_as_current_span(
        name,
        context=context,
        kind=getattr(trace.SpanKind, kind),
        attributes={k: v for k, v in attributes.items() if v is not None},
    )


@contextlib.contextmanager
def submit_span(kind: str, tenant: str) -> Iterator[Any]:
    """The API's side of a job: the trace's root."""
    if _TRACER is None:
        yield None
        return
    with _span(
        f"submit {kind}", kind="SERVER", **{"storyloom.job.kind": kind, "storyloom.tenant": tenant}
    ) as span:
        yield span


@contextlib.contextmanager
def job_span(
    *, job_id: str, kind: str, tenant: str, attempt: int, worker: str, traceparent: str | None
) -> Iterator[Any]:
    """A worker's run of a job, the child of its submission's span (`traceparent`)."""
    if _TRACER is None:
        yield None
        return
    attributes = {
        "storyloom.job.id": job_id,
        "storyloom.job.kind": kind,
        "storyloom.tenant": tenant,
        "storyloom.job.attempt": attempt,
        "storyloom.worker": worker,
    }
    with _span(f"job {kind}", kind="CONSUMER", parent=traceparent, **attributes) as span:
        yield span


@contextlib.contextmanager
def step_span(path: str) -> Iterator[Any]:
    if _TRACER is None:
        yield None
        return
    with _span(f"step {path}", **{"storyloom.step": path}) as span:
        yield span


@contextlib.contextmanager
def model_call_span(model: str, *, agent: str | None = None, step: str | None = None) -> Iterator[Any]:
    """One logical model call (retries and fallbacks inside it); `record_model_result` fills it in."""
    if _TRACER is None:
        yield None
        return
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "storyloom.agent": agent,
        "storyloom.step": step,
    }
    with _span(f"chat {model}", kind="CLIENT", **attributes) as span:
        yield span


def record_model_result(span: Any, result: Any) -> None:
    """A `ChatResult` on its span: the GenAI conventions' response and usage attributes."""
    if span is None:
        return
    span.set_attribute("gen_ai.response.model", result.model)
    span.set_attribute("gen_ai.usage.input_tokens", result.usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", result.usage.completion_tokens)
    span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason or "unknown"])
    if result.deployment:
        span.set_attribute("storyloom.deployment", result.deployment)
    span.set_attribute("storyloom.attempts", result.attempts)
    span.set_attribute("storyloom.cached", result.cached)


@contextlib.contextmanager
def tool_call(name: str, *, call_id: str | None = None) -> Iterator[Any]:
    """The hook for the tools layer: wrap each tool's execution in this."""
    if _TRACER is None:
        yield None
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
    }
    with _span(f"execute_tool {name}", **attributes) as span:
        yield span


def trace_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: trace_id and span_id of the current span on every log line."""
    if _TRACER is None:
        return event_dict
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict
