"""Responses <-> Anthropic Messages (`POST /v1/messages`).

Differences handled here (api-surface.md section 9): `system` is top-level (instructions, system
and developer messages are joined into it); only `user`/`assistant` roles, consecutive turns of one
role merged; `max_tokens` is required (the model's catalog limit when the client sets none); tool
calls are `tool_use` blocks with a parsed `input` object and results are `tool_result` blocks in a
user turn; usage reports cached tokens outside `input_tokens`, so they are added back to match
OpenAI's convention. Upstream HTTP errors are mapped by the backend client (backends.py).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from core.errors import ApiError
from core.ids import new_id
from proxy_plugins.adapter.translate.events import Event, ResponseStream
from proxy_plugins.adapter.translate.request import CreateResponse, Item
from proxy_plugins.adapter.translate.types import FunctionCallItem, MessageItem, OutputItem, OutputText, Refusal, Usage

__all__ = ["STREAM_ERROR_CODES", "AnthropicStreamTranslator", "from_anthropic", "to_anthropic"]

_INCOMPLETE = {"max_tokens": "max_output_tokens", "model_context_window_exceeded": "max_output_tokens"}
STREAM_ERROR_CODES = {
    "rate_limit_error": "rate_limit_exceeded",
    "overloaded_error": "server_error",
    "api_error": "server_error",
    "invalid_request_error": "invalid_prompt",
}


def to_anthropic(
    req: CreateResponse, items: list[Item], upstream_model: str, default_max_tokens: int
) -> dict[str, Any]:
    system: list[str] = [req.instructions] if req.instructions else []
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if item["type"] == "message" and item["role"] in ("system", "developer"):
            system.append("\n".join(p["text"] for p in item["content"] if p["type"] == "input_text"))
            continue
        role, blocks = _blocks(item, i)
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": messages,
        "max_tokens": req.max_output_tokens or default_max_tokens,
    }
    if system:
        body["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    if req.tools:
        body["tools"] = [
            {
                "name": t.name,
                "description": t.description or "",
                "input_schema": t.parameters or {"type": "object", "properties": {}},
            }
            for t in req.function_tools()
        ]
        choice = _tool_choice(req.tool_choice)
        if req.parallel_tool_calls is False:
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    fmt = req.text_format()
    if fmt["type"] == "json_schema":
        body["output_config"] = {"format": {"type": "json_schema", "schema": fmt["schema"]}}
    elif fmt["type"] == "json_object":
        raise ApiError(
            "unsupported_capability",
            "Anthropic models do not support text.format json_object; use json_schema.",
            "text.format",
        )
    if req.stream:
        body["stream"] = True
    return body


def _tool_choice(choice: str | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(choice, dict):
        return {"type": "tool", "name": choice["name"]}
    return {"type": {"required": "any", "none": "none"}.get(choice or "auto", "auto")}


def _blocks(item: Item, index: int) -> tuple[str, list[dict[str, Any]]]:
    kind = item["type"]
    if kind == "function_call":
        try:
            args = json.loads(item["arguments"] or "{}")
        except ValueError:
            raise ApiError(
                "invalid_request_error",
                "function_call arguments must be a JSON object.",
                f"input[{index}].arguments",
            ) from None
        return "assistant", [
            {
                "type": "tool_use",
                "id": item["call_id"],
                "name": item["name"],
                "input": args if isinstance(args, dict) else {},
            }
        ]
    if kind == "function_call_output":
        return "user", [{"type": "tool_result", "tool_use_id": item["call_id"], "content": item["output"]}]
    blocks: list[dict[str, Any]] = []
    for p in item["content"]:
        text = p.get("text") or p.get("refusal")
        if p["type"] in ("input_text", "output_text", "refusal") and text:
            # Anthropic rejects empty text blocks.
            blocks.append({"type": "text", "text": text})
        elif p["type"] == "input_image":
            blocks.append({"type": "image", "source": _image_source(p["image_url"])})
    return item["role"], blocks


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type = head.removeprefix("data:").split(";", 1)[0]
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


class _Block(msgspec.Struct):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Message(msgspec.Struct):
    content: list[_Block] = []
    stop_reason: str | None = None
    usage: _Usage | None = None


def _usage(u: _Usage | None, output_tokens: int | None = None) -> Usage:
    u = u or _Usage()
    cached, written = u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0
    out = output_tokens if output_tokens is not None else (u.output_tokens or 0)
    return Usage.of((u.input_tokens or 0) + cached + written, out, cached=cached, cache_write=written)


def from_anthropic(body: bytes) -> tuple[list[OutputItem], Usage, str | None]:
    msg = msgspec.json.decode(body, type=_Message)
    output: list[OutputItem] = []
    message = MessageItem(id=new_id("msg"), status="completed")
    for block in msg.content:
        if block.type == "text" and block.text is not None:
            if msg.stop_reason == "refusal":
                message.content.append(Refusal(refusal=block.text))
            else:
                message.content.append(OutputText(text=block.text))
        elif block.type == "tool_use":
            output.append(
                FunctionCallItem(
                    id=new_id("fc"),
                    call_id=block.id or new_id("fc"),
                    name=block.name or "",
                    arguments=json.dumps(block.input or {}),
                    status="completed",
                )
            )
    reason = _INCOMPLETE.get(msg.stop_reason or "")
    if message.content:
        message.status = "incomplete" if reason else "completed"
        output.insert(0, message)
    return output, _usage(msg.usage), reason


class _StreamEvent(msgspec.Struct):
    type: str
    index: int = 0
    message: _Message | None = None
    content_block: _Block | None = None
    delta: dict[str, Any] | None = None
    usage: _Usage | None = None
    error: dict[str, Any] | None = None


class AnthropicStreamTranslator:
    """Anthropic stream events in, Responses events out. Only `message_stop` completes the
    response; a stream that ends without it (a cut) or with an `error` event fails it."""

    def __init__(self, stream: ResponseStream) -> None:
        self.stream = stream
        self.start_usage: _Usage | None = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.stopped = False

    def usage(self) -> Usage:
        return _usage(self.start_usage, self.output_tokens)

    def feed(self, data: bytes) -> list[Event]:
        ev = msgspec.json.decode(data, type=_StreamEvent)
        delta = ev.delta or {}
        if ev.type == "message_start" and ev.message is not None:
            self.start_usage = ev.message.usage
        elif ev.type == "content_block_start" and ev.content_block is not None:
            block = ev.content_block
            if block.type == "tool_use":
                return self.stream.tool_call(ev.index, block.id or "", block.name or "")
            if block.type == "text" and block.text:
                return self.stream.text(block.text)
        elif ev.type == "content_block_delta":
            if delta.get("type") == "text_delta" and delta.get("text"):
                return self.stream.text(str(delta["text"]))
            if delta.get("type") == "input_json_delta":
                return self.stream.tool_arguments(ev.index, str(delta.get("partial_json") or ""))
        elif ev.type == "message_delta":
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            if ev.usage is not None and ev.usage.output_tokens is not None:
                self.output_tokens = ev.usage.output_tokens
        elif ev.type == "message_stop":
            self.stopped = True
            return self.stream.finish(self.usage(), _INCOMPLETE.get(self.stop_reason or ""))
        elif ev.type == "error":
            err = ev.error or {}
            code = STREAM_ERROR_CODES.get(str(err.get("type")), "server_error")
            return self.stream.fail(
                code, str(err.get("message") or "The model backend failed."), self.usage()
            )
        return []

    def end(self) -> list[Event]:
        if self.stream.done:
            return []
        return self.stream.fail(
            "server_error", "The model backend's stream ended before the response was complete.", self.usage()
        )
