"""Upstream failures, timeouts, cuts, disconnects and refusals on /v1/chat/completions."""

from __future__ import annotations

import httpx
import pytest

from tests.inference.helpers import assert_error, chat_body, final_metadata, marker, read_sse, wait_for_record
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_upstream_429_keeps_status_retry_after_and_message(sp: SimPlatform) -> None:
    async with sp.platform.client() as c:
        r = await c.post("/v1/chat/completions",
                         json=chat_body("[[sim status=429 retry_after=7 message=slow_down_please]]"))
    error = assert_error(r, 429, "rate_limit_exceeded")
    assert error["message"] == "slow down please"
    assert r.headers["retry-after"] == "7"
    assert r.headers["x-output-tokens"] == "0" and r.headers["x-wallet-debit"] == "0.00"


@pytest.mark.parametrize(("status", "code", "expected"), [
    (500, "upstream_error", 502), (503, "upstream_error", 502), (400, "invalid_request_error", 400),
    (404, "model_not_found", 404), (401, "upstream_error", 502), (402, "upstream_error", 502)])
async def test_upstream_statuses_map_to_platform_errors(sp: SimPlatform, status: int, code: str,
                                                        expected: int) -> None:
    async with sp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=chat_body(f"[[sim status={status} echo_key=1]]"))
    error = assert_error(r, expected, code)
    # The simulator put the platform's upstream credential into its message: it must not reach us.
    assert sp.sim.api_key not in r.text
    if status == 400:
        assert "Simulated status 400" in error["message"] and "***" in error["message"]
    if status in (401, 402):
        assert "Simulated" not in error["message"]  # the upstream's words about our account stay inside


async def test_unreachable_backend_is_503_and_missing_credential_is_503(sp: SimPlatform) -> None:
    async with sp.platform.client() as c:
        dead = await c.post("/v1/chat/completions", json=chat_body("hi", model="dead/chat"))
        nokey = await c.post("/v1/chat/completions", json=chat_body("hi", model="nokey/chat"))
    assert_error(dead, 503, "upstream_unavailable")
    error = assert_error(nokey, 503, "upstream_unavailable")
    assert "NX_TEST_UNSET_KEY" not in error["message"]


async def test_slow_first_byte_within_and_beyond_the_backend_timeout(sp: SimPlatform) -> None:
    async with sp.platform.client() as c:
        ok = await c.post("/v1/chat/completions", json=chat_body("[[sim first_byte_ms=300]]", model="sim/slow"))
        late = await c.post("/v1/chat/completions", json=chat_body("[[sim first_byte_ms=3000]]", model="sim/slow"))
        async with c.stream("POST", "/v1/chat/completions",
                            json=chat_body("[[sim first_byte_ms=3000]]", model="sim/slow", stream=True)) as r:
            status = r.status_code
            await r.aread()
    assert ok.status_code == 200, ok.text
    assert_error(late, 504, "upstream_timeout")
    assert status == 504


async def test_cut_mid_stream_ends_in_an_error_event_never_done(sp: SimPlatform) -> None:
    body = chat_body("[[sim chunks=10 cut_after=4]]", stream=True, stream_options={"include_usage": True})
    async with sp.platform.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        events, comments, done = await read_sse(r)
    assert not done
    assert events[-1]["error"]["code"] == "upstream_error"
    assert [e for e in events[:-1] if "choices" in e], "the chunks before the cut were relayed"
    assert final_metadata(comments)["x-request-id"] == r.headers["x-request-id"]


async def test_stall_mid_stream_ends_in_a_timeout_error_event(sp: SimPlatform) -> None:
    body = chat_body("[[sim chunks=5 chunk_ms=2000]]", model="sim/slow", stream=True)
    async with sp.platform.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        events, _, done = await read_sse(r)
    assert not done and events[-1]["error"]["code"] == "upstream_timeout"


async def test_client_disconnect_aborts_the_upstream_call(sp: SimPlatform) -> None:
    m = marker()
    body = chat_body(f"{m} [[sim chunks=200 chunk_ms=100]]", stream=True)
    async with sp.platform.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = r.aiter_lines()
        seen = 0
        async for line in lines:
            seen += line.startswith("data: ")
            if seen >= 2:
                break
    record = await wait_for_record(sp.sim, m, "disconnected")
    assert not record["completed"] and record["frames_sent"] < 200


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
    ({"stream": True}, "stream"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}, "messages"),
])
async def test_capabilities_the_model_lacks_are_refused_naming_the_parameter(
        sp: SimPlatform, extra: dict[str, object], param: str) -> None:
    m = marker()
    body = {**chat_body(m, model="sim/plain"), **extra}
    async with sp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=body)
    error = assert_error(r, 400, "unsupported_capability", param)
    assert "sim/plain" in error["message"]
    assert sp.sim.requests(m) == [], "a refused request must not reach the backend"


@pytest.mark.parametrize(("body", "code", "param"), [
    ({"model": "sim-chat"}, "missing_required_parameter", "messages"),
    ({"model": "sim-chat", "messages": []}, "invalid_request_error", "messages"),
    ({"model": "sim-chat", "messages": "hi"}, "invalid_request_error", "messages"),
    ({"model": "sim-chat", "messages": [{"role": "user", "content": "x"}], "stream_options": {}},
     "invalid_request_error", "stream_options"),
    ({"model": "sim-chat", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}},
     "invalid_request_error", "response_format"),
])
async def test_malformed_requests_are_400_with_param(sp: SimPlatform, body: dict[str, object], code: str,
                                                     param: str) -> None:
    async with sp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=body)
    assert_error(r, 400, code, param)


async def test_an_output_limit_above_the_models_cap_is_refused_before_the_hold(sp: SimPlatform) -> None:
    """The sidecar refuses it (issue 12), so the answer is the check's: no backend call, no metadata."""
    m = marker()
    async with sp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json={**chat_body(m, model="sim/plain"), "max_tokens": 65})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request_error" and r.json()["error"]["param"] == "max_tokens"
    assert sp.sim.requests(m) == []


async def test_adapter_refuses_callers_that_skip_the_edge(sp: SimPlatform) -> None:
    url = f"http://127.0.0.1:{sp.platform.s.adapter_port}/v1/chat/completions"
    headers = {"x-nx-model": "sim/chat", "x-nx-backend": "sim", "x-nx-internal": "guess"}
    async with httpx.AsyncClient() as c:
        r = await c.post(url, json=chat_body("hi"), headers=headers)
        r2 = await c.post(url, json=chat_body("hi"), headers={k: v for k, v in headers.items() if k != "x-nx-internal"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "internal_auth_failed"
    assert r2.status_code == 403
