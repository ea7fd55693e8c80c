"""`ledger.settle_batch` (the adapter's optimistic settlement path) writes what `settle_many` writes,
and a batch that is not plain raises, so the group commit reruns it item by item with
`settle_many`: each item then gets its own outcome, exactly as before."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import ledger
from core.db import read_tx, write_tx
from core.groupcommit import GroupCommit
from core.ledger import LedgerError, Settlement, Usage
from core.money import request_cost
from tests.money.conftest import PRICE, Tenant, make_tenant
from tests.money.helpers import assert_books_balance, balance, grant, hold, settle

HOLD_IN, HOLD_OUT = 1000, 500
HOLD_AMOUNT = request_cost(HOLD_IN, 0, HOLD_OUT, *PRICE)
# Within the hold, above it (the rest owed as a receivable), cached input, and nothing at all.
USAGES = [Usage(input_tokens=800, output_tokens=300, latency_ms=5),
          Usage(input_tokens=1000, output_tokens=900, latency_ms=5),
          Usage(input_tokens=600, cached_tokens=400, output_tokens=10, latency_ms=5),
          Usage(status=502, input_tokens=0, output_tokens=0, latency_ms=5)]


async def _settle_one(conn: AsyncConnection, item: tuple[str, Usage]) -> Settlement:
    result = (await ledger.settle_many(conn, [item], late=True))[0]
    if isinstance(result, LedgerError):
        raise result
    return result


async def _settle_batch(conn: AsyncConnection, items: list[tuple[str, Usage]]) -> list[Settlement | BaseException]:
    return list(await ledger.settle_batch(conn, items))


async def _tenant_with_holds(engine: AsyncEngine) -> tuple[Tenant, list[str]]:
    t = await make_tenant(engine, key_budget=100 * HOLD_AMOUNT)
    await grant(engine, t, HOLD_AMOUNT + HOLD_AMOUNT // 3, promo=True)
    await grant(engine, t, 20 * HOLD_AMOUNT)
    holds = [await hold(engine, t, HOLD_IN, HOLD_OUT) for _ in USAGES]
    return t, [h.request_id for h in holds]


async def _state(engine: AsyncEngine, t: Tenant) -> tuple[object, ...]:
    b = await balance(engine, t)
    async with read_tx(engine) as conn:
        usage = (await conn.execute(text(
            "SELECT status, input_tokens, cached_tokens, output_tokens, cost_nanos, txn_id IS NULL"
            " FROM usage_records WHERE org_id = :o ORDER BY cost_nanos, status"), {"o": t.org_id})).all()
        entries = (await conn.execute(text(
            "SELECT a.kind, e.amount FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id"
            " WHERE a.org_id = :o ORDER BY a.kind, e.amount"), {"o": t.org_id})).all()
        budgets = (await conn.execute(text(
            "SELECT spent, held FROM budget_usage WHERE org_id = :o ORDER BY spent, held"), {"o": t.org_id})).all()
    return b.available_nanos, b.held_nanos, [tuple(r) for r in usage], [tuple(r) for r in entries], \
        [tuple(r) for r in budgets]


async def test_settle_batch_writes_what_settle_many_writes(engine: AsyncEngine) -> None:
    one, one_ids = await _tenant_with_holds(engine)
    two, two_ids = await _tenant_with_holds(engine)
    async with write_tx(engine) as conn:
        many = await ledger.settle_many(conn, list(zip(one_ids, USAGES, strict=True)))
    async with write_tx(engine) as conn:
        batch = await ledger.settle_batch(conn, list(zip(two_ids, USAGES, strict=True)))
    assert [(s.charged, s.released, s.receivable, s.txn_id is None) for s in batch if isinstance(s, Settlement)] \
        == [(s.charged, s.released, s.receivable, s.txn_id is None) for s in many if isinstance(s, Settlement)]
    assert batch[1].receivable > 0 and batch[3].charged == 0
    assert await _state(engine, one) == await _state(engine, two)
    await assert_books_balance(engine, two.org_id)


async def test_a_batch_that_is_not_plain_reruns_item_by_item(engine: AsyncEngine) -> None:
    t, ids = await _tenant_with_holds(engine)
    await settle(engine, ids[1], 10, 10)  # already settled: this item alone is refused
    commits: GroupCommit[tuple[str, Usage], Settlement] = GroupCommit(engine, _settle_one,
                                                                     work_many=_settle_batch)
    try:
        results = await asyncio.gather(*(commits.submit(item) for item in zip(ids, USAGES, strict=True)),
                                       return_exceptions=True)
    finally:
        await commits.close()
    assert isinstance(results[1], LedgerError) and results[1].code == "hold_already_resolved"
    assert all(isinstance(r, Settlement) for i, r in enumerate(results) if i != 1)
    assert (await balance(engine, t)).held_nanos == 0
    await assert_books_balance(engine, t.org_id)


async def _crossed(engine: AsyncEngine, t: Tenant) -> tuple[list[tuple[str, str, int, int]], int]:
    async with read_tx(engine) as conn:
        rows = [(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in await conn.execute(text(
            "SELECT scope_kind, threshold, value_nanos, limit_nanos FROM threshold_crossings WHERE org_id = :o"
            " ORDER BY scope_kind, threshold"), {"o": t.org_id})]
        events = (await conn.execute(text(
            "SELECT COUNT(*) FROM events WHERE org_id = :o AND type = 'usage.threshold_reached'"),
            {"o": t.org_id})).scalar_one()
    return rows, int(events)


async def test_settle_batch_records_the_crossings_settle_many_records(engine: AsyncEngine) -> None:
    # One batch passes the key budget's 50 % and 80 % marks, the project's 50 %, and the wallet's
    # low-balance mark; on PostgreSQL the writes are one call and the crossings are found from
    # what it returns, so they must match settle_many's, mark for mark.
    async def tenant() -> tuple[Tenant, list[str]]:
        t = await make_tenant(engine, key_budget=4 * HOLD_AMOUNT, project_budget=6 * HOLD_AMOUNT)
        await grant(engine, t, 5 * HOLD_AMOUNT)
        async with write_tx(engine) as conn:
            await ledger.set_low_balance(conn, t.org_id, 3 * HOLD_AMOUNT)
        return t, [(await hold(engine, t, HOLD_IN, HOLD_OUT)).request_id for _ in range(4)]

    full = Usage(input_tokens=HOLD_IN, output_tokens=HOLD_OUT, latency_ms=5)
    one, one_ids = await tenant()
    two, two_ids = await tenant()
    async with write_tx(engine) as conn:
        await ledger.settle_many(conn, [(r, full) for r in one_ids])
    async with write_tx(engine) as conn:
        await ledger.settle_batch(conn, [(r, full) for r in two_ids])  # plain: must not raise
    crossed, events = await _crossed(engine, two)
    assert [(kind, mark) for kind, mark, _, _ in crossed] == [
        ("key", "100pct"), ("key", "50pct"), ("key", "80pct"), ("project", "50pct"), ("wallet", "low_balance")]
    assert (crossed, events) == await _crossed(engine, one) and events == 5
    assert await _state(engine, one) == await _state(engine, two)
    await assert_books_balance(engine, two.org_id)
