"""Chat Completions on an Anthropic Messages backend (the simulator speaks Messages)."""

from __future__ import annotations

import json

import pytest

from tests.compat.openapi_schema import validate
from tests.inference.helpers import assert_error, chat_body, final_metadata, marker, read_sse
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}}}}]


async def test_translated_request_and_answer(sp: SimPlatform) -> None:
    m = marker()
    body = {"model": "sim/claude", "max_tokens": 100, "temperature": 0.5, "stop": "END",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"hi {m}"}]}
    async with sp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    validate(answer, "CreateChatCompletionResponse")
    assert answer["model"] == "sim/claude" and answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "Hello from the"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 3 and r.headers["x-output-tokens"] == "3"
    [seen] = sp.sim.requests(m)
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == sp.sim.anthropic_key and "authorization" not in seen["headers"]
    assert seen["body"]["system"] == "Be brief." and seen["body"]["max_tokens"] == 100
    assert seen["body"]["stop_sequences"] == ["END"] and seen["body"]["model"] == "claude-sim-upstream"
    assert seen["body"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": f"hi {m}"}]}]


async def test_tool_call_both_ways(sp: SimPlatform) -> None:
    m = marker()
    async with sp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=chat_body(f"find {m}", model="sim/claude", tools=TOOLS,
                                                                 tool_choice={"type": "function",
                                                                              "function": {"name": "lookup"}}))
        assert r.status_code == 200, r.text
        message = r.json()["choices"][0]["message"]
        call = message["tool_calls"][0]
        assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
        assert call["function"]["name"] == "lookup" and json.loads(call["function"]["arguments"]) == {
            "q": "simulated"}
        follow = {"model": "sim/claude", "tools": TOOLS, "messages": [
            {"role": "user", "content": f"find {m}"}, message,
            {"role": "tool", "tool_call_id": call["id"], "content": "found it"}]}
        r2 = await c.post("/v1/chat/completions", json=follow)
    assert r2.status_code == 200, r2.text
    first, second = sp.sim.requests(m)
    assert first["body"]["tool_choice"] == {"type": "tool", "name": "lookup"}
    assert first["body"]["tools"][0]["input_schema"]["properties"] == {"q": {"type": "string"}}
    turns = second["body"]["messages"]
    assert turns[1]["content"][0] == {"type": "tool_use", "id": "toolu_sim1", "name": "lookup",
                                      "input": {"q": "simulated"}}
    assert turns[2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_sim1", "content": "found it"}


async def test_stream_with_usage_and_tool_call(sp: SimPlatform) -> None:
    body = chat_body("go [[sim chunks=4]]", model="sim/claude", stream=True,
                     stream_options={"include_usage": True})
    async with sp.platform.client() as c:
        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
            events, comments, done = await read_sse(r)
        async with c.stream("POST", "/v1/chat/completions",
                            json=chat_body("go", model="sim/claude", stream=True, tools=TOOLS)) as r2:
            tool_events, _, tool_done = await read_sse(r2)
    assert done and tool_done
    for e in events + tool_events:
        validate(e, "CreateChatCompletionStreamResponse")
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "Hello from the simulator"
    assert events[-1]["usage"]["completion_tokens"] == 4 and final_metadata(comments)["x-output-tokens"] == "4"
    args = "".join(tc["function"].get("arguments", "") for e in tool_events if e["choices"]
                   for tc in e["choices"][0]["delta"].get("tool_calls") or [])
    assert json.loads(args) == {"q": "simulated"}
    assert tool_events[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_errors_and_cuts(sp: SimPlatform) -> None:
    async with sp.platform.client() as c:
        limited = await c.post("/v1/chat/completions",
                               json=chat_body("[[sim status=429 retry_after=3]]", model="sim/claude"))
        overloaded = await c.post("/v1/chat/completions", json=chat_body("[[sim status=529]]", model="sim/claude"))
        structured = await c.post("/v1/chat/completions", json=chat_body(
            "x", model="sim/claude", response_format={"type": "json_object"}))
        async with c.stream("POST", "/v1/chat/completions",
                            json=chat_body("[[sim chunks=6 cut_after=4]]", model="sim/claude", stream=True)) as r:
            events, _, done = await read_sse(r)
    assert_error(limited, 429, "rate_limit_exceeded")
    assert limited.headers["retry-after"] == "3"
    assert_error(overloaded, 502, "upstream_error")
    assert_error(structured, 400, "unsupported_capability", "response_format")
    assert not done and events[-1]["error"]["code"] == "upstream_error"
