"""Chat Completions on Anthropic Messages backends: requests, answers, streams, tool calls, usage.

Errors come back through `backends.map_status` (Anthropic's `{"type":"error","error":{"type",
"message"}}` keeps `error.message` like OpenAI's shape). Structured output (`response_format`
json_object/json_schema) is refused rather than approximated: Messages has no equivalent that
guarantees the same contract.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import msgspec

from core.contract import output_cap
from core.errors import ApiError
from proxy_plugins.adapter.capabilities import refuse
from proxy_plugins.adapter.chat_limit import length_tail
from proxy_plugins.adapter.context import RequestContext, Usage
from proxy_plugins.adapter.counting import count_input
from proxy_plugins.adapter.exchange import DONE, Exchange, sse, stream_error
from proxy_plugins.adapter.metering import metadata, metadata_comment
from proxy_plugins.adapter.services import Services

__all__ = ["FINISH", "ChunkTranslator", "chat", "from_message", "to_messages_request"]

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "refusal": "content_filter", "pause_turn": "stop"}
_encode = msgspec.json.encode


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            blocks.append(_image(str((part.get("image_url") or {}).get("url", ""))))
    return blocks


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if text := _text(message.get("content")):
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            raise ApiError("invalid_request_error", "A tool call's 'arguments' is not valid JSON.",
                           "messages") from None
        blocks.append({"type": "tool_use", "id": call.get("id", ""), "name": fn.get("name", ""), "input": args})
    return blocks


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None if parallel is not False else {"type": "auto"}
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": str((choice.get("function") or {}).get("name", ""))}
    else:
        raise ApiError("invalid_request_error", "Unsupported 'tool_choice'.", "tool_choice")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def to_messages_request(ctx: RequestContext, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        raise refuse(ctx, str(fmt["type"]), "response_format", "structured output on this backend")
    if (body.get("n") or 1) != 1:
        raise ApiError("unsupported_parameter", "'n' greater than 1 is not supported by this model.", "n")
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        # Messages wants user/assistant turns alternating: consecutive same-role turns merge.
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for m in body["messages"]:
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text(m.get("content")))
        elif role == "user":
            add("user", _user_blocks(m.get("content")))
        elif role == "assistant":
            add("assistant", _assistant_blocks(m))
        elif role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": m.get("tool_call_id", ""),
                          "content": _text(m.get("content"))}])
        else:
            raise ApiError("invalid_request_error", f"Unsupported message role {role!r}.", "messages")
    out: dict[str, Any] = {
        "model": ctx.model.upstream_name, "messages": messages, "stream": stream,
        "max_tokens": _max_tokens(ctx, body),
    }
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                         "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}}}
                        for t in body["tools"] if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and body.get("tools"):
        out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


def _max_tokens(ctx: RequestContext, body: dict[str, Any]) -> int:
    """Messages requires `max_tokens`: the client's limit, never more than the hold covers."""
    asked = body.get("max_completion_tokens") or body.get("max_tokens") or output_cap(ctx.model)
    held = ctx.meter.per_choice(1)
    return min(asked, held) if held else int(asked)


def usage_from_anthropic(usage: Any, previous: Usage | None = None) -> Usage:
    u = usage if isinstance(usage, dict) else {}
    cached = int(u.get("cache_read_input_tokens") or 0)
    fresh = int(u.get("input_tokens") or 0) + int(u.get("cache_creation_input_tokens") or 0)
    base = previous or Usage()
    return Usage(input_tokens=fresh + cached if "input_tokens" in u else base.input_tokens,
                 cached_tokens=cached if "input_tokens" in u else base.cached_tokens,
                 output_tokens=int(u.get("output_tokens") or base.output_tokens))


def _chat_usage(u: Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.total_tokens, "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


def from_message(ctx: RequestContext, msg: dict[str, Any]) -> dict[str, Any]:
    ctx.usage = usage_from_anthropic(msg.get("usage"))
    blocks = [b for b in msg.get("content") or [] if isinstance(b, dict)]
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = [{"id": b.get("id", ""), "type": "function",
              "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input") or {})}}
             for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {"id": f"chatcmpl-{msg.get('id', ctx.request_id)}", "object": "chat.completion",
            "created": int(time.time()), "model": ctx.requested_model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": FINISH.get(str(msg.get("stop_reason")), "stop")}],
            "usage": _chat_usage(ctx.usage)}


