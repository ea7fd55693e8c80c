"""Every Prometheus metric the platform's processes expose, defined once.

Why one module: the dashboard, the alert rules and docs/observability.md name these metrics, and
tests/observability checks that every name they use is defined here and exposed by a process.
Each process serves the registry at its own address (`/metrics`, see exposition.py); a metric that
a process never touches is exposed there with no samples (labelled) or as 0 (unlabelled).

Names follow Prometheus conventions (base units: seconds, bytes; counters end in `_total`) and,
for the request histograms, the OpenTelemetry GenAI semantic conventions
(`gen_ai.server.request.duration`, `gen_ai.server.time_to_first_token`, `gen_ai.client.token.usage`
as `gen_ai_*` with `gen_ai_operation_name`, `gen_ai_request_model`, `gen_ai_token_type` labels).
Labels are bounded: endpoint (3 values), model and backend (the catalog's), status, refusal code
(core/errors.py's table), job names; never a request, key or project id. `organization` is a
label only when the operator sets NX_METRICS_ORGANIZATION_LABEL (telemetry.org_label); otherwise
it is always "" so the series count does not grow with customers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BACKGROUND_QUEUED",
    "CHECK_SECONDS",
    "DECISIONS",
    "GROUP_BATCH",
    "GROUP_COMMIT_SECONDS",
    "GROUP_LATENCY_SECONDS",
    "HOLDS_OPEN",
    "HOLDS_OPEN_VALUE",
    "HOLDS_OVERDUE",
    "REQUESTS",
    "REQUEST_SECONDS",
    "ROUTING_ATTEMPTS",
    "SETTLE_FAILURES",
    "SETTLE_SECONDS",
    "SPEND",
    "TOKENS",
    "TTFT_SECONDS",
    "UPSTREAM_SECONDS",
    "WEBHOOK_DELIVERIES",
    "WEBHOOK_LAG",
    "WEBHOOK_PENDING",
    "WEBHOOK_SECONDS",
    "WORKER_JOB_FAILURES",
    "WORKER_JOB_SECONDS",
]

# Latency buckets from 1 ms to 2 minutes: a check is ~1 ms, a long generation a minute or more.
_LATENCY = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120)
_FAST = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5)
_REQ = ("endpoint", "model", "backend")

# --- sidecar (Envoy's ext_authz check) ---------------------------------------------------------
DECISIONS = Counter("nx_sidecar_decisions_total", "Pre-request checks by endpoint, outcome and refusal code "
                    "(code is 'ok' for an admitted request).", ["endpoint", "status", "code", "organization"])
CHECK_SECONDS = Histogram("nx_sidecar_check_duration_seconds", "Time the sidecar spent on one check, hold "
                          "included.", ["endpoint", "status"], buckets=_FAST)

# --- adapter (inference) -----------------------------------------------------------------------
REQUESTS = Counter("nx_requests_total", "Inference requests answered by the adapter, by status.",
                   [*_REQ, "status", "organization"])
REQUEST_SECONDS = Histogram("gen_ai_server_request_duration_seconds", "Adapter receipt to the answer's "
                            "last byte (settlement included) (GenAI semconv gen_ai.server.request.duration).",
                            _REQ, buckets=_LATENCY)
TTFT_SECONDS = Histogram("gen_ai_server_time_to_first_token_seconds", "Adapter receipt to the first streamed "
                         "event (GenAI semconv gen_ai.server.time_to_first_token).", _REQ, buckets=_LATENCY)
UPSTREAM_SECONDS = Histogram("nx_upstream_duration_seconds", "Adapter receipt to the backend's last byte "
                             "(the backend call and relaying; settlement excluded).", _REQ, buckets=_LATENCY)
SETTLE_SECONDS = Histogram("nx_settlement_duration_seconds", "One answer's settlement through the group commit "
                           "(queue wait and the shared transaction).", ["endpoint"], buckets=_FAST)
SETTLE_FAILURES = Counter("nx_settlement_failures_total", "Settlements the database refused or could not take "
                          "(the answer was withheld, or its stream left to the settler).", ["endpoint"])
TOKENS = Counter("gen_ai_client_token_usage_total", "Tokens billed, by type (GenAI semconv gen_ai.token.type: "
                 "input, output; cached is the part of input served from a cache).",
                 [*_REQ, "gen_ai_token_type", "organization"])
SPEND = Counter("nx_spend_nanodollars_total", "Money charged by settlement, in nano-dollars (1 USD = 1e9).",
                [*_REQ, "organization"])
ROUTING_ATTEMPTS = Counter("nx_routing_attempts_total", "Backend attempts of routed requests by target (a "
                           "catalog model), backend and outcome: `answered`, or the error code that moved the "
                           "request on to its next target.", ["model", "backend", "outcome"])

# --- group commit (sidecar holds, adapter settlements) -----------------------------------------
GROUP_BATCH = Histogram("nx_groupcommit_batch_size", "Items sharing one group-commit transaction.", ["name"],
                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
GROUP_COMMIT_SECONDS = Histogram("nx_groupcommit_commit_duration_seconds", "One group-commit transaction, "
                                 "begin to commit.", ["name"], buckets=_FAST)
GROUP_LATENCY_SECONDS = Histogram("nx_groupcommit_latency_seconds", "One item's submit to its committed result "
                                  "(its wait for a batch plus the batch's transaction).", ["name"], buckets=_FAST)

# --- worker --------------------------------------------------------------------------------------
WORKER_JOB_SECONDS = Histogram("nx_worker_job_duration_seconds", "One run of a worker job.", ["job"],
                               buckets=_LATENCY)
WORKER_JOB_FAILURES = Counter("nx_worker_job_failures_total", "Worker job runs that raised.", ["job"])
HOLDS_OPEN = Gauge("nx_holds_open", "Money holds currently open (reserved, not yet settled or released).")
HOLDS_OPEN_VALUE = Gauge("nx_holds_open_nanodollars", "Money reserved by open holds, in nano-dollars.")
HOLDS_OVERDUE = Gauge("nx_holds_overdue", "Open holds past their expiry (the expiry job is behind).")
WEBHOOK_DELIVERIES = Counter("nx_webhook_delivery_attempts_total", "Webhook delivery attempts by outcome "
                             "(succeeded: 2xx; rejected: another status; unreachable: no answer) and whether "
                             "the attempt was a retry.", ["outcome", "retry"])
WEBHOOK_SECONDS = Histogram("nx_webhook_delivery_duration_seconds", "One webhook delivery attempt's HTTP "
                            "exchange.", buckets=_LATENCY)
WEBHOOK_PENDING = Gauge("nx_webhook_deliveries_pending", "Webhook deliveries waiting for an attempt.")
WEBHOOK_LAG = Gauge("nx_webhook_lag_seconds", "Age of the oldest pending webhook delivery that is due.")
BACKGROUND_QUEUED = Gauge("nx_background_responses_queued", "Background responses queued or running.",
                          ["state"])


def groupcommit_name(work: object) -> str:
    """A group commit's label from its work function's module: `hold`, `commit` (settlements), ..."""
    module = str(getattr(work, "__module__", "") or "unknown").rsplit(".", 1)[-1]
    return {"commit": "settlement"}.get(module, module)


class Switch:
    """NX_METRICS_ENABLED, set by telemetry.configure before a process builds its parts."""

    on = True


_NULL = contextlib.nullcontext()


def group_latency(name: str) -> Callable[[], AbstractContextManager[Any]]:
    """What a group commit times each item's wait and commit with (nothing when metrics are off)."""
    if not Switch.on:
        return lambda: _NULL
    return GROUP_LATENCY_SECONDS.labels(name).time


def observe_batch(name: str, size: int, seconds: float) -> None:
    if not Switch.on:
        return
    GROUP_BATCH.labels(name).observe(size)
    GROUP_COMMIT_SECONDS.labels(name).observe(seconds)


def observe_webhook(status_code: int | None, attempt: int, latency_ms: int) -> None:
    outcome = "unreachable" if status_code is None else "succeeded" if 200 <= status_code < 300 else "rejected"
    WEBHOOK_DELIVERIES.labels(outcome, "true" if attempt > 1 else "false").inc()
    WEBHOOK_SECONDS.observe(latency_ms / 1000)
