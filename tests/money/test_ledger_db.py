"""The database itself refuses what no bug may do (money-events.md §8 items 1, 3, 4, 21).

Every statement here is raw SQL that bypasses the ledger code, as a buggy or hostile writer would:
the triggers and CHECK constraints of schema.sql must refuse it on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from core import ledger
from core.db import now_ms, read_tx, write_tx
from core.errors import refusal
from core.ledger import LedgerError
from core.ids import new_id
from tests.money.conftest import Tenant
from tests.money.helpers import assert_books_balance, balance, grant, hold, settle

APPEND_ONLY = "append-only|resolves exactly once|cannot be deleted"
CHECK = "(?i)check constraint"
ENTRY_ONLY = "a balance moves only with an entry"


async def _refused(engine: AsyncEngine, sql: str, params: dict[str, object], match: str) -> None:
    """The statement fails, and for the expected reason (not, say, a typo in the test's SQL)."""
    with pytest.raises(DBAPIError, match=match):
        async with write_tx(engine) as conn:
            await conn.execute(text(sql), params or {})


async def _funded(engine: AsyncEngine, t: Tenant) -> tuple[str, str]:
    txn_id = await grant(engine, t, 10**9)
    h = await hold(engine, t, 100, 100)
    settled = await settle(engine, h.id, 50, 50)
    assert settled.txn_id is not None
    return txn_id, h.request_id


async def test_history_is_append_only(engine: AsyncEngine, tenant: Tenant) -> None:
    txn_id, request_id = await _funded(engine, tenant)
    for sql in ("UPDATE ledger_entries SET amount = amount + 1 WHERE txn_id = :t",
                "DELETE FROM ledger_entries WHERE txn_id = :t",
                "UPDATE ledger_transactions SET reason = 'rewritten' WHERE id = :t",
                "DELETE FROM ledger_transactions WHERE id = :t"):
        await _refused(engine, sql, {"t": txn_id}, APPEND_ONLY)
    for sql in ("UPDATE usage_records SET cost_nanos = 0 WHERE request_id = :r",
                "DELETE FROM usage_records WHERE request_id = :r",
                "DELETE FROM ledger_holds WHERE request_id = :r",
                "UPDATE ledger_holds SET status = 'released' WHERE request_id = :r"):
        await _refused(engine, sql, {"r": request_id}, APPEND_ONLY)
    await _refused(engine, "DELETE FROM ledger_accounts WHERE org_id = :o", {"o": tenant.org_id}, APPEND_ONLY)
    await assert_books_balance(engine, tenant.org_id)


async def test_balances_move_only_with_entries_and_never_below_zero(engine: AsyncEngine, tenant: Tenant) -> None:
    await _funded(engine, tenant)
    o = {"o": tenant.org_id}
    # A cached balance edited without an entry (the bug reconcile would otherwise have to find).
    await _refused(engine, "UPDATE ledger_accounts SET balance = balance + 5 WHERE org_id = :o AND kind = 'wallet'", o, ENTRY_ONLY)
    # Overdraw, even with a matching sequence bump: the CHECK constraint refuses it.
    await _refused(engine, "UPDATE ledger_accounts SET balance = -1, entry_seq = entry_seq + 1"
                   " WHERE org_id = :o AND kind = 'wallet'", o, CHECK)
    # Reserving more than the balance.
    await _refused(engine, "UPDATE ledger_accounts SET held = balance + 1 WHERE org_id = :o AND kind = 'wallet'", o,
                   CHECK)
    await _refused(engine, "UPDATE ledger_accounts SET kind = 'revenue' WHERE org_id = :o AND kind = 'wallet'", o,
                   ENTRY_ONLY)
    await assert_books_balance(engine, tenant.org_id)


async def test_unbalanced_or_tampered_transactions_are_refused(engine: AsyncEngine, tenant: Tenant) -> None:
    txn_id, _ = await _funded(engine, tenant)
    now = now_ms()

    async def write_one_sided(conn_sql: list[str]) -> None:
        async with write_tx(engine) as conn:
            for sql in conn_sql:
                await conn.execute(text(sql), {"o": tenant.org_id, "t": new_txn, "now": now})

    new_txn = new_id("txn")
    entry = ("INSERT INTO ledger_entries (txn_id, seq, account_id, amount, account_seq, balance_after, created_at)"
             " SELECT :t, 0, id, 7, entry_seq, balance, :now FROM ledger_accounts WHERE org_id = :o AND kind = 'wallet'")
    bump = ("UPDATE ledger_accounts SET balance = balance + 7, entry_seq = entry_seq + 1"
            " WHERE org_id = :o AND kind = 'wallet'")
    seal = ("INSERT INTO ledger_transactions (id, org_id, kind, idempotency_key, fingerprint, amount, actor,"
            " created_at) VALUES (:t, :o, 'adjustment', :t, 'x', 7, 'attacker', :now)")
    with pytest.raises(DBAPIError, match="does not balance"):  # one-sided: entries do not sum to zero
        await write_one_sided([bump, entry, seal])
    with pytest.raises(DBAPIError, match="(?i)foreign key"):  # entries with no transaction row
        await write_one_sided([bump, entry])
    with pytest.raises(DBAPIError, match="account state mismatch"):  # a balance the account does not have
        await write_one_sided([entry.replace("entry_seq, balance,", "entry_seq + 1, balance + 7,")])
    # Appending an entry to an existing (sealed) transaction.
    new_txn = txn_id
    with pytest.raises(DBAPIError, match="transaction sealed"):
        await write_one_sided([bump, entry])
    await assert_books_balance(engine, tenant.org_id)


async def test_grant_is_idempotent(engine: AsyncEngine, tenant: Tenant) -> None:
    async with write_tx(engine) as conn:
        first = await ledger.grant(conn, tenant.org_id, 5_000, idempotency_key="grant-1", actor="t", reason="r")
    async with write_tx(engine) as conn:
        again = await ledger.grant(conn, tenant.org_id, 5_000, idempotency_key="grant-1", actor="t", reason="r")
    assert again == first
    with pytest.raises(LedgerError) as reused:
        async with write_tx(engine) as conn:
            await ledger.grant(conn, tenant.org_id, 6_000, idempotency_key="grant-1", actor="t", reason="r")
    assert reused.value.code == "idempotency_key_reused" and refusal(reused.value).status == 422
    assert (await balance(engine, tenant)).wallet_nanos == 5_000
    async with read_tx(engine) as conn:
        events = (await conn.execute(text(
            "SELECT COUNT(*) FROM events WHERE org_id = :o AND type = 'wallet.recharged'"),
            {"o": tenant.org_id})).scalar_one()
    assert events == 1


async def test_concurrent_duplicate_grants_apply_once(engine: AsyncEngine, tenant: Tenant) -> None:
    async def one() -> str:
        try:
            async with write_tx(engine) as conn:
                return (await ledger.grant(conn, tenant.org_id, 700, idempotency_key="dup", actor="t")).id
        except LedgerError as exc:
            assert exc.code == "idempotency_key_in_use"  # the original was still being written
            return exc.code

    outcomes = await asyncio.gather(*(one() for _ in range(20)))
    txn_ids = {o for o in outcomes if o.startswith("txn_")}
    assert len(txn_ids) == 1
    assert (await balance(engine, tenant)).wallet_nanos == 700
    await assert_books_balance(engine, tenant.org_id)


async def test_same_key_in_two_organizations_is_two_grants(engine: AsyncEngine, tenant: Tenant) -> None:
    from tests.money.conftest import make_tenant

    other = await make_tenant(engine)
    async with write_tx(engine) as conn:
        a = await ledger.grant(conn, tenant.org_id, 100, idempotency_key="shared", actor="t")
        b = await ledger.grant(conn, other.org_id, 200, idempotency_key="shared", actor="t")
    assert a.id != b.id and (await balance(engine, other)).wallet_nanos == 200
    async with read_tx(engine) as conn:  # another tenant's transaction id looks missing
        assert await ledger.get_transaction(conn, other.org_id, a.id) is None


async def test_adjustments_and_reversals_are_new_transactions(engine: AsyncEngine, tenant: Tenant) -> None:
    grant_id, request_id = await _funded(engine, tenant)
    start = await balance(engine, tenant)
    with pytest.raises(LedgerError) as no_reason:
        async with write_tx(engine) as conn:
            await ledger.adjust(conn, tenant.org_id, -10, reason=" ", idempotency_key="a0", actor="t")
    assert no_reason.value.code == "missing_required_parameter"
    async with write_tx(engine) as conn:
        adj = await ledger.adjust(conn, tenant.org_id, -10, reason="goodwill fix", idempotency_key="a1", actor="t")
    with pytest.raises(LedgerError) as overdraw:
        async with write_tx(engine) as conn:
            await ledger.adjust(conn, tenant.org_id, -10**12, reason="too much", idempotency_key="a2", actor="t")
    assert overdraw.value.code == "insufficient_quota"
    async with read_tx(engine) as conn:
        charge = (await conn.execute(text("SELECT id, amount, key_id, period FROM ledger_transactions"
                                          " WHERE request_id = :r"), {"r": request_id})).one()
        spent_before = (await conn.execute(text("SELECT spent FROM budget_usage WHERE scope_id = :k AND period = :p"),
                                           {"k": charge[2], "p": charge[3]})).scalar_one()
    async with write_tx(engine) as conn:
        rev = await ledger.reverse(conn, tenant.org_id, str(charge[0]), reason="refund", idempotency_key="r1",
                                   actor="t")
    async with write_tx(engine) as conn:  # a retry returns the same reversal
        assert (await ledger.reverse(conn, tenant.org_id, str(charge[0]), reason="refund", idempotency_key="r1",
                                     actor="t")).id == rev.id
    with pytest.raises(LedgerError) as twice:
        async with write_tx(engine) as conn:
            await ledger.reverse(conn, tenant.org_id, str(charge[0]), reason="again", idempotency_key="r2", actor="t")
    assert twice.value.code == "conflict"
    assert rev.reverses == charge[0] and sorted(e.amount for e in rev.entries) == [-int(charge[1]), int(charge[1])]
    end = await balance(engine, tenant)
    assert end.wallet_nanos == start.wallet_nanos - 10 + int(charge[1]) and adj.amount == 10
    async with read_tx(engine) as conn:
        spent_after = (await conn.execute(text("SELECT spent FROM budget_usage WHERE scope_id = :k AND period = :p"),
                                          {"k": charge[2], "p": charge[3]})).scalar_one()
        page = await ledger.statement(conn, tenant.org_id)
    assert int(spent_after) == int(spent_before) - int(charge[1])
    assert [line.kind for line in page.data] == ["grant", "charge", "adjustment", "reversal"]
    running = page.opening_balance
    for line in page.data:  # the statement's running balance is the sum of what came before
        running += line.amount
        assert line.balance_after == running
    assert page.closing_balance == end.wallet_nanos and page.data[0].txn_id == grant_id
    await assert_books_balance(engine, tenant.org_id)
