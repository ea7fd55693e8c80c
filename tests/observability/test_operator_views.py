"""Issue 19, item 4: the dashboard and the alert rules in deploy/observability name only metrics the
processes expose, and docs/observability.md lists every metric they expose.

The names are read from the running platform's endpoints (and a local model server's, started
without weights: it serves its metrics all the same), never from a list kept beside the code."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from tests.harness import ROOT, free_port
from tests.inference.helpers import chat_body
from tests.inference.support import start_local_models, stop_process
from tests.observability.conftest import Observed
from tests.observability.scrape import scrape

DEPLOY = ROOT / "deploy" / "observability"
OURS = re.compile(r"\b(?:nx|gen_ai|envoy)_[a-z0-9_]+\b")


def _queries() -> dict[str, str]:
    """Every PromQL expression of the alert rules and the dashboard, by where it is."""
    out: dict[str, str] = {}
    for group in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            out[f"alert {rule['alert']}"] = rule["expr"]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "nx-platform.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out[f"panel {panel['title']} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            out[f"variable {variable['name']}"] = variable["query"]
    return out


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: label matchers `{...}` and `by (...)` lists removed
    first, so label names that share a prefix (gen_ai_token_type) are not taken for metrics."""
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", expr)
    return set(OURS.findall(expr))


async def _exposed(o: Observed) -> set[str]:
    p = o.sp.platform
    async with p.client() as c:  # one of each, so the lazily created series exist
        await c.post("/v1/chat/completions", json=chat_body("hi"))
        await c.get("/v1/models")
    names: set[str] = set()
    for base, path in ((p.s.sidecar_url, "/metrics"), (f"http://{p.s.adapter_host}:{p.s.adapter_port}", "/metrics"),
                       (p.s.control_plane_url, "/metrics"), (p.operator, "/stats/prometheus"),
                       (f"http://{p.s.worker_metrics_host}:{p.s.worker_metrics_port}", "/metrics")):
        names |= (await scrape(base, path)).names()
    with tempfile.TemporaryDirectory(prefix="nx-no-weights-") as empty:
        port = free_port()
        local = start_local_models(port, Path(empty), Path(empty) / "local.log")
        try:
            names |= (await scrape(f"http://127.0.0.1:{port}")).names()
        finally:
            stop_process(local)
    return names


async def test_dashboard_and_alerts_name_only_exposed_metrics(observed: Observed) -> None:
    exposed = await _exposed(observed)
    queries = _queries()
    assert len(queries) > 30
    missing = {where: sorted(_metric_names(expr) - exposed) for where, expr in queries.items()
               if _metric_names(expr) - exposed}
    assert not missing, missing
    named = set().union(*(_metric_names(q) for q in queries.values()))
    assert {"nx_requests_total", "nx_holds_open", "nx_webhook_lag_seconds", "nx_routing_circuit_state",
            "nx_settlement_failures_total", "envoy_http_downstream_rq_xx"} <= named

    # docs/observability.md lists every metric of ours a process exposes.
    doc = (ROOT / "docs" / "observability.md").read_text()
    families = {n for n in exposed if n.startswith(("nx_", "gen_ai_"))
                and not n.endswith(("_bucket", "_count", "_sum", "_created"))}
    undocumented = sorted(n for n in families if n not in doc and n.removesuffix("_total") not in doc)
    assert not undocumented, undocumented
