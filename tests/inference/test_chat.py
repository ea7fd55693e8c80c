"""POST /v1/chat/completions through the real edge against the provider simulator."""

from __future__ import annotations

import json

import pytest

from tests.compat.openapi_schema import validate
from tests.inference.helpers import META, chat_body, final_metadata, marker, read_sse
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


async def test_non_stream_rewrites_model_both_ways_and_keeps_keys_apart(sp: SimPlatform) -> None:
    m = marker()
    async with sp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=chat_body(f"hello {m}"))
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "CreateChatCompletionResponse")
    assert body["model"] == "sim-chat"
    assert body["choices"][0]["message"]["content"] == "Hello from the"
    assert body["usage"]["prompt_tokens"] == 2 and body["usage"]["completion_tokens"] == 3
    for name in META:
        assert r.headers.get(name), name
    assert r.headers["x-model"] == "sim/chat"
    assert r.headers["x-request-id"].startswith("req_")
    assert (r.headers["x-input-tokens"], r.headers["x-output-tokens"]) == ("2", "3")
    assert r.headers["x-cache-status"] == "bypass"
    # 2 input x $1/Mtok + 3 output x $2/Mtok = 8e-6 USD
    assert r.headers["x-wallet-debit"] == "0.000008"
    [seen] = sp.sim.requests(m)
    assert seen["body"]["model"] == "sim-chat-upstream"
    assert seen["headers"]["authorization"] == f"Bearer {sp.sim.api_key}"
    assert sp.platform.key not in json.dumps(seen)
    assert not any(k.startswith("x-nx") for k in seen["headers"])


async def test_stream_with_usage_relays_chunks_usage_and_metadata(sp: SimPlatform) -> None:
    m = marker()
    body = chat_body(f"hi there {m} [[sim chunks=5]]", stream=True, stream_options={"include_usage": True})
    async with sp.platform.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-request-id"].startswith("req_") and r.headers["x-model"] == "sim/chat"
        events, comments, done = await read_sse(r)
    assert done
    for event in events:
        validate(event, "CreateChatCompletionStreamResponse")
        assert event["model"] == "sim-chat"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "Hello from the simulator."
    usage_chunk = events[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 5
    meta = final_metadata(comments)
    assert usage_chunk["x_nx"] == meta
    assert meta["x-output-tokens"] == "5" and meta["x-request-id"] == r.headers["x-request-id"]
    assert meta["x-wallet-debit"] != "0.00"
    [seen] = sp.sim.requests(m)
    assert seen["body"]["stream_options"] == {"include_usage": True}


async def test_stream_without_usage_meters_but_does_not_forward_the_usage_chunk(sp: SimPlatform) -> None:
    m = marker()
    async with sp.platform.client() as c, \
            c.stream("POST", "/v1/chat/completions", json=chat_body(f"x {m}", stream=True)) as r:
        events, comments, done = await read_sse(r)
    assert done and events
    assert all(e["choices"] for e in events), "the platform's own usage chunk leaked to the client"
    assert all(e.get("usage") is None for e in events)
    assert final_metadata(comments)["x-output-tokens"] == "3"
    [seen] = sp.sim.requests(m)
    assert seen["body"]["stream_options"] == {"include_usage": True}


async def test_tool_call_round_trip(sp: SimPlatform) -> None:
    async with sp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=chat_body("weather?", tools=TOOLS, tool_choice="auto"))
        assert r.status_code == 200, r.text
        first = r.json()
        validate(first, "CreateChatCompletionResponse")
        call = first["choices"][0]["message"]["tool_calls"][0]
        assert first["choices"][0]["finish_reason"] == "tool_calls"
        assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {
            "city": "simulated"}
        messages = [{"role": "user", "content": "weather?"}, first["choices"][0]["message"],
                    {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
        r = await c.post("/v1/chat/completions", json={"model": "sim-chat", "messages": messages, "tools": TOOLS})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Tool result: sunny"


async def test_streamed_tool_call_and_json_schema(sp: SimPlatform) -> None:
    async with sp.platform.client() as c:
        async with c.stream("POST", "/v1/chat/completions",
                            json=chat_body("weather?", tools=TOOLS, stream=True)) as r:
            events, _, done = await read_sse(r)
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}}
        r2 = await c.post("/v1/chat/completions", json=chat_body("a number", response_format=fmt))
    assert done
    calls = [tc for e in events for tc in e["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "simulated"}
    assert json.loads(r2.json()["choices"][0]["message"]["content"]) == {"n": 1}
