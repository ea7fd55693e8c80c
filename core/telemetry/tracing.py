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
import random
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

from core.settings import Settings

__all__ = ["child", "enabled", "extract", "inject", "set_attributes", "setup", "shutdown", "span", "start"]

_tracer: trace.Tracer | None = None
_ratio = 1.0
_provider: Any = None
_NOOP = contextlib.nullcontext(None)


def enabled() -> bool:
    return _tracer is not None


def setup(process: str, settings: Settings) -> None:
    global _tracer, _provider, _ratio
    if not settings.otel_endpoint:
        return
    _ratio = settings.trace_sample_ratio
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


def extract(headers: Iterable[tuple[bytes, bytes]]) -> otel_context.Context | bool | None:
    """The caller's trace context from raw ASGI headers (`traceparent`, `tracestate`); None when
    there is none (a new trace, kept at NX_TRACE_SAMPLE_RATIO); False when the request is not to be
    traced: its `traceparent` says not sampled, or it starts a trace the ratio leaves out. Decided
    from the header's flags before the SDK is asked, because even an unsampled span costs tens of
    microseconds to create (bench/observability_hooks.py)."""
    if _tracer is None:
        return False
    carrier: dict[str, str] = {}
    for k, v in headers:
        if k == b"traceparent" or k == b"tracestate":
            carrier[k.decode("latin-1")] = v.decode("latin-1")
    parent = carrier.get("traceparent")
    if parent is None:
        return None if random.random() < _ratio else False
    try:
        if not int(parent[-2:], 16) & 1:  # the W3C flags' sampled bit
            return False
    except ValueError:
        return None  # malformed: the SDK ignores it, so this starts a trace of its own
    return propagate.extract(carrier)


def span(name: str, parent: otel_context.Context | bool | None = None, attributes: Mapping[str, Any] | None = None,
         kind: SpanKind = SpanKind.SERVER) -> contextlib.AbstractContextManager[Span | None]:
    """A span made current for the block (so logs carry its trace id and `inject` propagates it);
    nothing when tracing is off or `parent` is extract's False (not traced)."""
    if _tracer is None or parent is False or parent is True:
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


def start(name: str, parent: otel_context.Context | bool | None = None, attributes: Mapping[str, Any] | None = None,
          kind: SpanKind = SpanKind.SERVER) -> Span | None:
    """A span the caller ends itself, not made current (for a check timed across two call sites)."""
    if _tracer is None or parent is False or parent is True:
        return None
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


def child(name: str) -> contextlib.AbstractContextManager[Span | None]:
    """A span under the current one, only when that one is recorded (never a trace of its own)."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return _NOOP
    return _tracer.start_as_current_span(name, kind=SpanKind.INTERNAL)
