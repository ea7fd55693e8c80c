"""Answers in the OpenAI and Anthropic wire formats. Each returns `Reply` (JSON) or `Stream` (a
list of ready SSE frames): app.py applies timing, cuts and recording uniformly to both."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec

from tests.simulator.content import count_words, embed, reply_words, sample_for_schema, tool_call_for
from tests.simulator.directives import Directives
from tests.simulator.embeddings_b64 import to_base64

__all__ = ["Reply", "Stream", "anthropic_messages", "chat", "count_tokens", "embeddings", "input_tokens", "models",
           "responses"]

_encode = msgspec.json.encode


class Reply(msgspec.Struct):
    status: int
    body: Any
    headers: dict[str, str] = {}


class Stream(msgspec.Struct):
    frames: list[bytes]


def _data(obj: Any) -> bytes:
    return b"data: " + _encode(obj) + b"\n\n"


def _event(name: str, obj: Any) -> bytes:
    return f"event: {name}\n".encode() + _data(obj)


def _plan(body: dict[str, Any], d: Directives) -> tuple[list[str], tuple[str, str] | None]:
    """(text deltas, tool call) the model 'decides' on, from the request."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    fmt = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    if tools and choice != "none" and last.get("role") not in ("tool",) \
            and not any(isinstance(c, dict) and c.get("type") == "tool_result" for c in _list(last.get("content"))):
        return [], tool_call_for(tools, choice)
    if last.get("role") == "tool":
        return [f"Tool result: {last.get('content')}"], None
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or fmt).get("schema")
        return [json.dumps(sample_for_schema(schema))], None
    if fmt.get("type") == "json_object":
        return ['{"ok": true}'], None
    return reply_words(d.chunks), None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def chat(body: dict[str, Any], d: Directives) -> Reply | Stream:
    words, call = _plan(body, d)
    created, cid, model = int(time.time()), "chatcmpl-sim", body.get("model")
    prompt = count_words(body.get("messages"))
    usage = {"prompt_tokens": prompt, "completion_tokens": len(words) or 1,
             "total_tokens": prompt + (len(words) or 1), "prompt_tokens_details": {"cached_tokens": 0}}
    finish = "tool_calls" if call else "stop"
    tool_calls = [{"id": "call_sim1", "type": "function", "function": {"name": call[0], "arguments": call[1]}}] \
        if call else None
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if call else "".join(words),
                                   "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return Reply(200, {"id": cid, "object": "chat.completion", "created": created, "model": model,
                           "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                           "usage": usage})

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        return _data({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                      "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]})

    frames = [chunk({"role": "assistant", "content": ""})]
    if call:
        frames.append(chunk({"tool_calls": [{"index": 0, "id": "call_sim1", "type": "function",
                                             "function": {"name": call[0], "arguments": ""}}]}))
        frames.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": call[1]}}]}))
    frames += [chunk({"content": w}) for w in words]
    frames.append(chunk({}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        frames.append(_data({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                             "choices": [], "usage": usage}))
    frames.append(b"data: [DONE]\n\n")
    return Stream(frames)


def embeddings(body: dict[str, Any], d: Directives) -> Reply:
    raw = body.get("input")
    # A string, or an array of token ids, is one input (as OpenAI reads it); an array of either, several.
    one = isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw))
    texts = [raw] if one else list(raw or [])
    dims = int(body.get("dimensions") or 8)
    b64 = body.get("encoding_format") == "base64" and not d.float_only
    data = [{"object": "embedding", "index": i,
             "embedding": to_base64(embed(str(t), dims)) if b64 else embed(str(t), dims)}
            for i, t in enumerate(texts)]
    data.reverse()  # some providers answer out of order: the platform must sort by index
    tokens = count_words(texts)
    return Reply(200, {"object": "list", "data": data, "model": body.get("model"),
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def models(names: list[str]) -> Reply:
    return Reply(200, {"object": "list", "data": [{"id": n, "object": "model", "created": 1700000000,
                                                   "owned_by": "simulator"} for n in names]})


def responses(body: dict[str, Any], d: Directives) -> Reply | Stream:
    text = "".join(reply_words(d.chunks))
    tokens = count_words(body.get("input"))
    usage = {"input_tokens": tokens, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": d.chunks, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": tokens + d.chunks}
    item = {"id": "msg_sim", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}
    resp = {"id": "resp_sim", "object": "response", "created_at": int(time.time()), "status": "completed",
            "model": body.get("model"), "output": [item], "usage": usage, "error": None,
            "incomplete_details": None}
    if not body.get("stream"):
        return Reply(200, resp)
    start = {**resp, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": start}), ("response.in_progress", {"response": start}),
        ("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}}),
        ("response.content_part.added", {"item_id": "msg_sim", "output_index": 0, "content_index": 0,
                                         "part": {"type": "output_text", "text": "", "annotations": []}})]
    events += [("response.output_text.delta", {"item_id": "msg_sim", "output_index": 0, "content_index": 0,
                                               "delta": w, "logprobs": []}) for w in reply_words(d.chunks)]
    events += [("response.output_text.done", {"item_id": "msg_sim", "output_index": 0, "content_index": 0,
                                              "text": text, "logprobs": []}),
               ("response.content_part.done", {"item_id": "msg_sim", "output_index": 0, "content_index": 0,
                                               "part": item["content"][0]}),
               ("response.output_item.done", {"output_index": 0, "item": item}),
               ("response.completed", {"response": resp})]
    return Stream([_event(name, {"type": name, "sequence_number": i, **payload})
                   for i, (name, payload) in enumerate(events)])


def input_tokens(body: dict[str, Any]) -> Reply:
    """OpenAI's `POST /v1/responses/input_tokens`, counted as `responses` counts its usage (chat
    messages given as input items count as `chat` counts them)."""
    return Reply(200, {"object": "response.input_tokens", "input_tokens": count_words(body.get("input"))})


def count_tokens(body: dict[str, Any]) -> Reply:
    """Anthropic's `POST /v1/messages/count_tokens`, counted as `anthropic_messages` counts."""
    return Reply(200, {"input_tokens": count_words(body.get("messages")) + count_words(body.get("system") or "")})


def anthropic_messages(body: dict[str, Any], d: Directives) -> Reply | Stream:
    if not isinstance(body.get("max_tokens"), int):
        return Reply(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                      "message": "max_tokens: Field required"}})
    words, call = _plan(body, d)
    model = body.get("model")
    usage_in = count_words(body.get("messages")) + count_words(body.get("system") or "")
    stop = "tool_use" if call else "end_turn"
    content: list[dict[str, Any]] = [{"type": "text", "text": "".join(words)}] if words else []
    if call:
        content.append({"type": "tool_use", "id": "toolu_sim1", "name": call[0], "input": json.loads(call[1])})
    if not body.get("stream"):
        return Reply(200, {"id": "msg_sim", "type": "message", "role": "assistant", "model": model,
                           "content": content, "stop_reason": stop, "stop_sequence": None,
                           "usage": {"input_tokens": usage_in, "output_tokens": len(words) or 1,
                                     "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}})
    frames = [_event("message_start", {"type": "message_start", "message": {
        "id": "msg_sim", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "usage": {"input_tokens": usage_in, "output_tokens": 1}}}),
        _event("ping", {"type": "ping"})]
    index = 0
    if words:
        frames.append(_event("content_block_start", {"type": "content_block_start", "index": 0,
                                                     "content_block": {"type": "text", "text": ""}}))
        frames += [_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                  "delta": {"type": "text_delta", "text": w}}) for w in words]
        frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    if call:
        frames += [
            _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": "toolu_sim1", "name": call[0], "input": {}}}),
            _event("content_block_delta", {"type": "content_block_delta", "index": index,
                                           "delta": {"type": "input_json_delta", "partial_json": call[1]}}),
            _event("content_block_stop", {"type": "content_block_stop", "index": index})]
    frames += [_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop},
                                        "usage": {"output_tokens": len(words) or 1}}),
               _event("message_stop", {"type": "message_stop"})]
    return Stream(frames)
