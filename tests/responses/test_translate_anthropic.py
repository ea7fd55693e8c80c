"""Pure translation Responses <-> Anthropic Messages, validated against the OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from core.errors import ApiError
from proxy_plugins.adapter.translate.anthropic import AnthropicStreamTranslator, from_anthropic, to_anthropic
from proxy_plugins.adapter.translate.events import ResponseStream
from proxy_plugins.adapter.translate.request import normalize_input, parse_request
from proxy_plugins.adapter.translate.response import complete, skeleton
from tests.responses.oas import validate, validate_events
from tests.responses.test_translate_chat import WEATHER


def req(**body: Any) -> Any:
    body.setdefault("model", "m")
    return parse_request(json.dumps(body).encode())


def body_of(**kw: Any) -> dict[str, Any]:
    r = req(**kw)
    return to_anthropic(r, normalize_input(r.input), "claude-x", 4096)


def test_request_hoists_system_merges_turns_and_maps_tools() -> None:
    body = body_of(
        instructions="Be brief.",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0.5,
        input=[
            {"role": "system", "content": "Use metric."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather here?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ],
            },
            {"role": "assistant", "content": ""},
            {
                "type": "function_call",
                "call_id": "toolu_1",
                "name": "get_weather",
                "arguments": '{"city":"Oslo"}',
            },
            {"type": "function_call_output", "call_id": "toolu_1", "output": "5C"},
            {"role": "user", "content": "Thanks"},
        ],
    )
    assert body["system"] == "Be brief.\n\nUse metric."
    assert body["max_tokens"] == 4096 and body["temperature"] == 0.5
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "5C"},
        {"type": "text", "text": "Thanks"},
    ]
    assert body["tools"][0]["input_schema"] == WEATHER["parameters"]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_structured_output_and_forced_tool() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = body_of(
        input="x",
        max_output_tokens=10,
        stream=True,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        text={"format": {"type": "json_schema", "name": "A", "schema": schema}},
    )
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert body["max_tokens"] == 10 and body["stream"] is True
    with pytest.raises(ApiError) as err:
        body_of(input="x", text={"format": {"type": "json_object"}})
    assert err.value.param == "text.format"


def test_message_becomes_response_with_cached_tokens_added_back() -> None:
    raw = json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
            "stop_reason": "tool_use",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 7,
                "cache_read_input_tokens": 30,
                "cache_creation_input_tokens": 5,
            },
        }
    ).encode()
    output, usage, reason = from_anthropic(raw)
    resp = complete(
        skeleton(req(input="x", tools=[WEATHER]), response_id="resp_a", model="m"), output, usage, reason
    )
    validate(resp, "Response")
    data = msgspec.to_builtins(resp)
    assert data["output"][0]["content"][0]["text"] == "Checking."
    assert data["output"][1]["call_id"] == "toolu_2" and json.loads(data["output"][1]["arguments"]) == {
        "city": "Rome"
    }
    assert data["usage"]["input_tokens"] == 45 and data["usage"]["input_tokens_details"] == {
        "cached_tokens": 30,
        "cache_write_tokens": 5,
    }
    assert data["usage"]["total_tokens"] == 52 and data["status"] == "completed"


def test_max_tokens_stop_is_incomplete() -> None:
    raw = json.dumps(
        {
            "content": [{"type": "text", "text": "abc"}],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    ).encode()
    output, usage, reason = from_anthropic(raw)
    resp = complete(skeleton(req(input="x"), response_id="resp_b", model="m"), output, usage, reason)
    assert resp.status == "incomplete" and output[0].status == "incomplete"
    validate(resp, "Response")


def sse(kind: str, **data: Any) -> bytes:
    return json.dumps({"type": kind, **data}).encode()


def run(events_in: list[bytes]) -> list[dict[str, Any]]:
    stream = ResponseStream(
        skeleton(req(input="x", stream=True, tools=[WEATHER]), response_id="resp_c", model="m")
    )
    tr = AnthropicStreamTranslator(stream)
    out = stream.start()
    for data in events_in:
        out += tr.feed(data)
    out += tr.end()
    events: list[dict[str, Any]] = msgspec.json.decode(msgspec.json.encode(out))
    validate_events(events)
    return events


START = sse(
    "message_start",
    message={
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "usage": {"input_tokens": 9, "output_tokens": 1},
    },
)


def test_stream_text_then_tool_use() -> None:
    events = run(
        [
            START,
            sse("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            sse("ping"),
            sse("content_block_delta", index=0, delta={"type": "text_delta", "text": "Let me "}),
            sse("content_block_delta", index=0, delta={"type": "text_delta", "text": "check."}),
            sse("content_block_stop", index=0),
            sse(
                "content_block_start",
                index=1,
                content_block={"type": "tool_use", "id": "toolu_3", "name": "get_weather", "input": {}},
            ),
            sse(
                "content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '{"city"'}
            ),
            sse(
                "content_block_delta",
                index=1,
                delta={"type": "input_json_delta", "partial_json": ': "Oslo"}'},
            ),
            sse("content_block_stop", index=1),
            sse("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 20}),
            sse("message_stop"),
        ]
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert final["output"][1]["arguments"] == '{"city": "Oslo"}'
    assert final["usage"]["input_tokens"] == 9 and final["usage"]["output_tokens"] == 20


def test_stream_cut_or_error_event_fails() -> None:
    cut = run(
        [
            START,
            sse("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            sse("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hal"}),
        ]
    )
    assert cut[-1]["type"] == "response.failed" and cut[-1]["response"]["output"][0]["status"] == "incomplete"
    err = run([START, sse("error", error={"type": "overloaded_error", "message": "Overloaded"})])
    assert err[-1]["type"] == "response.failed"
    assert err[-1]["response"]["error"] == {"code": "server_error", "message": "Overloaded"}
    assert sum(e["type"] == "response.failed" for e in err) == 1


def test_cancelled_stream_ends_with_a_valid_error_event() -> None:
    stream = ResponseStream(skeleton(req(input="x"), response_id="resp_d", model="m", status="queued"))
    events = stream.start() + stream.text("a") + stream.cancel()
    data = msgspec.json.decode(msgspec.json.encode(events))
    validate_events(data)
    assert [e["type"] for e in data][:3] == ["response.created", "response.queued", "response.in_progress"]
    assert data[-1]["type"] == "error" and stream.response.status == "cancelled"
