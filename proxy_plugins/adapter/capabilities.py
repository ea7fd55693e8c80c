"""Refuse what a model cannot do, naming the parameter: never drop a request part silently.

Used by /v1/chat/completions here; the Responses side checks its own request shape the same way.
"""

from __future__ import annotations

from typing import Any

from core.errors import ApiError
from proxy_plugins.adapter.context import RequestContext

__all__ = ["check_chat", "refuse"]


def refuse(ctx: RequestContext, capability: str, param: str, what: str) -> ApiError:
    return ApiError("unsupported_capability",
                    f"The model '{ctx.requested_model}' does not support {what} "
                    f"(capability '{capability}'); remove '{param}' or choose another model.", param)


def _parts(message: Any) -> list[Any]:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else []


def check_chat(ctx: RequestContext, body: dict[str, Any]) -> None:
    """Validate the shape a handler relies on, then every capability the request needs."""
    messages = body.get("messages")
    if messages is None:
        raise ApiError("missing_required_parameter", "Missing required parameter: 'messages'.", "messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ApiError("invalid_request_error", "'messages' must be a non-empty array of message objects.",
                       "messages")
    for name in ("tools", "functions"):
        value = body.get(name)
        if value is not None and not isinstance(value, list):
            raise ApiError("invalid_request_error", f"'{name}' must be an array.", name)
        if value and not ctx.can("tools"):
            raise refuse(ctx, "tools", name, "tool calling")
    if body.get("tool_choice") not in (None, "none", "auto") and not ctx.can("tools"):
        raise refuse(ctx, "tools", "tool_choice", "tool calling")
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise ApiError("invalid_request_error",
                           "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
                           "response_format")
        if kind == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
            raise ApiError("missing_required_parameter",
                           "Missing required parameter: 'response_format.json_schema'.", "response_format")
        if kind != "text" and not ctx.can(str(kind)):
            raise refuse(ctx, str(kind), "response_format", f"response_format '{kind}'")
    for message in messages:
        for part in _parts(message):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image_url" and not ctx.can("vision"):
                raise refuse(ctx, "vision", "messages", "image inputs")
            if kind in ("input_audio", "file"):
                raise refuse(ctx, kind, "messages", f"'{kind}' content parts")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError("invalid_request_error", "'stream' must be a boolean.", "stream")
    if stream and not ctx.can("streaming"):
        raise refuse(ctx, "streaming", "stream", "streaming")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise ApiError("invalid_request_error",
                       "'stream_options' is only allowed with 'stream': true and must be an object.",
                       "stream_options")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ApiError("invalid_request_error", f"'{name}' must be a positive integer.", name)
        if ctx.model.max_output_tokens and value > ctx.model.max_output_tokens:
            raise ApiError("invalid_request_error",
                           f"'{name}' is too large: the model '{ctx.requested_model}' produces at most "
                           f"{ctx.model.max_output_tokens} tokens.", name)
