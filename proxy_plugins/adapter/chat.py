"""POST /v1/chat/completions.

OpenAI-protocol backends get the client's body as it came, with `model` rewritten to the upstream
name, the output limit never above what the hold covers (chat_limit.py) and, when streaming,
`stream_options.include_usage` forced on so the platform can meter every stream; the usage chunk
reaches the client only if it asked. Content chunks are counted as they are relayed (meter.py).
Anthropic backends go through the translation in anthropic.py. Streams are relayed event by
event as they arrive; an ordinary content chunk is relayed by chat_chunk.py without being rebuilt
as Python objects (its bytes are kept, only `model` is swapped), everything else (usage, errors,
nulls to drop) by `_relay` here.

A stream that ends without `[DONE]` (cut, stall) ends with `data: {"error": {...}}` and no
`[DONE]`: both official SDKs raise on a data event carrying `error`, so a truncated answer never
looks complete.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from core.errors import ApiError
from core.jsonbody import decode
from proxy_plugins.adapter import anthropic, chat_chunk
from proxy_plugins.adapter.capabilities import check_chat
from proxy_plugins.adapter.chat_limit import length_tail, limit_output
from proxy_plugins.adapter.context import RequestContext, Usage
from proxy_plugins.adapter.counting import count_input
from proxy_plugins.adapter.exchange import DONE, Exchange, sse, stream_error
from proxy_plugins.adapter.metering import metadata, metadata_comment
from proxy_plugins.adapter.services import Services

__all__ = ["handle", "usage_from_chat"]

_encode = msgspec.json.encode


def usage_from_chat(usage: Any) -> Usage | None:
    """OpenAI `CompletionUsage` -> Usage; None when absent or malformed."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    try:
        return Usage(input_tokens=int(usage.get("prompt_tokens") or 0),
                     cached_tokens=int(cached or 0), output_tokens=int(usage.get("completion_tokens") or 0))
    except (TypeError, ValueError):
        return None


def _tidy(obj: dict[str, Any], model: str) -> None:
    """Echo the client's model name; drop nulls some OpenAI-compatible servers send where the
    official schema wants a string or nothing (llama.cpp-style servers: `system_fingerprint`)."""
    obj["model"] = model
    for key in ("system_fingerprint", "service_tier"):
        if key in obj and obj[key] is None:
            del obj[key]
    for choice in obj.get("choices") or ():
        part = choice.get("message") or choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(part, dict):
            for key in [k for k, v in part.items() if v is None and k not in ("content", "refusal")]:
                del part[key]  # e.g. `tool_calls: null`, which the schema does not allow


def _decode(body: bytes) -> dict[str, Any]:
    try:
        data = decode(body)
    except msgspec.DecodeError:
        raise ApiError("invalid_json", "We could not parse the JSON body of your request.") from None
    if not isinstance(data, dict):
        raise ApiError("invalid_request_error", "The request body must be a JSON object.")
    return data


async def handle(svc: Services, ctx: RequestContext, body: bytes, exchange: Exchange) -> None:
    request = _decode(body)
    check_chat(ctx, request)
    stream = bool(request.get("stream"))
    # A JSON answer runs to its end even if its client leaves: it is then charged, not lost.
    exchange.detached = not stream
    options = request.get("stream_options") or {}
    client_wants_usage = bool(stream and options.get("include_usage"))
    if ctx.backend.protocol == "anthropic":
        await anthropic.chat(svc, ctx, request, exchange, client_wants_usage)
        return
    request["model"] = ctx.model.upstream_name
    for routing_only in ("models", "provider"):  # the platform's routing fields (docs/routing.md)
        request.pop(routing_only, None)
    limit_output(ctx, request)
    if stream:
        request["stream_options"] = {**options, "include_usage": True}
        ctx.count_input = functools.partial(count_input, svc.backends, ctx.backend, "chat/completions", request,
                                            ctx.org_id)
        await _stream(svc, ctx, _encode(request), exchange, client_wants_usage)
        return
    reply = await svc.backends.post(ctx.backend, "chat/completions", _encode(request), ctx.org_id)
    try:
        answer = msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        raise ApiError("upstream_error", "The model backend sent a malformed answer.") from None
    if not isinstance(answer, dict):
        raise ApiError("upstream_error", "The model backend sent a malformed answer.")
    ctx.usage = usage_from_chat(answer.get("usage")) or ctx.usage
    _tidy(answer, ctx.requested_model)
    await exchange.json(_encode(answer))


async def _stream(svc: Services, ctx: RequestContext, payload: bytes, exchange: Exchange,
                  client_wants_usage: bool) -> None:
    model_json = _encode(ctx.requested_model)
    async with svc.backends.stream(ctx.backend, "chat/completions", payload, ctx.org_id) as events:
        await exchange.start_stream()
        try:
            async for event in events:
                data = event.data
                if data == b"[DONE]":
                    await ctx.complete_usage()
                    await exchange.finish(metadata_comment(ctx) + DONE)
                    return
                fast = chat_chunk.relay(data, model_json)
                if fast is None:
                    if not await _relay(ctx, data, exchange, client_wants_usage):
                        break
                    continue
                if fast[1] and not ctx.meter.produce():
                    break
                await exchange.event(fast[0])
            else:
                raise ApiError("upstream_error", "The model backend's stream ended before it was complete.")
            # The backend went past the output the hold covers (it ignored the limit it was given).
            await exchange.finish(await length_tail(ctx, client_wants_usage))
        except ApiError as exc:
            await ctx.complete_usage()
            await exchange.finish(stream_error(exc) + metadata_comment(ctx), status=exc.status)


async def _relay(ctx: RequestContext, data: bytes, exchange: Exchange, client_wants_usage: bool) -> bool:
    """Relay one chunk the fast path declined; False when the meter stopped the stream."""
    try:
        chunk = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise ApiError("upstream_error", "The model backend sent a malformed stream event.") from None
    if not isinstance(chunk, dict):
        raise ApiError("upstream_error", "The model backend sent a malformed stream event.")
    if chunk.get("error"):
        err = chunk["error"] if isinstance(chunk["error"], dict) else {}
        raise ApiError("upstream_error", f"The model backend failed mid-stream: {err.get('message', '')}"[:2000])
    if any((c.get("delta") or {}).get("content") or (c.get("delta") or {}).get("tool_calls")
           for c in chunk.get("choices") or [] if isinstance(c, dict)) and not ctx.meter.produce():
        return False
    usage = usage_from_chat(chunk.get("usage"))
    if usage is not None:
        ctx.usage = usage
        ctx.meter.reported = True
        if not client_wants_usage:
            if not chunk.get("choices"):
                return True  # the usage-only chunk the platform asked for on its own behalf
            chunk["usage"] = None
        else:
            chunk["x_nx"] = metadata(ctx)
    _tidy(chunk, ctx.requested_model)
    await exchange.event(sse(chunk))
    return True
