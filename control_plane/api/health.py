"""`GET /api/health` (admin token): the platform's health from the same metrics Prometheus scrapes.

There is no web console yet; this gives an operator (or the console, later) one answer: which
processes answer their `/metrics`, and the numbers the alert rules watch (deploy/observability/
alerts.yml), summed over every sidecar and adapter process since each started. Read from the
processes' own exposition, so it can never disagree with the dashboard.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import httpx
import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from prometheus_client.parser import text_string_to_metric_families

from control_plane.api.guards import admin_guard
from core.settings import Settings

__all__ = ["HealthController", "HealthSummary", "ProcessHealth"]

WEBHOOK_LAG_LIMIT_S = 300.0
"""As the NxWebhookLag alert: a due delivery older than this makes the platform `degraded`."""


class ProcessHealth(msgspec.Struct, kw_only=True):
    name: str
    metrics_url: str
    up: bool
    error: str = ""


class HealthSummary(msgspec.Struct, kw_only=True):
    status: Literal["ok", "degraded"]
    reasons: list[str]
    """Why `degraded` (empty when `ok`)."""
    processes: list[ProcessHealth]
    requests_total: float
    """Inference answers since the adapters started (nx_requests_total)."""
    server_errors_total: float
    refusals_by_code: dict[str, float]
    """The sidecars' refusals by error code (nx_sidecar_decisions_total, code != ok)."""
    settlement_failures_total: float
    holds_open: float
    holds_open_nanodollars: float
    holds_overdue: float
    webhook_deliveries_pending: float
    webhook_lag_seconds: float
    background_responses_queued: float


def _targets(s: Settings) -> list[tuple[str, str]]:
    out = [(f"sidecar-{i + 1}", f"http://{s.sidecar_host}:{p}/metrics") for i, p in enumerate(s.sidecar_ports)]
    out += [(f"adapter-{i + 1}", f"http://{s.adapter_host}:{p}/metrics") for i, p in enumerate(s.adapter_ports)]
    out.append(("worker", f"http://{s.worker_metrics_host}:{s.worker_metrics_port}/metrics"))
    return out


def _sum(texts: list[str], metric: str, **labels: str) -> float:
    total = 0.0
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
    return total


def _refusals(texts: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                code = sample.labels.get("code", "ok")
                if sample.name == "nx_sidecar_decisions_total" and code != "ok":
                    out[code] = out.get(code, 0.0) + sample.value
    return out


async def summarize(settings: Settings) -> HealthSummary:
    targets = _targets(settings)
    async with httpx.AsyncClient(timeout=2.0) as client:
        replies = await asyncio.gather(*(client.get(url) for _, url in targets), return_exceptions=True)
    processes, texts = [], []
    for (name, url), reply in zip(targets, replies, strict=True):
        if isinstance(reply, httpx.Response) and reply.status_code == 200:
            processes.append(ProcessHealth(name=name, metrics_url=url, up=True))
            texts.append(reply.text)
        else:
            error = f"status {reply.status_code}" if isinstance(reply, httpx.Response) else type(reply).__name__
            processes.append(ProcessHealth(name=name, metrics_url=url, up=False, error=error))
    summary = HealthSummary(
        status="ok", reasons=[], processes=processes, requests_total=_sum(texts, "nx_requests_total"),
        server_errors_total=sum(_sum(texts, "nx_requests_total", status=str(s)) for s in (500, 502, 503, 504)),
        refusals_by_code=_refusals(texts), settlement_failures_total=_sum(texts, "nx_settlement_failures_total"),
        holds_open=_sum(texts, "nx_holds_open"), holds_open_nanodollars=_sum(texts, "nx_holds_open_nanodollars"),
        holds_overdue=_sum(texts, "nx_holds_overdue"),
        webhook_deliveries_pending=_sum(texts, "nx_webhook_deliveries_pending"),
        webhook_lag_seconds=_sum(texts, "nx_webhook_lag_seconds"),
        background_responses_queued=_sum(texts, "nx_background_responses_queued"))
    reasons = [f"{p.name} does not answer ({p.error})" for p in processes if not p.up]
    if summary.holds_overdue:
        reasons.append(f"{summary.holds_overdue:.0f} holds are past their expiry")
    if summary.webhook_lag_seconds > WEBHOOK_LAG_LIMIT_S:
        reasons.append(f"the oldest due webhook waited {summary.webhook_lag_seconds:.0f} s")
    if summary.settlement_failures_total:
        reasons.append(f"{summary.settlement_failures_total:.0f} settlements failed")
    summary.reasons = reasons
    summary.status = "degraded" if reasons else "ok"
    return summary


class HealthController(Controller):
    path = "/api"
    guards = [admin_guard]

    @get("/health")
    async def health(self, state: State) -> HealthSummary:
        return await summarize(state.settings)
