"""The adapter's metrics and spans, kept here so app.py's request path has one call for each.

`request()` is the request's span (a child of the `traceparent` Envoy forwards; its context goes
to the backend in `traceparent`, backends.py) and binds the request id and organization to the
request's log lines. `observed()` wraps the exchange's settlement (commit.py): every answer,
refusals and errors included, passes through it once, so it counts the request by status, its
tokens and spend, and times it (total, first token, upstream, settlement).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry.trace import Span
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from core.telemetry import logs, metrics_on, org, tracing
from core.telemetry.metrics import (
    REQUEST_SECONDS,
    REQUESTS,
    ROUTING_ATTEMPTS,
    SETTLE_FAILURES,
    SETTLE_SECONDS,
    SPEND,
    TOKENS,
    TTFT_SECONDS,
    UPSTREAM_SECONDS,
)
from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.exchange import Commit
from proxy_plugins.adapter.health import TargetHealth
from proxy_plugins.adapter.services import Handler

__all__ = ["CIRCUITS", "Circuits", "endpoint_of", "observed", "request"]

log = logging.getLogger("nx.adapter.requests")

_ENDPOINTS: dict[Any, str] = {}


def endpoint_of(handler: Handler) -> str:
    """`chat`, `embeddings` or `responses`: the handler's module (chat.py, ...)."""
    name = _ENDPOINTS.get(handler)
    if name is None:
        name = _ENDPOINTS[handler] = str(getattr(handler, "__module__", "other")).rsplit(".", 1)[-1]
    return name


def request(ctx: RequestContext, handler: Handler, headers: dict[bytes, bytes]) -> AbstractContextManager[Span | None]:
    logs.bind(ctx.request_id, ctx.org_id)
    parent = tracing.extract(headers.items())
    if parent is False:  # tracing off, or this request is not sampled
        return tracing.span("", False)  # the shared no-op
    operation = endpoint_of(handler)
    return tracing.span(f"{operation} {ctx.requested_model}", parent, {
        "gen_ai.operation.name": operation, "gen_ai.request.model": ctx.requested_model,
        "gen_ai.provider.name": ctx.backend.protocol, "server.address": ctx.backend.id,
        "nx.request_id": ctx.request_id, "nx.organization": ctx.org_id, "nx.project": ctx.project_id,
        "nx.hold": ctx.request_id if ctx.hold_price is not None else "",
        "nx.hold_price_version": ctx.hold_price.version if ctx.hold_price is not None else 0})


class _Series:
    """One (endpoint, model, backend, organization)'s children, looked up once, not per request."""

    def __init__(self, endpoint: str, model: str, backend: str, organization: str) -> None:
        labels = (endpoint, model, backend)
        self.total = REQUEST_SECONDS.labels(*labels)
        self.ttft = TTFT_SECONDS.labels(*labels)
        self.upstream = UPSTREAM_SECONDS.labels(*labels)
        self.settle = SETTLE_SECONDS.labels(endpoint)
        self.input = TOKENS.labels(*labels, "input", organization)
        self.cached = TOKENS.labels(*labels, "cached", organization)
        self.output = TOKENS.labels(*labels, "output", organization)
        self.spend = SPEND.labels(*labels, organization)
        self.labels = (*labels, organization)
        self.statuses: dict[int, Any] = {}

    def status(self, status: int) -> Any:
        child = self.statuses.get(status)
        if child is None:
            child = self.statuses[status] = REQUESTS.labels(*self.labels[:3], str(status), self.labels[3])
        return child


_SERIES: dict[tuple[str, str, str, str], _Series] = {}


def _series(endpoint: str, ctx: RequestContext) -> _Series:
    key = (endpoint, ctx.model.id, ctx.backend.id, org(ctx.org_id))
    series = _SERIES.get(key)
    if series is None:
        series = _SERIES[key] = _Series(*key)
    return series


def observed(commit: Commit, handler: Handler) -> Commit:
    if not metrics_on() and not tracing.enabled():
        return commit
    endpoint = endpoint_of(handler)

    async def settle(ctx: RequestContext, status: int, body: bytes,
                     headers: Callable[[], list[tuple[bytes, bytes]]]) -> list[tuple[bytes, bytes]]:
        series = _series(endpoint, ctx)
        upstream_done = time.monotonic_ns()
        try:
            with tracing.child("nx.adapter.settle"):
                out = await commit(ctx, status, body, headers)
        except BaseException:
            SETTLE_FAILURES.labels(endpoint).inc()
            series.status(status).inc()
            raise
        done = time.monotonic_ns()
        series.status(status).inc()
        series.settle.observe((done - upstream_done) / 1e9)
        series.upstream.observe((upstream_done - ctx.received_ns) / 1e9)
        series.total.observe((done - ctx.received_ns) / 1e9)
        if ctx.first_byte_ns is not None:
            series.ttft.observe((ctx.first_byte_ns - ctx.received_ns) / 1e9)
        for attempt in ctx.attempts:  # route groups: every backend call, answered or moved on from
            ROUTING_ATTEMPTS.labels(attempt.target, attempt.backend, attempt.error or "answered").inc()
        usage = ctx.usage
        if ctx.charged is not None:  # billed: count what settlement charged for
            series.input.inc(usage.input_tokens)
            series.cached.inc(usage.cached_tokens)
            series.output.inc(usage.output_tokens)
            series.spend.inc(ctx.charged)
        if log.isEnabledFor(logging.DEBUG):  # one line per answer at debug: no content, no key
            log.debug("answered %s %s via %s: status %d, %d in / %d out tokens, charged %s nano-dollars",
                      endpoint, ctx.model.id, ctx.backend.id, status, usage.input_tokens, usage.output_tokens,
                      ctx.charged)
        tracing.set_attributes({"http.response.status_code": status, "gen_ai.usage.input_tokens": usage.input_tokens,
                                "gen_ai.usage.output_tokens": usage.output_tokens,
                                "nx.charge_nanodollars": ctx.charged})
        return out

    return settle


class Circuits(Collector):
    """Route targets' circuits (health.py's passive outlier detection), read at scrape time:
    `nx_routing_circuit_state` 0 closed, 1 half-open (cool-down over, on trial), 2 open (ejected)."""

    def __init__(self) -> None:
        self.read: Callable[[], list[TargetHealth]] | None = None

    def collect(self) -> Iterator[Any]:
        state = GaugeMetricFamily("nx_routing_circuit_state", "A route target's circuit: 0 closed, 1 half-open, "
                                  "2 open (ejected).", labels=["target"])
        failures = GaugeMetricFamily("nx_routing_target_failures", "A route target's consecutive failures.",
                                     labels=["target"])
        now = time.time()
        for h in self.read() if self.read is not None else []:
            state.add_metric([h.target], 2 if h.ejected_until > now else 1 if h.ejections else 0)
            failures.add_metric([h.target], h.failures)
        yield from (state, failures)


CIRCUITS = Circuits()
REGISTRY.register(CIRCUITS)
