"""Small helpers shared by the money tests: one-call wrappers and the invariant checker."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core import ledger
from core.db import now_ms, read_tx, write_tx
from core.ids import new_id
from core.ledger import Hold, Settlement, Usage
from tests.money.conftest import MODEL, Tenant


async def grant(engine: AsyncEngine, t: Tenant, amount: int, *, promo: bool = False) -> str:
    async with write_tx(engine) as conn:
        txn = await ledger.grant(conn, t.org_id, amount, idempotency_key=new_id("req"), actor="test",
                                 promotional=promo)
    return txn.id


async def hold(engine: AsyncEngine, t: Tenant, input_tokens: int, output_tokens: int, *,
               expires_in_ms: int = 60_000, request_id: str | None = None, model: str = MODEL) -> Hold:
    async with write_tx(engine) as conn:
        return await ledger.place_hold(
            conn, org_id=t.org_id, project_id=t.project_id, key_id=t.key_id,
            request_id=request_id or new_id("req"), model_id=model, endpoint="responses", backend_id="be_test",
            max_input_tokens=input_tokens, max_output_tokens=output_tokens,
            expires_at_ms=now_ms() + expires_in_ms, client_ip="127.0.0.1")


async def settle(engine: AsyncEngine, ref: str, input_tokens: int, output_tokens: int,
                 cached_tokens: int = 0) -> Settlement:
    async with write_tx(engine) as conn:
        return await ledger.settle_hold(conn, ref, Usage(input_tokens=input_tokens, cached_tokens=cached_tokens,
                                                          output_tokens=output_tokens, latency_ms=5))


async def balance(engine: AsyncEngine, t: Tenant) -> ledger.BalanceView:
    async with write_tx(engine) as conn:
        return await ledger.balance(conn, t.org_id)


async def assert_books_balance(engine: AsyncEngine, org_id: str | None = None) -> None:
    """Invariants 1-3 of money-events.md §8 on the whole database (or one organization)."""
    async with read_tx(engine) as conn:
        report = await ledger.reconcile(conn, org_id)
        assert report.drift == [], report.drift
        assert report.journal_sum == 0
        negative = (await conn.execute(text(
            "SELECT COUNT(*) FROM ledger_accounts WHERE customer = 1 AND (balance < 0 OR balance - held < 0)"
        ))).scalar_one()
        assert negative == 0
        global_sum = (await conn.execute(text("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries"))).scalar_one()
        assert int(global_sum) == 0
