"""Hypothesis property tests: random sequences of money operations against a reference model.

After every step, on the real database: each transaction sums to zero and so does the journal;
every cached balance equals its recomputed balance; no customer account is negative or
over-reserved; wallet, promo and held figures equal the reference model's; every charge equals
`request_cost` of the actual tokens at the hold's price card (money-events.md §8 items 1-3, 8-13).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from core import ledger
from core.db import write_tx
from core.ledger import LedgerError
from core.ids import new_id
from core.ledger import Hold
from core.money import request_cost
from tests.money.conftest import MODEL, PRICE, add_price, make_tenant
from tests.money.helpers import assert_books_balance, balance, grant, hold, settle

USD = 10**9


@dataclass
class Model:
    wallet: int = 0
    promo: int = 0
    holds: dict[str, tuple[Hold, int, int]] = field(default_factory=dict)  # id -> (hold, max_in, max_out)
    txns: list[str] = field(default_factory=list)

    @property
    def held(self) -> int:
        return sum(h.amount for h, _, _ in self.holds.values())

    def available(self) -> int:
        return self.wallet + self.promo - self.held

    def promo_available(self) -> int:
        return self.promo - sum(h.promo_part for h, _, _ in self.holds.values())


operation = st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 20_000_000), st.booleans()),
    st.tuples(st.just("hold"), st.integers(0, 3000), st.integers(0, 1500)),
    st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, 100), st.integers(0, 100), st.integers(0, 100)),
    st.tuples(st.just("overshoot"), st.integers(0, 50)),
    st.tuples(st.just("expire"), st.integers(0, 50)),
    st.tuples(st.just("adjust"), st.integers(-20_000_000, 20_000_000).filter(bool)),
    st.tuples(st.just("reverse"), st.integers(0, 50)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(operation, min_size=1, max_size=25))
async def test_random_operation_sequences_keep_the_books(engine: AsyncEngine, ops: list[tuple[object, ...]]) -> None:
    t = await make_tenant(engine)
    m = Model()
    for op in ops:
        name = op[0]
        if name == "grant":
            amount, promo = int(str(op[1])), bool(op[2])
            m.txns.append(await grant(engine, t, amount, promo=promo))
            m.promo, m.wallet = (m.promo + amount, m.wallet) if promo else (m.promo, m.wallet + amount)
        elif name == "hold":
            max_in, max_out = int(str(op[1])), int(str(op[2]))
            cost = max(request_cost(max_in, 0, max_out, *PRICE), request_cost(max_in, max_in, max_out, *PRICE))
            try:
                h = await hold(engine, t, max_in, max_out)
            except LedgerError as exc:
                assert exc.code == "insufficient_quota" and cost > m.available()
                continue
            assert cost <= m.available() and h.amount == cost
            assert h.promo_part == min(cost, m.promo_available())
            m.holds[h.id] = (h, max_in, max_out)
        elif name in ("settle", "overshoot", "expire") and m.holds:
            hold_id = sorted(m.holds)[int(str(op[1])) % len(m.holds)]
            h, max_in, max_out = m.holds[hold_id]
            if name == "settle":
                used_in = max_in * int(str(op[2])) // 100
                cached = used_in * int(str(op[3])) // 100
                used_out = max_out * int(str(op[4])) // 100
                s = await settle(engine, hold_id, used_in, used_out, cached_tokens=cached)
                assert s.charged == request_cost(used_in, cached, used_out, *PRICE) <= h.amount
                promo_paid = min(s.charged, h.promo_part)
                m.promo -= promo_paid
                m.wallet -= s.charged - promo_paid
                if s.txn_id:
                    m.txns.append(s.txn_id)
                del m.holds[hold_id]
            elif name == "overshoot":
                # Above the hold: the hold's amount is paid (promo first), the rest is owed.
                s = await settle(engine, hold_id, max_in + 1, max_out + 1)
                assert s.charged == request_cost(max_in + 1, 0, max_out + 1, *PRICE) > h.amount
                assert s.receivable == s.charged - h.amount and s.released == 0
                promo_paid = min(h.amount, h.promo_part)
                m.promo -= promo_paid
                m.wallet -= h.amount - promo_paid
                m.txns.append(str(s.txn_id))
                del m.holds[hold_id]
            else:
                async with write_tx(engine) as conn:
                    await ledger.release_hold(conn, hold_id)
                del m.holds[hold_id]
        elif name == "adjust":
            amount = int(str(op[1]))
            try:
                async with write_tx(engine) as conn:
                    txn = await ledger.adjust(conn, t.org_id, amount, reason="property", idempotency_key=new_id("req"),
                                              actor="test")
            except LedgerError as exc:
                assert exc.code == "insufficient_quota" and -amount > m.wallet - (m.held - (
                    m.promo - m.promo_available()))
                continue
            m.wallet += amount
            m.txns.append(txn.id)
        elif name == "reverse" and m.txns:
            txn_id = m.txns.pop(int(str(op[1])) % len(m.txns))
            try:
                async with write_tx(engine) as conn:
                    rev = await ledger.reverse(conn, t.org_id, txn_id, reason="property",
                                               idempotency_key=new_id("req"), actor="test")
            except LedgerError as exc:
                assert exc.code == "insufficient_quota"
                continue
            for e in rev.entries:
                if e.account == "wallet":
                    m.wallet += e.amount
                elif e.account == "promo":
                    m.promo += e.amount
        b = await balance(engine, t)
        assert (b.wallet_nanos, b.promo_nanos, b.held_nanos) == (m.wallet, m.promo, m.held)
        assert b.available_nanos == m.available() >= 0
        await assert_books_balance(engine, t.org_id)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(price=st.tuples(st.integers(0, 10**11), st.integers(0, 10**11), st.integers(0, 10**11)),
       tokens=st.tuples(st.integers(0, 200_000), st.integers(0, 100), st.integers(0, 100_000)))
async def test_charge_equals_price_of_actual_tokens(engine: AsyncEngine, price: tuple[int, int, int],
                                                    tokens: tuple[int, int, int]) -> None:
    """Any price card, any token counts: charge == request_cost, named with the card's version."""
    model = f"test/priced-{new_id('mdl')}"
    async with write_tx(engine) as conn:
        from sqlalchemy import text

        await conn.execute(text(
            "INSERT INTO models (id, display_name, backend_id, upstream_name, kind, context_window,"
            " max_output_tokens, created_at, updated_at) SELECT :m, :m, backend_id, :m, kind, context_window,"
            " max_output_tokens, created_at, updated_at FROM models WHERE id = :base"), {"m": model, "base": MODEL})
        await add_price(conn, model, 1, (1, 1, 1), effective_at=0)
        await add_price(conn, model, 2, price, effective_at=1)  # v2 is the card in force
    t = await make_tenant(engine)
    await grant(engine, t, 10**15)
    used_in, cached_pct, used_out = tokens
    h = await hold(engine, t, used_in, used_out, model=model)
    cached = used_in * cached_pct // 100
    s = await settle(engine, h.id, used_in, used_out, cached_tokens=cached)
    expected = request_cost(used_in, cached, used_out, *price)
    assert h.price_version == s.price_version == 2 and s.charged == expected
    assert (await balance(engine, t)).wallet_nanos == 10**15 - expected
    await assert_books_balance(engine, t.org_id)
