"""Pure translation Responses <-> Chat Completions, every produced object and event validated
against the official OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from core.errors import ApiError
from proxy_plugins.adapter.translate.chat import ChatStreamTranslator, from_chat, to_chat
from proxy_plugins.adapter.translate.events import ResponseStream
from proxy_plugins.adapter.translate.request import check_capabilities, normalize_input, parse_request
from proxy_plugins.adapter.translate.response import complete, skeleton
from tests.responses.oas import validate, validate_events

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def req(**body: Any) -> Any:
    body.setdefault("model", "m")
    return parse_request(json.dumps(body).encode())


def chat_of(**body: Any) -> dict[str, Any]:
    r = req(**body)
    return to_chat(r, normalize_input(r.input), "upstream-m")


def test_string_input_becomes_one_user_message_with_instructions_as_system() -> None:
    body = chat_of(input="Hi", instructions="Be brief.", max_output_tokens=50, temperature=0.2, top_p=0.9)
    assert body == {
        "model": "upstream-m",
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }


def test_item_list_with_image_developer_and_function_call_round_trip() -> None:
    body = chat_of(
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        input=[
            {"role": "developer", "content": "Use tools."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                ],
            },
            {"role": "assistant", "content": "Let me check."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Oslo"}',
            },
            {
                "type": "function_call",
                "call_id": "call_2",
                "name": "get_weather",
                "arguments": '{"city":"Rome"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "5C"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [{"type": "input_text", "text": "20C"}],
            },
        ],
    )
    msgs = body["messages"]
    assert msgs[0] == {"role": "system", "content": "Use tools."}
    assert msgs[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
    }
    assert msgs[2]["content"] == "Let me check."
    assert [c["id"] for c in msgs[2]["tool_calls"]] == ["call_1", "call_2"]
    assert msgs[3:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "5C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "20C"},
    ]
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_text_format_maps_to_response_format_and_stream_asks_for_usage() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    body = chat_of(
        input="x",
        stream=True,
        text={"format": {"type": "json_schema", "name": "A", "schema": schema, "strict": True}},
    )
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "A", "schema": schema, "strict": True},
    }
    assert body["stream_options"] == {"include_usage": True}
    assert chat_of(input="x", text={"format": {"type": "json_object"}})["response_format"] == {
        "type": "json_object"
    }


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_request_error"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type", "unsupported_parameter"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
            "input[0].content[0].image_url",
            "invalid_request_error",
        ),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
        (
            {"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
            "tool_choice",
            "invalid_request_error",
        ),
        (
            {"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
            "text.format.name",
            "missing_required_parameter",
        ),
        ({"input": "x", "temperature": 3}, "temperature", "invalid_request_error"),
        ({"input": "x", "background": True, "store": False}, "store", "invalid_request_error"),
        ({"input": "x", "conversation": "conv_1"}, "conversation", "unsupported_parameter"),
        ({}, "input", "missing_required_parameter"),
        ({"input": 5}, "input", "invalid_request_error"),
    ],
)
def test_bad_requests_name_the_parameter(body: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(ApiError) as err:
        r = req(**body)
        normalize_input(r.input)
    assert (err.value.param, err.value.code, err.value.status) == (param, code, 400)


def test_malformed_json_is_invalid_json() -> None:
    with pytest.raises(ApiError) as err:
        parse_request(b"{nope")
    assert err.value.code == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "tools": [WEATHER]}, "tools"),
        (
            {"input": "x", "text": {"format": {"type": "json_schema", "name": "A", "schema": {}}}},
            "text.format",
        ),
        ({"input": "x", "text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"input": "x", "stream": True}, "stream"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}
                ]
            },
            "input[0].content[0]",
        ),
    ],
)
def test_missing_capability_is_refused_naming_the_parameter(body: dict[str, Any], param: str) -> None:
    r = req(**body)
    with pytest.raises(ApiError) as err:
        check_capabilities(r, normalize_input(r.input), {"streaming": False}, "local/tiny")
    assert (err.value.code, err.value.param, err.value.status) == ("unsupported_capability", param, 400)
    assert "local/tiny" in err.value.message


def completion(message: dict[str, Any], finish: str = "stop") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "x",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": 5,
                "total_tokens": 17,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
        }
    ).encode()


def test_chat_completion_becomes_a_valid_response() -> None:
    r = req(input="Hi", metadata={"k": "v"})
    output, usage, reason = from_chat(completion({"role": "assistant", "content": "Hello!"}))
    resp = complete(skeleton(r, response_id="resp_1", model="m"), output, usage, reason)
    validate(resp, "Response")
    data = msgspec.to_builtins(resp)
    assert data["status"] == "completed" and data["metadata"] == {"k": "v"}
    assert data["output"][0]["content"] == [
        {"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}
    ]
    assert data["usage"] == {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 17,
    }


def test_tool_calls_and_length_finish() -> None:
    output, _, reason = from_chat(
        completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            "tool_calls",
        )
    )
    assert reason is None
    call = msgspec.to_builtins(output[0])
    assert (call["type"], call["call_id"], call["name"], call["status"]) == (
        "function_call",
        "call_9",
        "get_weather",
        "completed",
    )
    assert call["id"].startswith("fc_")
    r = req(input="Hi", tools=[WEATHER])
    validate(
        complete(
            skeleton(r, response_id="resp_2", model="m"),
            output,
            *from_chat(completion({"role": "assistant", "content": "x"}))[1:],
        ),
        "Response",
    )
    output, _, reason = from_chat(completion({"role": "assistant", "content": "trunc"}, "length"))
    assert reason == "max_output_tokens" and output[0].status == "incomplete"
    resp = complete(
        skeleton(req(input="x"), response_id="resp_3", model="m"),
        output,
        *from_chat(completion({"role": "assistant", "content": "trunc"}, "length"))[1:],
    )
    assert resp.status == "incomplete" and resp.incomplete_details is not None
    validate(resp, "Response")


def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return json.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "x",
            "choices": choices,
            "usage": usage,
        }
    ).encode()


def run_stream(chunks: list[bytes], **body: Any) -> list[dict[str, Any]]:
    r = req(input="Hi", stream=True, **body)
    stream = ResponseStream(skeleton(r, response_id="resp_s", model="m"))
    tr = ChatStreamTranslator(stream)
    events = stream.start()
    for c in chunks:
        events += tr.feed(c)
    events += tr.end()
    out: list[dict[str, Any]] = msgspec.json.decode(msgspec.json.encode(events))
    validate_events(out)
    return out


def test_text_stream_emits_the_documented_sequence() -> None:
    events = run_stream(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            chunk({}, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
            b"[DONE]",
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
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(10))
    assert events[4]["logprobs"] == [] and events[6]["text"] == "Hello"
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["total_tokens"] == 5 and final["status"] == "completed"
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []


def test_tool_call_stream() -> None:
    events = run_stream(
        [
            chunk(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ],
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
            chunk({}, "tool_calls"),
            b"[DONE]",
        ],
        tools=[WEATHER],
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[5]["arguments"] == '{"city":"Oslo"}' and events[5]["name"] == "get_weather"
    assert events[-1]["response"]["output"][0]["call_id"] == "call_a"


def test_stream_cut_mid_way_ends_in_response_failed_not_completed() -> None:
    events = run_stream([chunk({"content": "Hel"}), chunk({"content": "lo"})])
    assert events[-1]["type"] == "response.failed"
    assert not any(e["type"] in ("response.completed", "response.output_text.done") for e in events)
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["status"] == "incomplete"


def test_stream_stopped_by_length_is_incomplete() -> None:
    events = run_stream([chunk({"content": "abc"}), chunk({}, "length"), b"[DONE]"])
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
