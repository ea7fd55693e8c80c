"""Responses <-> Chat Completions, for backends that speak only Chat Completions.

`to_chat` turns a validated request plus its normalized conversation (prior turns from
`previous_response_id`, then this request's input) into a Chat Completions body. `from_chat`
turns a chat completion into Responses output items, usage and the incomplete reason.
`ChatStreamTranslator` feeds chat stream chunks into a `ResponseStream`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.ids import new_id
from proxy_plugins.adapter.translate.events import Event, ResponseStream
from proxy_plugins.adapter.translate.request import CreateResponse, Item
from proxy_plugins.adapter.translate.types import FunctionCallItem, MessageItem, OutputItem, OutputText, Refusal, Usage

__all__ = ["INCOMPLETE_REASONS", "ChatStreamTranslator", "chat_usage", "from_chat", "to_chat"]

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def to_chat(req: CreateResponse, items: list[Item], upstream_model: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    for item in items:
        _append(messages, item)
    body: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if req.max_output_tokens is not None:
        body["max_tokens"] = req.max_output_tokens
    for name in ("temperature", "top_p"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    if req.tools:
        body["tools"] = [{"type": "function", "function": _chat_function(t)} for t in req.function_tools()]
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if isinstance(req.tool_choice, str):
        body["tool_choice"] = req.tool_choice
    elif isinstance(req.tool_choice, dict):
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice["name"]}}
    fmt = req.text_format()
    if fmt["type"] == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _chat_function(tool: Any) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    fn["parameters"] = (
        tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
    )
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return fn


def _append(messages: list[dict[str, Any]], item: Item) -> None:
    kind = item["type"]
    if kind == "function_call":
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = messages[-1] if messages else None
        # Parallel calls of one turn are one assistant message with several tool_calls.
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        elif last is not None and last["role"] == "assistant" and last.get("content") is not None:
            last["tool_calls"] = [call]
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        return
    if kind == "function_call_output":
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        return
    role = "system" if item["role"] == "developer" else item["role"]
    parts = item["content"]
    if role == "assistant":
        text = "".join(p.get("text") or "" for p in parts if p["type"] == "output_text")
        refusal = "".join(p.get("refusal") or "" for p in parts if p["type"] == "refusal")
        msg: dict[str, Any] = {"role": "assistant", "content": text}
        if refusal:
            msg["refusal"] = refusal
        messages.append(msg)
        return
    if all(p["type"] == "input_text" for p in parts):
        # Plain strings reach every Chat server; some reject the list form for system messages.
        messages.append({"role": role, "content": "\n".join(p["text"] for p in parts)})
        return
    content: list[dict[str, Any]] = []
    for p in parts:
        if p["type"] == "input_text":
            content.append({"type": "text", "text": p["text"]})
        else:
            content.append({"type": "image_url", "image_url": {"url": p["image_url"], "detail": p["detail"]}})
    messages.append({"role": role, "content": content})


class _Fn(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Fn | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _Details(msgspec.Struct):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_tokens: int | None = None


class _ChatUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _ChatUsage | None = None


def chat_usage(u: _ChatUsage | None) -> Usage:
    if u is None:
        return Usage.of(0, 0)
    pd, cd = u.prompt_tokens_details, u.completion_tokens_details
    return Usage.of(
        u.prompt_tokens,
        u.completion_tokens,
        cached=(pd.cached_tokens or 0) if pd else 0,
        cache_write=(pd.cache_write_tokens or 0) if pd else 0,
        reasoning=(cd.reasoning_tokens or 0) if cd else 0,
    )


def from_chat(body: bytes) -> tuple[list[OutputItem], Usage, str | None]:
    """Output items, usage and the incomplete reason (None when complete) of a chat completion."""
    completion = msgspec.json.decode(body, type=_Completion)
    output: list[OutputItem] = []
    reason: str | None = None
    if completion.choices:
        choice = completion.choices[0]
        msg = choice.message or _Message()
        parts: list[OutputText | Refusal] = []
        if msg.content:
            parts.append(OutputText(text=msg.content))
        if msg.refusal:
            parts.append(Refusal(refusal=msg.refusal))
        if parts:
            output.append(MessageItem(id=new_id("msg"), status="completed", content=list(parts)))
        for call in msg.tool_calls or []:
            fn = call.function or _Fn()
            output.append(
                FunctionCallItem(
                    id=new_id("fc"),
                    call_id=call.id or new_id("fc"),
                    name=fn.name or "",
                    arguments=fn.arguments or "",
                    status="completed",
                )
            )
        reason = INCOMPLETE_REASONS.get(choice.finish_reason or "")
        if reason and output and isinstance(output[0], MessageItem):
            output[0].status = "incomplete"
    return output, chat_usage(completion.usage), reason


class ChatStreamTranslator:
    """Chat stream chunks in, Responses events out. `end()` decides how the stream finished:
    without a `finish_reason` the upstream was cut and the response fails."""

    def __init__(self, stream: ResponseStream) -> None:
        self.stream = stream
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def feed(self, data: bytes) -> list[Event]:
        if data.strip() == b"[DONE]":
            return []
        chunk = msgspec.json.decode(data, type=_Completion)
        if chunk.usage is not None:
            self.usage = chat_usage(chunk.usage)
        out: list[Event] = []
        for choice in chunk.choices[:1]:
            delta = choice.delta or _Message()
            if delta.content:
                out += self.stream.text(delta.content)
            if delta.refusal:
                out += self.stream.refusal(delta.refusal)
            for call in delta.tool_calls or []:
                fn = call.function or _Fn()
                if call.id or (fn.name and not self.stream.has_call(call.index)):
                    out += self.stream.tool_call(call.index, call.id or "", fn.name or "")
                if fn.arguments:
                    out += self.stream.tool_arguments(call.index, fn.arguments)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return out

    def end(self) -> list[Event]:
        if self.finish_reason is None:
            return self.stream.fail(
                "server_error",
                "The model backend's stream ended before the response was complete.",
                self.usage,
            )
        return self.stream.finish(self.usage or Usage.of(0, 0), INCOMPLETE_REASONS.get(self.finish_reason))