class ChunkTranslator:
    """Messages stream events -> Chat Completions chunks; `done` once `message_stop` arrived."""

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self.id = f"chatcmpl-{ctx.request_id}"
        self.created = int(time.time())
        self.tools: dict[int, int] = {}  # content block index -> tool_calls index
        self.done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.ctx.requested_model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def feed(self, kind: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = kind or str(data.get("type"))
        if kind == "message_start":
            msg = data.get("message") or {}
            self.id = f"chatcmpl-{msg.get('id', self.ctx.request_id)}"
            self.ctx.usage = usage_from_anthropic(msg.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tools[int(data.get("index", 0))] = len(self.tools)
                return [self._chunk({"tool_calls": [{"index": index, "id": block.get("id", ""), "type": "function",
                                                     "function": {"name": block.get("name", ""), "arguments": ""}}]})]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") in ("text_delta", "input_json_delta") and not self.ctx.meter.produce():
                return []  # past the output the hold covers: the caller ends the stream
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self.tools.get(int(data.get("index", 0)), 0)
                return [self._chunk({"tool_calls": [{"index": index,
                                                     "function": {"arguments": delta.get("partial_json", "")}}]})]
            return []
        if kind == "message_delta":
            self.ctx.usage = usage_from_anthropic(data.get("usage"), self.ctx.usage)
            self.ctx.meter.reported = True
            reason = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, FINISH.get(str(reason), "stop"))] if reason else []
        if kind == "message_stop":
            self.done = True
        elif kind == "error":
            err = data.get("error") or {}
            code = "upstream_unavailable" if err.get("type") == "overloaded_error" else "upstream_error"
            raise ApiError(code, f"The model backend failed mid-stream: {err.get('message', '')}"[:2000])
        return []

    def usage_chunk(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.ctx.requested_model, "choices": [], "usage": _chat_usage(self.ctx.usage),
                "x_nx": metadata(self.ctx)}


async def chat(svc: Services, ctx: RequestContext, body: dict[str, Any], exchange: Exchange,
               client_wants_usage: bool) -> None:
    stream = bool(body.get("stream"))
    try:
        request = to_messages_request(ctx, body, stream)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        # The translation reads only the client's body: a field of the wrong type or shape, which
        # an OpenAI backend would refuse with a 400 of its own (check_chat covers the common ones).
        raise ApiError("invalid_request_error", "The request body has a field of the wrong type or shape for "
                       f"this model ({type(exc).__name__}: {str(exc)[:200]}).") from None
    payload = _encode(request)
    if not stream:
        reply = await svc.backends.post(ctx.backend, "messages", payload, ctx.org_id)
        try:
            msg = msgspec.json.decode(reply.body)
        except msgspec.DecodeError:
            raise ApiError("upstream_error", "The model backend sent a malformed answer.") from None
        await exchange.json(_encode(from_message(ctx, msg if isinstance(msg, dict) else {})))
        return
    translator = ChunkTranslator(ctx)
    ctx.count_input = functools.partial(count_input, svc.backends, ctx.backend, "messages", request, ctx.org_id)
    async with svc.backends.stream(ctx.backend, "messages", payload, ctx.org_id) as events:
        await exchange.start_stream()
        try:
            async for event in events:
                try:
                    data = msgspec.json.decode(event.data)
                except msgspec.DecodeError:
                    raise ApiError("upstream_error", "The model backend sent a malformed stream event.") from None
                for chunk in translator.feed(event.event, data if isinstance(data, dict) else {}):
                    await exchange.event(sse(chunk))
                if ctx.meter.stopped:  # past the output the hold covers
                    await exchange.finish(await length_tail(ctx, client_wants_usage))
                    return
                if translator.done:
                    await ctx.complete_usage()
                    tail = sse(translator.usage_chunk()) if client_wants_usage else b""
                    await exchange.finish(tail + metadata_comment(ctx) + DONE)
                    return
            raise ApiError("upstream_error", "The model backend's stream ended before it was complete.")
        except ApiError as exc:
            await ctx.complete_usage()
            await exchange.finish(stream_error(exc) + metadata_comment(ctx), status=exc.status)
