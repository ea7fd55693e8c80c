"""Holds placed set-based (`ledger.place_holds`) through a group commit, as the sidecar runs them:
the same outcome as placing them one by one. A batch whose sums fit is placed in a few statements
(promotional credit taken first, in batch order); one that does not fit, or repeats a request id,
is rerun hold by hold (`place_hold` in savepoints), so exactly the affordable holds succeed."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import ledger
from core.db import now_ms, read_tx, write_tx
from core.groupcommit import GroupCommit
from core.ids import new_id
from core.ledger import Hold, LedgerError
from core.money import request_cost
from tests.money.conftest import MODEL, PRICE, UNPRICED, Tenant, add_price, make_tenant
from tests.money.helpers import assert_books_balance, balance, grant

HOLD_IN, HOLD_OUT = 1000, 500
HOLD_AMOUNT = request_cost(HOLD_IN, 0, HOLD_OUT, *PRICE)


def _request(t: Tenant, request_id: str, model: str = MODEL, output_tokens: int = HOLD_OUT) -> ledger.HoldRequest:
    return ledger.HoldRequest(org_id=t.org_id, project_id=t.project_id, key_id=t.key_id, request_id=request_id,
                              model_id=model, endpoint="chat", backend_id="be_test", max_input_tokens=HOLD_IN,
                              max_output_tokens=output_tokens, expires_at_ms=now_ms() + 600_000)


async def _one(conn: AsyncConnection, r: ledger.HoldRequest) -> Hold:
    return await ledger.place_hold(conn, **{k: getattr(r, k) for k in r.__struct_fields__})


async def _many(conn: AsyncConnection, rs: list[ledger.HoldRequest]) -> list[Hold | BaseException]:
    return list(await ledger.place_holds(conn, rs))


def _commits(engine: AsyncEngine) -> GroupCommit[ledger.HoldRequest, Hold]:
    return GroupCommit(engine, _one, work_many=_many)


async def _place_all(engine: AsyncEngine, rs: list[ledger.HoldRequest]) -> tuple[list[object], int]:
    """Submit together (one batch while nothing else runs); the results and the number of batches."""
    commits = _commits(engine)
    try:
        results = await asyncio.gather(*(commits.submit(r) for r in rs), return_exceptions=True)
        return list(results), commits.batches
    finally:
        await commits.close()


async def test_a_batch_that_fits_is_placed_as_one_by_one(engine: AsyncEngine, tenant: Tenant) -> None:
    # Promotional credit covers 2.5 holds: the first two take it whole, the third half, the rest none.
    await grant(engine, tenant, 2 * HOLD_AMOUNT + HOLD_AMOUNT // 2, promo=True)
    await grant(engine, tenant, 10 * HOLD_AMOUNT)
    rs = [_request(tenant, new_id("req")) for _ in range(5)]
    results, batches = await _place_all(engine, rs)
    assert batches == 1
    holds = [r for r in results if isinstance(r, Hold)]
    assert len(holds) == 5 and all(h.amount == HOLD_AMOUNT for h in holds)
    assert [h.promo_part for h in holds] == [HOLD_AMOUNT, HOLD_AMOUNT, HOLD_AMOUNT // 2, 0, 0]
    assert [h.request_id for h in holds] == [r.request_id for r in rs]
    b = await balance(engine, tenant)
    assert b.held_nanos == 5 * HOLD_AMOUNT
    async with read_tx(engine) as conn:
        stored = await ledger.load_hold(conn, holds[2].request_id)
        counters = (await conn.execute(text(
            "SELECT scope_id, held FROM budget_usage WHERE org_id = :o ORDER BY scope_id"), {"o": tenant.org_id})).all()
    assert stored == holds[2]
    assert sorted(counters) == sorted([(tenant.key_id, 5 * HOLD_AMOUNT), (tenant.project_id, 5 * HOLD_AMOUNT)])
    await assert_books_balance(engine, tenant.org_id)


async def test_a_batch_beyond_the_wallet_admits_exactly_the_affordable(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 3 * HOLD_AMOUNT + HOLD_AMOUNT - 1)
    results, _ = await _place_all(engine, [_request(tenant, new_id("req")) for _ in range(6)])
    assert sum(isinstance(r, Hold) for r in results) == 3
    refused = [r for r in results if not isinstance(r, Hold)]
    assert all(isinstance(r, LedgerError) and r.code == "insufficient_quota" for r in refused)
    b = await balance(engine, tenant)
    assert b.held_nanos == 3 * HOLD_AMOUNT and b.available_nanos == HOLD_AMOUNT - 1
    await assert_books_balance(engine, tenant.org_id)


async def test_a_batch_beyond_a_key_budget_admits_exactly_the_affordable(engine: AsyncEngine) -> None:
    t = await make_tenant(engine, key_budget=2 * HOLD_AMOUNT)
    await grant(engine, t, 10 * HOLD_AMOUNT)
    results, _ = await _place_all(engine, [_request(t, new_id("req")) for _ in range(4)])
    assert sum(isinstance(r, Hold) for r in results) == 2
    assert (await balance(engine, t)).held_nanos == 2 * HOLD_AMOUNT
    await assert_books_balance(engine, t.org_id)


async def test_a_repeated_request_id_returns_its_hold_and_places_the_rest(engine: AsyncEngine,
                                                                          tenant: Tenant) -> None:
    await grant(engine, tenant, 10 * HOLD_AMOUNT)
    first, _ = await _place_all(engine, [_request(tenant, "req_repeat" + new_id("x"))])
    again = first[0]
    assert isinstance(again, Hold)
    rs = [_request(tenant, new_id("req")), _request(tenant, again.request_id), _request(tenant, new_id("req"))]
    results, _ = await _place_all(engine, rs)
    assert all(isinstance(r, Hold) for r in results)
    assert results[1] == again
    assert (await balance(engine, tenant)).held_nanos == 3 * HOLD_AMOUNT
    await assert_books_balance(engine, tenant.org_id)


async def test_an_unpriced_model_refuses_only_its_own_item(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 10 * HOLD_AMOUNT)
    rs = [_request(tenant, new_id("req")), _request(tenant, new_id("req"), UNPRICED),
          _request(tenant, new_id("req"), output_tokens=-1)]
    results, _ = await _place_all(engine, rs)
    assert isinstance(results[0], Hold)
    assert isinstance(results[1], LedgerError) and results[1].code == "model_not_priced"
    assert isinstance(results[2], LedgerError)
    assert (await balance(engine, tenant)).held_nanos == HOLD_AMOUNT


async def test_a_plain_batch_is_placed_without_a_rerun(engine: AsyncEngine, tenant: Tenant) -> None:
    # Called directly, a batch that fits must not raise: raising is what sends a batch to the
    # hold-by-hold rerun, which would give the same rows and hide a broken fast path (on PostgreSQL
    # the single call of nx_place_holds, elsewhere the set-based statements).
    await grant(engine, tenant, HOLD_AMOUNT + HOLD_AMOUNT // 3, promo=True)
    await grant(engine, tenant, 10 * HOLD_AMOUNT)
    rs = [_request(tenant, new_id("req")) for _ in range(3)]
    async with write_tx(engine) as conn:
        placed = await ledger.place_holds(conn, rs)
    assert [h.promo_part for h in placed if isinstance(h, Hold)] == [HOLD_AMOUNT, HOLD_AMOUNT // 3, 0]
    async with read_tx(engine) as conn:
        stored = [await ledger.load_hold(conn, r.request_id) for r in rs]
    assert stored == placed
    assert (await balance(engine, tenant)).held_nanos == 3 * HOLD_AMOUNT
    await assert_books_balance(engine, tenant.org_id)


async def test_a_card_taking_effect_between_batches_prices_the_next_batch(engine: AsyncEngine,
                                                                         tenant: Tenant) -> None:
    # The group commit remembers the card in force across batches (no read per batch on
    # PostgreSQL); a newer card must still price every hold placed after it took effect.
    await grant(engine, tenant, 10 * HOLD_AMOUNT)
    model = new_id("model")  # its own model: the session's other tests price MODEL at version 1
    async with write_tx(engine) as conn:
        await conn.execute(text(
            "INSERT INTO models (id, display_name, backend_id, upstream_name, kind, context_window,"
            " max_output_tokens, created_at, updated_at) VALUES (:m, :m, 'be_test', :m, 'text', 8192, 4096,"
            " 0, 0)"), {"m": model})
        await add_price(conn, model, 1, PRICE, effective_at=0)
    commits = _commits(engine)
    try:
        first = await commits.submit(_request(tenant, new_id("req"), model))
        async with write_tx(engine) as conn:
            await add_price(conn, model, 2, (PRICE[0] * 2, PRICE[1] * 2, PRICE[2] * 2), effective_at=now_ms() - 1)
        second = await commits.submit(_request(tenant, new_id("req"), model))
        third = await commits.submit(_request(tenant, new_id("req"), model))
    finally:
        await commits.close()
    assert first.price_version == 1 and first.amount == HOLD_AMOUNT
    assert second.price_version == 2 and second.amount == 2 * HOLD_AMOUNT
    assert third.price_version == 2
    assert (await balance(engine, tenant)).held_nanos == 5 * HOLD_AMOUNT
    await assert_books_balance(engine, tenant.org_id)
