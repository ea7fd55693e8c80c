"""Findings 2 and 7 of issue 12, and its two smaller ones: output is counted as it is produced, on
every endpoint and mode, and whatever was produced is charged once.

- a streamed /v1/responses cut by the client is charged for what it produced (finding 2);
- a cut stream's input tokens are the backend's own count (its token-counting endpoint), not an
  estimate from the body's bytes;
- a stream that fails is recorded with its failure status, and still charged what it delivered;
- a non-streamed request whose client leaves is still run to its end, charged, and its hold
  resolved then, not ~7 minutes later at expiry (finding 7).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.faults.metering_support import assert_books, cost, debit, eventually, sp, tenant
from tests.inference.helpers import chat_body, final_metadata, marker, read_sse
from tests.inference.support import SimPlatform
from tests.responses.sse import read_stream

pytestmark = [pytest.mark.faults]
__all__ = ["sp"]


def words(text: str, model: str = "sim-chat") -> int:
    """The simulator's tokenizer (tests/simulator/content.py): whitespace-separated words; its
    Messages API counts one more, for the empty system prompt."""
    return len(text.split()) + (model == "sim/claude")


async def _read_then_leave(client: httpx.AsyncClient, path: str, body: dict[str, Any], *, deltas: int,
                           is_delta: Any) -> int:
    """Stream `body`, close the connection after `deltas` content events; returns how many came."""
    seen = 0
    async with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]" and is_delta(json.loads(line[6:])):
                seen += 1
                if seen == deltas:
                    break
    return seen


def _is_text_delta(event: dict[str, Any]) -> bool:
    return bool(event.get("type") == "response.output_text.delta")


def _is_chat_content(event: dict[str, Any]) -> bool:
    return bool(event.get("choices") and event["choices"][0]["delta"].get("content"))


@pytest.mark.parametrize("deltas", [16, 125])
async def test_a_responses_stream_cut_by_the_client_is_charged_for_what_it_produced(
        sp: SimPlatform, deltas: int) -> None:
    org, key = await tenant(sp)
    prompt = f"[[sim chunks=2000 chunk_ms=5]] cut responses {marker()}"
    body = {"model": "sim-chat", "input": prompt, "stream": True}
    async with sp.platform.client(key) as c:
        assert await _read_then_leave(c, "/v1/responses", body, deltas=deltas, is_delta=_is_text_delta) == deltas
    b = await assert_books(sp, org, requests=1)
    [u] = b.usage
    assert deltas <= u.output_tokens < 2000, u
    assert u.input_tokens == words(prompt)  # counted by the backend, not body bytes / 4
    assert u.status == 499 and u.cost_nanos == cost(u.input_tokens, u.output_tokens) > 0


async def test_a_chat_stream_cut_by_the_client_counts_its_input_with_the_backend(sp: SimPlatform) -> None:
    org, key = await tenant(sp)
    prompt = f"[[sim chunks=2000 chunk_ms=5]] cut chat {marker()}"
    async with sp.platform.client(key) as c:
        await _read_then_leave(c, "/v1/chat/completions", chat_body(prompt, stream=True), deltas=20,
                               is_delta=_is_chat_content)
    b = await assert_books(sp, org, requests=1)
    [u] = b.usage
    assert u.input_tokens == words(prompt) and 20 <= u.output_tokens < 2000, u
    assert u.status == 499


async def test_an_anthropic_stream_cut_by_the_client_takes_its_input_from_the_backend(sp: SimPlatform) -> None:
    org, key = await tenant(sp)
    prompt = f"[[sim chunks=2000 chunk_ms=5]] cut claude {marker()}"
    async with sp.platform.client(key) as c:
        await _read_then_leave(c, "/v1/chat/completions", chat_body(prompt, model="sim/claude", stream=True),
                               deltas=20, is_delta=_is_chat_content)
    b = await assert_books(sp, org, requests=1)
    [u] = b.usage
    assert u.input_tokens == words(prompt, "sim/claude") and 20 <= u.output_tokens < 2000, u


async def test_a_chat_stream_failed_upstream_is_recorded_as_failed_and_charged_what_it_delivered(
        sp: SimPlatform) -> None:
    org, key = await tenant(sp)
    prompt = f"[[sim chunks=10 cut_after=6]] failing chat {marker()}"
    async with sp.platform.client(key) as c, \
            c.stream("POST", "/v1/chat/completions", json=chat_body(prompt, stream=True)) as r:
        events, comments, done = await read_sse(r)
    assert not done and events[-1]["error"]["code"] == "upstream_error"
    delivered = sum(1 for e in events if _is_chat_content(e))
    meta = final_metadata(comments)
    b = await assert_books(sp, org, requests=1, debits=[debit(meta)])
    [u] = b.usage
    assert u.status == 502 and u.output_tokens == delivered > 0 and u.input_tokens == words(prompt)


async def test_a_responses_stream_failed_upstream_is_recorded_as_failed_and_charged_what_it_delivered(
        sp: SimPlatform) -> None:
    org, key = await tenant(sp)
    prompt = f"[[sim chunks=10 cut_after=9]] failing responses {marker()}"
    async with sp.platform.client(key) as c:
        _, events, meta = await read_stream(c, "POST", "/v1/responses",
                                            json={"model": "sim-chat", "input": prompt, "stream": True})
    assert events[-1]["type"] == "response.failed"
    delivered = sum(1 for e in events if _is_text_delta(e))
    assert meta is not None
    b = await assert_books(sp, org, requests=1, debits=[debit(meta)])
    [u] = b.usage
    assert u.status == 502 and u.output_tokens == delivered > 0 and u.input_tokens == words(prompt)
    assert events[-1]["response"]["usage"]["output_tokens"] == delivered


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"])
async def test_a_json_request_abandoned_by_its_client_is_charged_and_its_hold_resolved(
        sp: SimPlatform, path: str) -> None:
    org, key = await tenant(sp)
    prompt = f"[[sim first_byte_ms=2500 chunks=30]] abandoned {marker()}"
    body = {"/v1/responses": {"model": "sim-chat", "input": prompt}, "/v1/chat/completions": chat_body(prompt),
            "/v1/embeddings": {"model": "sim/embed", "input": prompt}}[path]
    async with sp.platform.client(key, timeout=0.8) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(path, json=body)
    # Settled within seconds of the backend's answer (the hold would otherwise wait ~5 minutes
    # for its expiry, and nothing would be charged).
    b = await assert_books(sp, org, requests=1)
    [u] = b.usage
    output = 0 if path == "/v1/embeddings" else 30
    assert (u.status, u.input_tokens, u.output_tokens) == (200, words(prompt), output)


async def test_the_abandoned_answer_is_stored_under_its_idempotency_key(sp: SimPlatform) -> None:
    """A client that left and retries with the same Idempotency-Key gets the answer it paid for,
    without a second run or a second charge."""
    org, key = await tenant(sp)
    needle = marker()
    body = chat_body(f"[[sim first_byte_ms=1500]] retried {needle}")
    headers = {"idempotency-key": f"idem-{needle}"}
    async with sp.platform.client(key, timeout=0.5) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/v1/chat/completions", json=body, headers=headers)
    await assert_books(sp, org, requests=1)

    async def replayed() -> bool:
        async with sp.platform.client(key) as c:
            r = await c.post("/v1/chat/completions", json=body, headers=headers)
        return r.status_code == 200

    await eventually(replayed, "the stored answer is replayed")
    assert len(sp.sim.requests(needle)) == 1
    await assert_books(sp, org, requests=1)
