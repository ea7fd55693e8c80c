"""OpenTelemetry traces: one trace per request across Envoy, the sidecar, the adapter and the backend.

Off unless NX_OTEL_ENDPOINT names an OTLP/HTTP receiver (e.g. `http://collector:4318`); spans
then go to `<endpoint>/v1/traces` in batches (BatchSpanProcessor: export never blocks a request),
sampled at NX_TRACE_SAMPLE_RATIO for traces that start here, and following the caller's decision
for traces that arrive with a W3C `traceparent` (Envoy's tracer starts the trace at the edge).

Off, `span()` returns a shared no-op context manager and `inject()` returns at once: the hot path
pays one attribute read per call site (measured in bench/, docs/observability.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from core.settings import Settings

__all__ = ["enabled", "extract", "inject", "set_attributes", "setup", "shutdown", "span", "start"]

_tracer: trace.Tracer | None = None
_provider: Any = None
_NOOP = contextlib.nullcontext(None)


def enabled() -> bool:
    return _tracer is not None


def setup(process: str, settings: Settings) -> None:
    global _tracer, _provider
    if not settings.otel_endpoint:
        return
    # Imported only when tracing is on: the SDK and the exporter are not loaded otherwise.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(resource=Resource.create({"service.name": f"nx-{process}",
                                                        "service.namespace": "nx-platform"}),
                              sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=settings.otel_endpoint.rstrip("/") + "/v1/traces", timeout=5),
        schedule_delay_millis=500))
    _provider = provider
    _tracer = provider.get_tracer("nx-platform")


def shutdown() -> None:
    """Flush the spans still batched (a stopping process)."""
    if _provider is not None:
        _provider.shutdown()


def extract(headers: Iterable[tuple[bytes, bytes]]) -> otel_context.Context | None:
    """The caller's trace context from raw ASGI headers (`traceparent`, `tracestate`), if any."""
    if _tracer is None:
        return None
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in (b"traceparent", b"tracestate")}
    return propagate.extract(carrier) if carrier else None


def span(name: str, parent: otel_context.Context | None = None, attributes: Mapping[str, Any] | None = None,
         kind: SpanKind = SpanKind.SERVER) -> contextlib.AbstractContextManager[Span | None]:
    """A span made current for the block (so logs carry its trace id and `inject` propagates it)."""
    if _tracer is None:
        return _NOOP
    return _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)


def inject(headers: dict[str, str]) -> None:
    """Add the current span's `traceparent` to an outgoing request's headers (the backend call)."""
    if _tracer is not None:
        propagate.inject(headers)


def set_attributes(attributes: Mapping[str, Any]) -> None:
    if _tracer is not None:
        current = trace.get_current_span()
        if current.is_recording():
            current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def start(name: str, parent: otel_context.Context | None = None, attributes: Mapping[str, Any] | None = None,
          kind: SpanKind = SpanKind.SERVER) -> Span | None:
    """A span the caller ends itself, not made current (for a check timed across two call sites)."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
