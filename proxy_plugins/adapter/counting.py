"""Input tokens of a request whose stream ended before the backend reported its usage (cut by
the client, failed upstream, cancelled, stopped at its hold), counted by the backend itself,
with the model's own tokenizer and prompt template:

- OpenAI-protocol backends: `POST /responses/input_tokens` (OpenAI's input token count). A chat
  request is counted there too, its messages given as Responses input items;
- Anthropic backends: `POST /messages/count_tokens`.

Chat-only backends (`openai_chat`: llama.cpp- or vLLM-style servers) have no standard count, nor
does a backend whose count fails or times out: the input is then estimated from the text the
request carries (its strings' characters / 4, never the JSON's bytes), and a warning says so.
Only cut streams pay for this call; a completed answer carries the backend's own usage.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from core.errors import ApiError
from core.snapshot import BackendRecord
from proxy_plugins.adapter.backends import Backends

__all__ = ["count_input", "text_estimate"]

log = logging.getLogger("nx.adapter.counting")

COUNT_WITHIN_S = 5.0
_RESPONSES_FIELDS = ("model", "input", "instructions", "tools", "tool_choice", "text", "reasoning",
                     "parallel_tool_calls", "truncation")
_MESSAGES_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking")


class _Count(msgspec.Struct):
    input_tokens: int


async def count_input(backends: Backends, backend: BackendRecord, path: str, payload: dict[str, Any],
                      tenant: str = "") -> int:
    """Input tokens of `payload` (the body sent to `path` on `backend` for organization `tenant`)."""
    request = _count_request(backend, path, payload)
    if request is not None:
        try:
            async with asyncio.timeout(COUNT_WITHIN_S):
                reply = await backends.post(backend, request[0], msgspec.json.encode(request[1]), tenant)
            return max(0, msgspec.json.decode(reply.body, type=_Count).input_tokens)
        except (ApiError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("backend %s could not count a request's input tokens (%s); estimating them",
                        backend.id, getattr(exc, "message", None) or type(exc).__name__)
    return text_estimate(payload)


def _count_request(backend: BackendRecord, path: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    if path == "messages":
        return "messages/count_tokens", {k: payload[k] for k in _MESSAGES_FIELDS if k in payload}
    if backend.protocol != "openai":
        return None
    if path == "responses":
        return "responses/input_tokens", {k: payload[k] for k in _RESPONSES_FIELDS if k in payload}
    if path == "chat/completions":
        body: dict[str, Any] = {"model": payload.get("model"), "input": _items(payload.get("messages"))}
        tools = [_tool(t) for t in payload.get("tools") or [] if isinstance(t, dict)]
        if tools:
            body["tools"] = tools
        return "responses/input_tokens", body
    return None


def _items(messages: Any) -> list[dict[str, Any]]:
    """Chat messages as Responses input items (what the count endpoint takes)."""
    items: list[dict[str, Any]] = []
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict):
            continue
        role, content = m.get("role"), m.get("content")
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": str(m.get("tool_call_id") or ""),
                          "output": content if isinstance(content, str) else msgspec.json.encode(content).decode()})
            continue
        if isinstance(content, list):
            content = [_part(p, role) for p in content if isinstance(p, dict)]
        if content:
            items.append({"role": role, "content": content})
        for call in [c for c in m.get("tool_calls") or [] if isinstance(c, dict)]:
            fn = call["function"] if isinstance(call.get("function"), dict) else {}
            items.append({"type": "function_call", "call_id": str(call.get("id") or ""),
                          "name": str(fn.get("name") or ""), "arguments": str(fn.get("arguments") or "")})
    return items


def _part(part: dict[str, Any], role: Any) -> dict[str, Any]:
    if part.get("type") == "image_url":
        url = part.get("image_url")
        return {"type": "input_image", "image_url": url.get("url") if isinstance(url, dict) else url}
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": kind, "text": str(part.get("text") or part.get("refusal") or "")}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function")
    if not isinstance(fn, dict):
        return tool
    return {"type": "function", **{k: fn[k] for k in ("name", "description", "parameters", "strict") if k in fn}}


def text_estimate(payload: Any) -> int:
    """A token per four characters of the text the request carries (every string in it but the
    model's name): the rule of thumb for English, used only when the backend cannot count."""
    chars = 0
    stack: list[Any] = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, dict):
            stack += [v for k, v in value.items() if k != "model"]
        elif isinstance(value, list):
            stack += value
    return -(-chars // 4)
