"""The last step of every inference answer: make its charge durable before its final bytes go out.

One transaction settles the sidecar's hold at the actual usage (the charge, the usage record,
budgets, thresholds and `request.completed` are written by `ledger.settle_hold`) and stores the
answer under its Idempotency-Key, so "charged" and "answer stored" commit together: a retry after a
crash either finds the stored answer or finds nothing charged. Server-side failures (5xx, 429)
charge nothing and give the Idempotency-Key back, so a retry runs again.

Answers completing at the same time share that transaction (control_plane/groupcommit.py); each
is still sent only after the commit that holds its own charge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_plane import idempotency, ledger
from control_plane.groupcommit import GroupCommit
from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.metering import wallet_debit

__all__ = ["Committer", "Headers"]

log = logging.getLogger("nx.adapter.commit")

Headers = list[tuple[bytes, bytes]]


class _Item(msgspec.Struct, frozen=True):
    ctx: RequestContext
    status: int
    body: bytes
    headers: Callable[[], Headers]
    ttft_ms: int | None
    latency_ms: int


async def _commit(conn: AsyncConnection, item: _Item) -> Headers:
    ctx, status = item.ctx, item.status
    failed = status >= 500 or status == 429
    if ctx.hold_price is not None:
        expected = wallet_debit(ctx)
        usage = ledger.Usage(
            status=status, input_tokens=0 if failed else ctx.usage.input_tokens,
            cached_tokens=0 if failed else min(ctx.usage.cached_tokens, ctx.usage.input_tokens),
            output_tokens=0 if failed else ctx.usage.output_tokens, ttft_ms=item.ttft_ms,
            latency_ms=item.latency_ms, cache_status=ctx.cache_status)
        settled = await ledger.settle_hold(conn, ctx.request_id, usage)
        ctx.charged = settled.charged
        if not failed and settled.charged != expected:
            log.error("request %s: charged %d but priced %d", ctx.request_id, settled.charged, expected)
    rendered = item.headers()
    record = ctx.idempotency_record
    if record is not None:
        if failed:
            await idempotency.release(conn, record)
        else:
            stored = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in rendered]
            await idempotency.complete(conn, record, idempotency.StoredResponse(status, stored, item.body))
    return rendered


class Committer:
    def __init__(self, engine: AsyncEngine) -> None:
        self.commits: GroupCommit[_Item, Headers] = GroupCommit(engine, _commit, order=lambda i: i.ctx.org_id)

    async def __call__(self, ctx: RequestContext, status: int, body: bytes,
                       headers: Callable[[], Headers]) -> Headers:
        """Settle and store; return the answer's headers, rendered after the charge is known.

        Raises when the charge cannot be made durable: the caller must not deliver the answer."""
        ctx.account_produced()
        if ctx.hold_price is None and ctx.idempotency_record is None:
            return headers()
        now = time.monotonic_ns()
        ttft = None if ctx.first_byte_ns is None else (ctx.first_byte_ns - ctx.received_ns) // 1_000_000
        return await self.commits.submit(_Item(ctx, status, body, headers, ttft,
                                               (now - ctx.received_ns) // 1_000_000))

    async def close(self) -> None:
        await self.commits.close()
