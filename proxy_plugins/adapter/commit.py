"""The last step of every inference answer: make its charge durable before its final bytes go out.

One transaction settles the sidecar's hold at the actual usage (the charge, the usage record,
budgets, thresholds and `request.completed` are written by `ledger.settle_many`) and stores the
answer under its Idempotency-Key, so "charged" and "answer stored" commit together: a retry after a
crash either finds the stored answer or finds nothing charged. Server-side failures (5xx, 429)
and streams the client left (499) give the Idempotency-Key back, so a retry runs again; they
charge nothing unless output was already delivered (a stream that failed or was cut midway pays
for what it produced, meter.py), and their usage record keeps their status.

Answers completing at the same time share that transaction (core/groupcommit.py); each
is still sent only after the commit that holds its own charge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import idempotency, ledger
from core.groupcommit import GroupCommit
from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.metering import route_attempts, wallet_debit

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


def _usage(item: _Item) -> ledger.Usage:
    ctx = item.ctx
    failed = _failed(item.status) and not ctx.meter.produced
    routed = bool(ctx.attempts) and ctx.hold_price is not None
    return ledger.Usage(
        status=item.status, input_tokens=0 if failed else ctx.usage.input_tokens,
        cached_tokens=0 if failed else min(ctx.usage.cached_tokens, ctx.usage.input_tokens),
        output_tokens=0 if failed else ctx.usage.output_tokens, ttft_ms=item.ttft_ms,
        latency_ms=item.latency_ms, cache_status=ctx.cache_status,
        # A routed request is charged at the price of the target that answered (attempts.py).
        model_id=ctx.model.id if routed else None,
        price_version=ctx.hold_price.version if routed and ctx.hold_price is not None else None,
        backend_id=ctx.backend.id if routed else None,
        route_attempts=route_attempts(ctx).decode() if routed else None)


def _failed(status: int) -> bool:
    return status >= 500 or status in (429, 499)


async def _commit_batch(conn: AsyncConnection, items: list[_Item]) -> list[Headers | BaseException]:
    """The optimistic path: `ledger.settle_batch` (fewer statements per item); it raises when the
    batch is not plain, and the group commit reruns each item alone with `_commit_one`."""
    return await _commit_many(conn, items, batch=True)


async def _commit_one(conn: AsyncConnection, item: _Item) -> Headers:
    outcome = (await _commit_many(conn, [item]))[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def _commit_many(conn: AsyncConnection, items: list[_Item], *,
                       batch: bool = False) -> list[Headers | BaseException]:
    """A batch's settlements in one `settle_many` (budgets and balances move once per scope and
    organization, not once per request), or `settle_batch`, then each answer's Idempotency-Key
    record. A refused settlement (`hold_already_resolved`, ...) wrote nothing; that answer alone
    is withheld."""
    billed = [i for i, item in enumerate(items) if item.ctx.hold_price is not None]
    charges = [(items[i].ctx.request_id, _usage(items[i])) for i in billed]
    settled: list[ledger.Settlement] | list[ledger.Settlement | ledger.LedgerError]
    if batch:
        settled = await ledger.settle_batch(conn, charges)
    else:
        # `late`: a hold that expired while its answer was being served is still charged (settle.py).
        settled = await ledger.settle_many(conn, charges, late=True)
    by_index = dict(zip(billed, settled, strict=True))
    outcomes: list[Headers | BaseException] = []
    for i, item in enumerate(items):
        ctx, failed = item.ctx, _failed(item.status)
        settlement = by_index.get(i)
        if isinstance(settlement, ledger.LedgerError):  # withheld: Exchange answers billing_unavailable
            outcomes.append(settlement)
            continue
        if settlement is not None:
            expected = wallet_debit(ctx)
            ctx.charged = settlement.charged
            if not failed and settlement.charged != expected:
                log.error("request %s: charged %d but priced %d", ctx.request_id, settlement.charged, expected)
        rendered = item.headers()
        record = ctx.idempotency_record
        if record is not None:
            if failed:
                await idempotency.release(conn, record)
            else:
                stored = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in rendered]
                await idempotency.complete(conn, record, idempotency.StoredResponse(item.status, stored, item.body))
        outcomes.append(rendered)
    return outcomes


class Committer:
    def __init__(self, engine: AsyncEngine) -> None:
        self.commits: GroupCommit[_Item, Headers] = GroupCommit(engine, _commit_one, work_many=_commit_batch,
                                                                order=lambda i: i.ctx.org_id)

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
