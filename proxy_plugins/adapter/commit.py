"""The last step of every inference answer: make its charge durable before its final bytes go out.

One transaction settles the sidecar's hold at the actual usage (the charge, the usage record,
budgets, thresholds and `request.completed` are written by `ledger.settle_hold`) and stores the
answer under its Idempotency-Key, so "charged" and "answer stored" commit together: a retry after a
crash either finds the stored answer or finds nothing charged. Server-side failures (5xx, 429)
charge nothing and give the Idempotency-Key back, so a retry runs again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane import idempotency, ledger
from control_plane.db import write_tx
from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.metering import wallet_debit

__all__ = ["Committer", "Headers"]

log = logging.getLogger("nx.adapter.commit")

Headers = list[tuple[bytes, bytes]]


class Committer:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def __call__(self, ctx: RequestContext, status: int, body: bytes,
                       headers: Callable[[], Headers]) -> Headers:
        """Settle and store; return the answer's headers, rendered after the charge is known.

        Raises when the charge cannot be made durable: the caller must not deliver the answer."""
        if ctx.hold_price is None and ctx.idempotency_record is None:
            return headers()
        now = time.monotonic_ns()
        latency = (now - ctx.received_ns) // 1_000_000
        ttft = None if ctx.first_byte_ns is None else (ctx.first_byte_ns - ctx.received_ns) // 1_000_000
        ctx.account_produced()
        async with write_tx(self.engine) as conn:
            if ctx.hold_price is not None:
                expected = wallet_debit(ctx)
                failed = status >= 500 or status == 429
                usage = ledger.Usage(
                    status=status, input_tokens=0 if failed else ctx.usage.input_tokens,
                    cached_tokens=0 if failed else min(ctx.usage.cached_tokens, ctx.usage.input_tokens),
                    output_tokens=0 if failed else ctx.usage.output_tokens, ttft_ms=ttft, latency_ms=latency,
                    cache_status=ctx.cache_status)
                settled = await ledger.settle_hold(conn, ctx.request_id, usage)
                ctx.charged = settled.charged
                if not failed and settled.charged != expected:
                    log.error("request %s: charged %d but priced %d", ctx.request_id, settled.charged, expected)
            rendered = headers()
            record = ctx.idempotency_record
            if record is not None:
                if status >= 500 or status == 429:
                    await idempotency.release(conn, record)
                else:
                    stored = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in rendered]
                    await idempotency.complete(conn, record, idempotency.StoredResponse(status, stored, body))
        return rendered
