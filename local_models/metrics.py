"""``GET /metrics``: the local model server's Prometheus metrics (prometheus-client).

Read from the fair queues when Prometheus scrapes, so serving a request counts nothing twice.
This package imports nothing of the platform's (it runs on its own), so its metrics are defined
here rather than in core/telemetry; docs/observability.md lists them with the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from local_models.asgi import JsonResponse, Request
from local_models.state import ServerState

__all__ = ["endpoint"]


class _Queues(Collector):
    def __init__(self) -> None:
        self.state: ServerState | None = None

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("nx_local_model_queue_depth", "Requests a local model's fair queue admitted "
                                  "(running and waiting).", labels=["model"])
        waiting = GaugeMetricFamily("nx_local_model_waiting", "Requests waiting for a local model.",
                                    labels=["model"])
        tenants = GaugeMetricFamily("nx_local_model_tenants", "Organizations with requests admitted to a local "
                                    "model's queue.", labels=["model"])
        ready = GaugeMetricFamily("nx_local_model_ready", "1 when a local model is loaded and serving.",
                                  labels=["model"])
        if self.state is not None:
            for model, stats in self.state.queues().items():
                depth.add_metric([model], stats["admitted"])
                waiting.add_metric([model], stats["waiting_jobs"])
                tenants.add_metric([model], stats["tenants"])
            for model, status in self.state.statuses().items():
                ready.add_metric([model], 1 if status == "ready" else 0)
        yield from (depth, waiting, tenants, ready)


disable_created_metrics()  # type: ignore[no-untyped-call]
_QUEUES = _Queues()
REGISTRY.register(_QUEUES)


async def endpoint(_request: Request, state: ServerState) -> JsonResponse:
    _QUEUES.state = state
    return JsonResponse(generate_latest(REGISTRY), headers=(("content-type", CONTENT_TYPE_LATEST),))
