"""Observability shared by every process: Prometheus metrics, JSON logs, OpenTelemetry traces.

- `metrics`: every metric, defined once (names and labels: docs/observability.md).
- `exposition()`: the process's `/metrics` body; `serve_metrics()` for a process with no HTTP port
  of its own (the worker).
- `logs.setup()`: JSON lines with the request id, trace id and organization of the request being
  served (contextvars), never a key or content unless NX_LOG_CONTENT is on.
- `tracing.setup()`: the OpenTelemetry SDK exporting over OTLP/HTTP when NX_OTEL_ENDPOINT is set;
  otherwise no tracer provider is installed and spans cost one no-op call.

Each process calls `configure(process, settings)` once at start.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)

from core.settings import Settings
from core.telemetry import logs, tracing
from core.telemetry.metrics import Switch

__all__ = ["CONTENT_TYPE", "configure", "exposition", "metrics_on", "org", "serve_metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# No `*_created` series: Prometheus does not need them, and they would double the counters' series.
disable_created_metrics()  # type: ignore[no-untyped-call]

_org_label = False


def configure(process: str, settings: Settings) -> None:
    """Logs, traces and the organization label for `process` (sidecar, adapter, ...)."""
    global _org_label
    _org_label = settings.metrics_organization_label
    Switch.on = settings.metrics_enabled
    logs.setup(process, settings.log_level, json_lines=settings.log_format == "json", content=settings.log_content)
    tracing.setup(process, settings)


def metrics_on() -> bool:
    return Switch.on


def org(org_id: str) -> str:
    """The `organization` label's value: the id only when the operator opted in (bounded otherwise)."""
    return org_id if _org_label else ""


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def serve_metrics(host: str, port: int) -> None:
    """A `/metrics` listener in a thread, for a process that serves no HTTP of its own."""
    start_http_server(port, addr=host)
