"""The output limits of a Chat Completions request as the backend sees them, and the end of a
chat stream stopped at its hold.

`limit_output` makes the backend body ask for no more than the hold covers (meter.py): the
client's `max_tokens` / `max_completion_tokens` are kept when within it (the sidecar refused any
above the model's cap), and the held amount is asked for when the client named none, so a
backend never generates output nobody pays for. A backend that produces more anyway is stopped
by the meter; `length_tail` then ends the stream as the backend would have at its limit:
`finish_reason: "length"`, the usage chunk when asked for, the metadata and `[DONE]`.
"""

from __future__ import annotations

import time
from typing import Any

from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.exchange import DONE, sse
from proxy_plugins.adapter.metering import metadata, metadata_comment

__all__ = ["length_tail", "limit_output"]

_FIELDS = ("max_tokens", "max_completion_tokens")


def limit_output(ctx: RequestContext, request: dict[str, Any]) -> None:
    n = request.get("n")
    limit = ctx.meter.per_choice(n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1)
    if not limit:
        return
    named = [name for name in _FIELDS if isinstance(request.get(name), int)]
    for name in named:
        request[name] = min(request[name], limit)
    if not named:
        # OpenAI's reasoning models refuse `max_tokens`; chat-only servers may not know the newer name.
        request["max_completion_tokens" if ctx.backend.protocol == "openai" else "max_tokens"] = limit


async def length_tail(ctx: RequestContext, client_wants_usage: bool) -> bytes:
    await ctx.complete_usage()
    head = {"id": f"chatcmpl-{ctx.request_id}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": ctx.requested_model}
    out = sse({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]})
    if client_wants_usage:
        u = ctx.usage
        out += sse({**head, "choices": [], "x_nx": metadata(ctx), "usage": {
            "prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}})
    return out + metadata_comment(ctx) + DONE
