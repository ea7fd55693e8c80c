"""Issue 19: one request seen three ways, from the real processes. Its metrics on every process's
/metrics, its JSON log lines (request id, no key), and its trace: Envoy, the sidecar, the adapter
and the backend call, linked parent to child."""

from __future__ import annotations

import json
import secrets

import httpx

from core.telemetry.logs import redact
from tests.harness import eventually
from tests.inference.helpers import chat_body, marker
from tests.observability.conftest import Observed
from tests.observability.scrape import sample, scrape


async def _chat(o: Observed, text: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with o.sp.platform.client() as c:
        resp = await c.post("/v1/chat/completions", json=chat_body(text), headers=headers or {})
    assert resp.status_code == 200, resp.text
    return resp


async def test_every_process_exposes_its_metrics(observed: Observed) -> None:
    p = observed.sp.platform
    await _chat(observed, marker())
    async with p.client() as c:
        assert (await c.get("/v1/models")).status_code == 200
    async with httpx.AsyncClient() as c:
        wrong = {"authorization": "Bearer nx_live_wrong"}
        assert (await c.get(f"{p.edge}/v1/models", headers=wrong)).status_code == 401
        assert (await c.get(f"{p.edge}/metrics")).status_code == 404  # never on the public edge
    sidecar = await scrape(p.s.sidecar_url)
    assert sample(sidecar, "nx_sidecar_decisions_total", endpoint="chat", status="200", code="ok") >= 1
    assert sample(sidecar, "nx_sidecar_decisions_total", code="invalid_api_key") >= 1
    assert sample(sidecar, "nx_sidecar_check_duration_seconds_count", endpoint="chat") >= 1
    assert sample(sidecar, "nx_groupcommit_batch_size_count", name="hold") >= 1
    adapter = await scrape(f"http://{p.s.adapter_host}:{p.s.adapter_port}")
    series = {"endpoint": "chat", "model": "sim/chat", "backend": "sim"}
    assert sample(adapter, "nx_requests_total", status="200", **series) >= 1
    output = {"gen_ai_token_type": "output"}
    assert sample(adapter, "gen_ai_client_token_usage_total", **output, **series) > 0
    assert sample(adapter, "nx_spend_nanodollars_total", **series) > 0
    assert sample(adapter, "gen_ai_server_request_duration_seconds_count", **series) >= 1
    assert sample(adapter, "nx_settlement_duration_seconds_count", endpoint="chat") >= 1
    assert sample(adapter, "nx_groupcommit_batch_size_count", name="settlement") >= 1
    control = await scrape(p.s.control_plane_url)
    assert sample(control, "nx_control_plane_requests_total", path="/v1/models") >= 1
    worker = f"http://{p.s.worker_metrics_host}:{p.s.worker_metrics_port}"

    async def gauges_ran() -> bool:
        try:
            return sample(await scrape(worker), "nx_worker_job_duration_seconds_count", job="gauges") >= 1
        except httpx.HTTPError:
            return False

    await eventually(gauges_ran, "the worker's /metrics shows its gauges job", timeout=20)
    assert "nx_holds_open " in (await scrape(worker)).text
    assert sample(await scrape(p.operator, "/stats/prometheus"),  # Envoy's, on the operator listener
                  "envoy_http_downstream_rq_total", envoy_http_conn_manager_prefix="edge") >= 1


async def test_one_requests_log_lines_carry_its_id_and_no_key(observed: Observed) -> None:
    p = observed.sp.platform
    rid = (await _chat(observed, marker())).headers["x-request-id"]
    wrong = "nx_live_" + secrets.token_hex(20)
    async with httpx.AsyncClient() as c:
        await c.get(f"{p.edge}/v1/models", headers={"authorization": f"Bearer {wrong}"})

    def lines(name: str) -> list[dict[str, object]]:
        path = observed.logs / f"{name}.log"
        text = path.read_text() if path.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    async def logged() -> bool:
        return any(line.get("request_id") == rid for line in lines("adapter")) and \
            any(line.get("request_id") == rid for line in lines("sidecar"))

    await eventually(logged, f"the sidecar's and the adapter's log lines name {rid}")
    for name in ("sidecar", "adapter"):
        mine = [line for line in lines(name) if line.get("request_id") == rid]
        for line in mine:
            assert {"ts", "level", "process", "logger", "message"} <= set(line), line
            assert line["process"] == name
        assert any(line.get("trace_id") for line in mine), mine  # tracing is on: logs join traces
    for name in ("sidecar", "adapter", "control-plane", "worker"):  # every line of every Python process
        path = observed.logs / f"{name}.log"
        for line in (path.read_text() if path.exists() else "").splitlines():
            assert isinstance(json.loads(line), dict), (name, line)
    for path in observed.logs.glob("*.log"):
        text = path.read_text()
        assert p.key not in text and wrong not in text, path.name
        assert "nx_live_" not in text.replace("nx_live_***", ""), path.name
    assert redact(f"Authorization: Bearer {p.key}") == "Authorization: Bearer ***"


async def test_one_requests_trace_links_envoy_sidecar_adapter_and_backend(observed: Observed) -> None:
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    text = marker()
    await _chat(observed, text, {"traceparent": f"00-{trace_id}-{client_span}-01"})

    async def complete() -> bool:
        services = {s.service for s in observed.receiver.trace(trace_id)}
        return {"nx-envoy", "nx-sidecar", "nx-adapter"} <= services

    await eventually(complete, "Envoy's, the sidecar's and the adapter's spans reach the receiver", timeout=20)
    spans = observed.receiver.trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    envoy = [s for s in spans if s.service == "nx-envoy"]
    assert any(s.parent_id == client_span for s in envoy), spans  # the client's traceparent continued
    [check] = [s for s in spans if s.name == "nx.sidecar.check"]
    assert by_id[check.parent_id].service == "nx-envoy"
    assert check.attributes["nx.refusal_code"] == "ok" and check.attributes["nx.organization"]
    [request] = [s for s in spans if s.service == "nx-adapter" and s.name.startswith("chat ")]
    assert by_id[request.parent_id].service == "nx-envoy"
    assert request.attributes["gen_ai.request.model"] == "sim-chat"
    assert request.attributes["gen_ai.usage.output_tokens"] > 0
    assert request.attributes["nx.charge_nanodollars"] > 0
    [settle] = [s for s in spans if s.name == "nx.adapter.settle"]
    assert settle.parent_id == request.span_id
    [record] = observed.sp.sim.requests(text)
    assert record["headers"]["traceparent"] == f"00-{trace_id}-{request.span_id}-01"  # the backend call



async def test_operator_health_reads_the_same_metrics(observed: Observed) -> None:
    p = observed.sp.platform
    await _chat(observed, marker())
    async with p.admin() as admin:
        health = (await admin.get("/api/health")).json()
    assert {proc["name"]: proc["up"] for proc in health["processes"]} == {
        "sidecar-1": True, "adapter-1": True, "worker": True}, health
    assert health["requests_total"] >= 1 and health["status"] in ("ok", "degraded")
    assert set(health) >= {"holds_open", "holds_overdue", "webhook_lag_seconds", "refusals_by_code",
                           "settlement_failures_total", "background_responses_queued"}
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{p.operator}/api/health")).status_code == 401  # the admin token is required
