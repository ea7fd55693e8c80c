"""The sidecar's metrics and spans, kept here so server.py's hot path has one call each side.

`begin` binds the request id to the log lines of the check and starts its span (a child of the
`traceparent` Envoy sends); `observe` counts the decision by endpoint, status and refusal code,
times it, and ends the span. Counters the sidecar already keeps elsewhere (rate-limit store
failures, Envoy's ended-request log) are read when Prometheus scrapes (`Counters`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec
from opentelemetry.trace import Span, Status, StatusCode
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from core.contract import Header
from core.telemetry import logs, metrics_on, org, tracing
from core.telemetry.metrics import CHECK_SECONDS, DECISIONS
from proxy_plugins.sidecar.authz import Decision, classify

__all__ = ["Counters", "begin", "observe"]


class _Error(msgspec.Struct):
    code: str = "unknown"


class _ErrorBody(msgspec.Struct):
    error: _Error = msgspec.field(default_factory=_Error)


log = logging.getLogger("nx.sidecar.checks")
_decode_error = msgspec.json.Decoder(_ErrorBody).decode
_ENDPOINTS: dict[str, str] = {}
_SERIES: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
"""The metric children of each (endpoint, status, code, organization), looked up once: `labels()`
locks, checks and hashes its values on every call, half of what counting a check cost (5 of 10 us).
The registry keeps every child anyway, so this holds nothing it does not."""


def _endpoint(path: str) -> str:
    path = path.split("?", 1)[0]
    known = _ENDPOINTS.get(path)
    if known is None:
        found = classify("GET", path)
        known = found[0] if found else "other"
        if len(_ENDPOINTS) < 1000:  # paths with ids (/v1/responses/resp_...) are not kept
            _ENDPOINTS[path] = known
    return known


def _code(decision: Decision) -> str:
    if decision.status < 400:
        return "ok"
    try:
        return _decode_error(decision.body).error.code
    except msgspec.DecodeError:
        return "unknown"


def begin(request_id: str, headers: Iterable[tuple[bytes, bytes]], path: str) -> tuple[float, Span | None]:
    span = None
    if tracing.enabled() and (parent := tracing.extract(headers)) is not False:
        span = tracing.start("nx.sidecar.check", parent,
                             {"http.request.method": "POST", "url.path": path, "nx.request_id": request_id})
    logs.bind(request_id, span=span)
    return time.perf_counter(), span


def observe(path: str, decision: Decision, begun: tuple[float, Span | None]) -> None:
    started, span = begun
    if not metrics_on() and span is None:
        return
    endpoint, status, code = _endpoint(path), str(decision.status), _code(decision)
    organization = org(_header(decision, Header.ORG)) if code == "ok" else ""
    if metrics_on():
        series = _SERIES.get((endpoint, status, code, organization))
        if series is None:
            series = _SERIES[endpoint, status, code, organization] = (
                DECISIONS.labels(endpoint, status, code, organization), CHECK_SECONDS.labels(endpoint, status))
        series[0].inc()
        series[1].observe(time.perf_counter() - started)
    if log.isEnabledFor(logging.DEBUG):  # one line per check at debug: never the key or the body
        log.debug("check %s %s: %s %s", endpoint, path.split("?", 1)[0], status, code)
    if span is not None:
        span.set_attributes({"http.response.status_code": decision.status, "nx.endpoint": endpoint,
                             "nx.refusal_code": code, "nx.organization": _header(decision, Header.ORG),
                             "nx.project": _header(decision, Header.PROJECT),
                             "gen_ai.request.model": _header(decision, Header.MODEL)})
        if decision.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()


def _header(decision: Decision, name: str) -> str:
    for key, value in decision.headers:
        if key == name:
            return value
    return ""


class Counters(Collector):
    """Counters kept by the sidecar's parts, read at scrape time (no second count on the hot path)."""

    def __init__(self) -> None:
        self.read: Callable[[], dict[str, int]] | None = None

    def collect(self) -> Iterator[Any]:
        values = self.read() if self.read is not None else {}
        for name, help_text in (
                ("nx_ratelimit_store_failures", "Rate-limit store (Redis) failures; each admitted its request."),
                ("nx_ended_requests", "Requests whose end Envoy's access log reported."),
                ("nx_ended_holds_released", "Holds released because Envoy's log said their request ended.")):
            yield CounterMetricFamily(name, help_text, value=values.get(name, 0))


COUNTERS = Counters()
REGISTRY.register(COUNTERS)
