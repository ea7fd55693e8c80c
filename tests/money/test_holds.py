"""Holds and settlement on the real database (SQLite or PostgreSQL per NX_TEST_DATABASE).

Invariants of money-events.md §8: 8 (resolves at most once), 9 (no posting above the hold from the
wallet, the rest owed as a receivable; the remainder returns exactly), 10 (expired holds return
everything), 11-12 (pessimistic admission: under 60 concurrent holds exactly the affordable ones
succeed, nothing goes negative), 13.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core import ledger
from core.db import now_ms, read_tx, write_tx
from core.errors import refusal
from core.ledger import LedgerError
from core.ids import new_id
from core.ledger import Usage
from core.money import request_cost
from tests.money.conftest import PRICE, UNPRICED, Tenant, make_tenant
from tests.money.helpers import assert_books_balance, balance, grant, hold, settle

# One hold of 1000 input + 500 output tokens at PRICE reserves 3_000_000 + 6_000_000 nano-dollars.
HOLD_IN, HOLD_OUT = 1000, 500
HOLD_AMOUNT = request_cost(HOLD_IN, 0, HOLD_OUT, *PRICE)


async def _race_holds(engine: AsyncEngine, t: Tenant, n: int) -> tuple[int, int]:
    async def one() -> bool:
        try:
            await hold(engine, t, HOLD_IN, HOLD_OUT)
            return True
        except LedgerError as exc:
            assert exc.code == "insufficient_quota", exc.code
            return False

    results = await asyncio.gather(*(one() for _ in range(n)))
    return sum(results), n - sum(results)


async def test_concurrent_holds_admit_exactly_the_affordable(engine: AsyncEngine, tenant: Tenant) -> None:
    affordable = 37
    await grant(engine, tenant, affordable * HOLD_AMOUNT + HOLD_AMOUNT - 1)
    ok, refused = await _race_holds(engine, tenant, 60)
    assert (ok, refused) == (affordable, 60 - affordable)
    b = await balance(engine, tenant)
    assert b.held_nanos == affordable * HOLD_AMOUNT and b.available_nanos == HOLD_AMOUNT - 1
    await assert_books_balance(engine, tenant.org_id)


async def test_concurrent_holds_respect_promo_plus_wallet(engine: AsyncEngine, tenant: Tenant) -> None:
    # 10 holds' worth of promo credit and 15.5 of wallet: exactly 25 fit, the 26th straddles nothing.
    await grant(engine, tenant, 10 * HOLD_AMOUNT, promo=True)
    await grant(engine, tenant, 15 * HOLD_AMOUNT + HOLD_AMOUNT // 2)
    assert await _race_holds(engine, tenant, 55) == (25, 30)
    await assert_books_balance(engine, tenant.org_id)


@pytest.mark.parametrize("scope", ["key", "project"])
async def test_concurrent_holds_respect_monthly_budget(engine: AsyncEngine, scope: str) -> None:
    budget = 20 * HOLD_AMOUNT + request_cost(1, 0, 0, *PRICE)
    t = await make_tenant(engine, **{f"{scope}_budget": budget})  # type: ignore[arg-type]
    await grant(engine, t, 1000 * HOLD_AMOUNT)
    assert await _race_holds(engine, t, 60) == (20, 40)
    # Settled charges count against the budget too: settle all at full cost, then nothing fits.
    async with read_tx(engine) as conn:
        ids = [str(r[0]) for r in await conn.execute(text("SELECT id FROM ledger_holds WHERE org_id = :o"),
                                                     {"o": t.org_id})]
    for hold_id in ids:
        await settle(engine, hold_id, HOLD_IN, HOLD_OUT)
    with pytest.raises(LedgerError) as refused:
        await hold(engine, t, HOLD_IN, HOLD_OUT)
    assert refused.value.code == "insufficient_quota" and scope in refused.value.message
    await hold(engine, t, 1, 0)  # what is left of the budget still buys a small request
    await assert_books_balance(engine, t.org_id)


async def test_settle_charges_actual_cost_and_releases_the_rest(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 10**9)
    h = await hold(engine, tenant, HOLD_IN, HOLD_OUT)
    s = await settle(engine, h.id, 800, 120, cached_tokens=300)
    expected = request_cost(800, 300, 120, *PRICE)
    assert (s.charged, s.released) == (expected, HOLD_AMOUNT - expected)
    b = await balance(engine, tenant)
    assert (b.wallet_nanos, b.held_nanos, b.available_nanos) == (10**9 - expected, 0, 10**9 - expected)
    async with read_tx(engine) as conn:
        rec = (await conn.execute(text(
            "SELECT cost_nanos, input_tokens, cached_tokens, output_tokens, price_version, txn_id, status"
            " FROM usage_records WHERE request_id = :r"), {"r": h.request_id})).one()
        txn = await ledger.get_transaction(conn, tenant.org_id, s.txn_id or "")
    assert tuple(rec) == (expected, 800, 300, 120, 1, s.txn_id, 200)
    assert txn is not None and txn.amount == expected and txn.price_version == 1 and txn.kind == "charge"
    assert sorted((e.account, e.amount) for e in txn.entries) == [("revenue", expected), ("wallet", -expected)]
    await assert_books_balance(engine, tenant.org_id)


async def test_promotional_credit_pays_first(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 1_000_000, promo=True)
    await grant(engine, tenant, 10**9)
    h = await hold(engine, tenant, HOLD_IN, HOLD_OUT)
    assert h.promo_part == 1_000_000
    s = await settle(engine, h.id, HOLD_IN, HOLD_OUT)
    b = await balance(engine, tenant)
    assert (b.promo_nanos, b.wallet_nanos, b.held_nanos) == (0, 10**9 - (s.charged - 1_000_000), 0)
    await assert_books_balance(engine, tenant.org_id)


async def test_zero_usage_settles_without_a_transaction(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 10**9)
    h = await hold(engine, tenant, HOLD_IN, HOLD_OUT)
    async with write_tx(engine) as conn:
        s = await ledger.settle_hold(conn, h.request_id, Usage(status=502))
    assert (s.charged, s.txn_id, s.released) == (0, None, HOLD_AMOUNT)
    assert (await balance(engine, tenant)).available_nanos == 10**9
    await assert_books_balance(engine, tenant.org_id)


async def _account(engine: AsyncEngine, t: Tenant, kind: str) -> int:
    async with read_tx(engine) as conn:
        return int((await conn.execute(text("SELECT balance FROM ledger_accounts WHERE org_id = :o AND kind = :k"),
                                       {"o": t.org_id, "k": kind})).scalar_one())


@pytest.mark.parametrize("promo", [0, 2_000_000])
async def test_a_charge_above_its_hold_takes_the_hold_and_books_the_rest_as_receivable(
        engine: AsyncEngine, tenant: Tenant, promo: int) -> None:
    """Issue 12, finding 1: settling above the hold never posts nothing. The wallet (and promotional
    credit first) pays exactly the held amount, the organization owes the rest, revenue gets all."""
    if promo:
        await grant(engine, tenant, promo, promo=True)
    await grant(engine, tenant, 10**9)
    h = await hold(engine, tenant, HOLD_IN, HOLD_OUT)
    s = await settle(engine, h.id, HOLD_IN, HOLD_OUT + 100)
    full = request_cost(HOLD_IN, 0, HOLD_OUT + 100, *PRICE)
    assert (s.charged, s.receivable, s.released) == (full, full - HOLD_AMOUNT, 0) and s.txn_id is not None
    b = await balance(engine, tenant)
    assert (b.promo_nanos, b.wallet_nanos, b.held_nanos) == (0, 10**9 - (HOLD_AMOUNT - promo), 0)
    assert await _account(engine, tenant, "receivable") == -(full - HOLD_AMOUNT)
    assert await _account(engine, tenant, "revenue") == full
    async with read_tx(engine) as conn:
        row = (await conn.execute(text("SELECT cost_nanos FROM usage_records WHERE request_id = :r"),
                                  {"r": h.request_id})).one()
        charged = (await conn.execute(text("SELECT charged FROM ledger_holds WHERE id = :h"), {"h": h.id})).one()
    assert (int(row[0]), int(charged[0])) == (full, HOLD_AMOUNT)
    await assert_books_balance(engine, tenant.org_id)


async def test_an_organization_made_before_the_receivable_account_gets_it_on_first_use(
        engine: AsyncEngine, tenant: Tenant) -> None:
    async with write_tx(engine) as conn:  # the accounts an organization had before `receivable` existed
        for kind in ("wallet", "promo", "revenue", "clearing", "promotions", "adjustments"):
            await conn.execute(text(
                "INSERT INTO ledger_accounts (id, org_id, kind, customer, created_at) VALUES (:id, :o, :k, :c, 0)"),
                {"id": new_id("acct"), "o": tenant.org_id, "k": kind, "c": int(kind in ("wallet", "promo"))})
    await grant(engine, tenant, 10**9)
    h = await hold(engine, tenant, HOLD_IN, HOLD_OUT)
    s = await settle(engine, h.id, HOLD_IN, HOLD_OUT + 1)
    assert s.receivable == await _account(engine, tenant, "receivable") * -1 > 0
    await assert_books_balance(engine, tenant.org_id)


async def test_a_hold_resolves_at_most_once_under_races(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 10**9)
    h = await hold(engine, tenant, HOLD_IN, HOLD_OUT)

    async def settle_once() -> str:
        try:
            await settle(engine, h.id, 10, 10)
            return "settled"
        except LedgerError as exc:
            return exc.code

    async def expire_once() -> str:
        # The sweep is global (other tests' stale holds may go too); only this hold's fate matters.
        async with write_tx(engine) as conn:
            await ledger.expire_holds(conn, now=h.expires_at + 1)
        return "swept"

    outcomes = await asyncio.gather(*(settle_once() for _ in range(20)), expire_once(), expire_once())
    async with read_tx(engine) as conn:
        final = await ledger.load_hold(conn, h.id)
    assert final is not None
    settled = outcomes.count("settled")
    assert set(outcomes) <= {"settled", "swept", "hold_already_resolved"}
    assert (settled, final.status) in ((1, "settled"), (0, "expired")), (outcomes, final.status)
    wallet = (await balance(engine, tenant)).wallet_nanos
    assert wallet == (10**9 - request_cost(10, 0, 10, *PRICE) if settled else 10**9)
    for later in (lambda: settle(engine, h.id, 1, 1), lambda: settle(engine, h.request_id, 1, 1)):
        with pytest.raises(LedgerError) as again:
            await later()
        assert again.value.code == "hold_already_resolved"
    async with write_tx(engine) as conn:
        with pytest.raises(LedgerError):
            await ledger.release_hold(conn, h.id)
    assert (await balance(engine, tenant)).wallet_nanos == wallet
    await assert_books_balance(engine, tenant.org_id)


async def test_expired_holds_return_everything(engine: AsyncEngine) -> None:
    t = await make_tenant(engine, key_budget=10**12, project_budget=10**12)
    await grant(engine, t, 3 * HOLD_AMOUNT // 2, promo=True)
    await grant(engine, t, 10 * HOLD_AMOUNT)
    doomed = [await hold(engine, t, HOLD_IN, HOLD_OUT, expires_in_ms=1000) for _ in range(4)]
    survivor = await hold(engine, t, HOLD_IN, HOLD_OUT, expires_in_ms=3_600_000)
    async with write_tx(engine) as conn:
        assert await ledger.expire_holds(conn, now=max(h.expires_at for h in doomed)) == 4
    b = await balance(engine, t)
    assert b.held_nanos == HOLD_AMOUNT and b.available_nanos == b.wallet_nanos + b.promo_nanos - HOLD_AMOUNT
    async with read_tx(engine) as conn:
        rows = {str(r[0]): (int(r[1]), int(r[2])) for r in await conn.execute(text(
            "SELECT scope_id, spent, held FROM budget_usage WHERE org_id = :o"), {"o": t.org_id})}
        statuses = {str(r[0]) for r in await conn.execute(text(
            "SELECT status FROM ledger_holds WHERE org_id = :o AND id <> :s"), {"o": t.org_id, "s": survivor.id})}
    assert rows == {t.key_id: (0, HOLD_AMOUNT), t.project_id: (0, HOLD_AMOUNT)} and statuses == {"expired"}
    with pytest.raises(LedgerError) as late:
        await settle(engine, doomed[0].id, 1, 1)
    assert late.value.code == "hold_already_resolved"
    await assert_books_balance(engine, t.org_id)


async def test_unpriced_model_is_refused_never_charged_zero(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 10**9)
    with pytest.raises(LedgerError) as refused:
        await hold(engine, tenant, 10, 10, model=UNPRICED)
    assert refused.value.code == "model_not_priced"
    async with read_tx(engine) as conn:
        count = (await conn.execute(text("SELECT COUNT(*) FROM ledger_holds WHERE org_id = :o"),
                                    {"o": tenant.org_id})).scalar_one()
    assert count == 0 and (await balance(engine, tenant)).available_nanos == 10**9


async def test_place_hold_is_idempotent_on_request_id(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 10**9)
    request_id = new_id("req")
    first = await hold(engine, tenant, HOLD_IN, HOLD_OUT, request_id=request_id)
    again = await hold(engine, tenant, HOLD_IN, HOLD_OUT, request_id=request_id)
    assert again.id == first.id and (await balance(engine, tenant)).held_nanos == HOLD_AMOUNT
    with pytest.raises(LedgerError) as different:
        await hold(engine, tenant, HOLD_IN, HOLD_OUT + 1, request_id=request_id)
    assert different.value.code == "idempotency_key_reused" and refusal(different.value).status == 422


async def test_settle_many_settles_a_batch_in_one_transaction(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 10**10)
    holds = [await hold(engine, tenant, HOLD_IN, HOLD_OUT) for _ in range(50)]
    items = [(h.id, Usage(input_tokens=i * 10, output_tokens=i)) for i, h in enumerate(holds)]
    items += [("hold_doesnotexist", Usage()), (holds[0].id, Usage()),
              (holds[1].request_id, Usage(input_tokens=HOLD_IN + 1))]
    async with write_tx(engine) as conn:
        results = await ledger.settle_many(conn, items, now=now_ms())
    codes = [r.code if isinstance(r, LedgerError) else "ok" for r in results]
    assert codes == ["ok"] * 50 + ["not_found", "hold_already_resolved", "hold_already_resolved"]
    total = sum(request_cost(i * 10, 0, i, *PRICE) for i in range(50))
    assert sum(r.charged for r in results if not isinstance(r, LedgerError)) == total
    assert (await balance(engine, tenant)).wallet_nanos == 10**10 - total
    await assert_books_balance(engine, tenant.org_id)
