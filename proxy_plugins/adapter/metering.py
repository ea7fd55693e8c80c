"""Response metadata and the request's charge.

Every inference answer carries `x-request-id`, `x-model`, `x-input-tokens`, `x-output-tokens`,
`x-cache-status` and `x-wallet-debit`. A JSON answer has them as headers. A stream's headers leave
before the usage is known, so a stream has the three known at the start (`x-request-id`, `x-model`,
`x-cache-status`) as headers, and all six in its final event:

- Chat Completions streams end with an SSE comment line `: x-nx {"x-request-id": ..., ...}` right
  before `data: [DONE]`. SSE parsers (both official SDKs included) skip comment lines, so clients
  that do not know it are unaffected; `curl` and `fetch` users can read it. When the client asked
  for `stream_options.include_usage`, the usage chunk also carries the same object as `x_nx`
  (the SDKs keep unknown fields: `chunk.x_nx` in Python, `chunk.x_nx` in Node).
- Responses streams carry it the same way (comment line before the stream ends).

`wallet_debit` is the ONE place that prices a request for its metadata; it agrees with the ledger's
charge by construction (same card, same integer formula) and settlement (commit.py) checks it.
"""

from __future__ import annotations

import msgspec

from core.money import format_usd, request_cost
from proxy_plugins.adapter.context import RequestContext

__all__ = ["metadata", "metadata_comment", "metadata_headers", "route_attempts", "wallet_debit"]


def wallet_debit(ctx: RequestContext) -> int:
    """Nano-dollars this request costs: the settled charge once settlement ran, else the price of
    its usage at the hold's card (the same integer formula settlement uses), else the catalog's."""
    if ctx.charged is not None:
        return ctx.charged
    price = ctx.hold_price or ctx.model.price
    if price is None:
        return 0
    usage = ctx.usage
    cached = min(usage.cached_tokens, usage.input_tokens)
    return request_cost(usage.input_tokens, cached, usage.output_tokens, price.input_nanos_per_mtok,
                        price.cached_input_nanos_per_mtok, price.output_nanos_per_mtok)


def metadata(ctx: RequestContext) -> dict[str, str]:
    """The six metadata values, by header name, from what the context knows now."""
    ctx.account_produced()
    meta = {
        "x-request-id": ctx.request_id,
        "x-model": ctx.model.id,
        "x-input-tokens": str(ctx.usage.input_tokens),
        "x-output-tokens": str(ctx.usage.output_tokens),
        "x-cache-status": ctx.cache_status,
        "x-wallet-debit": format_usd(wallet_debit(ctx)),
    }
    if ctx.attempts:
        meta["x-route-attempts"] = route_attempts(ctx).decode()
    return meta


def route_attempts(ctx: RequestContext) -> bytes:
    """`x-route-attempts`: a routed request's backend calls as a JSON array (target, backend,
    status, ms, error); every one of them was made before the answer's first byte."""
    return msgspec.json.encode(ctx.attempts)


def metadata_headers(ctx: RequestContext, *, final: bool = True) -> list[tuple[bytes, bytes]]:
    """ASGI headers. `final=False` (a stream's start) leaves out what is not known yet. Built
    directly rather than from `metadata()`'s dict: this runs for every answer."""
    ctx.account_produced()
    head = [(b"x-request-id", ctx.request_id.encode("latin-1")), (b"x-model", ctx.model.id.encode("latin-1"))]
    if ctx.attempts:
        head.append((b"x-route-attempts", route_attempts(ctx)))
    if not final:
        head.append((b"x-cache-status", ctx.cache_status.encode()))
        return head
    usage = ctx.usage
    head += [(b"x-input-tokens", b"%d" % usage.input_tokens), (b"x-output-tokens", b"%d" % usage.output_tokens),
             (b"x-cache-status", ctx.cache_status.encode()),
             (b"x-wallet-debit", format_usd(wallet_debit(ctx)).encode())]
    return head


def metadata_comment(ctx: RequestContext) -> bytes:
    """The SSE comment line that ends a stream with the metadata (see the module docstring)."""
    return b": x-nx " + msgspec.json.encode(metadata(ctx)) + b"\n\n"
