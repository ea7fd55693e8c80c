"""Reconciliation: recompute every cached figure from the journal and report any drift.

Checked, per organization or for all: each account's balance against the sum of its entries and
against the balance its latest entry recorded; each account's held amount against its open holds;
every transaction sums to zero and so does the whole journal; budget counters against the charges
(net of reversals) and open holds of their period; and served against billed (billed.py: usage
records, stored responses and the adapters' journal against the charges). Zero drift is the only
healthy answer.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ledger.billed import billed_drift
from core.ledger.model import Drift
from core.rows import columns, rows_as

__all__ = ["Drift", "ReconcileReport", "reconcile"]


class ReconcileReport(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "ledger.reconciliation"
    organization: str | None
    accounts: int
    transactions: int
    journal_sum: int
    drift: list[Drift]

    @property
    def ok(self) -> bool:
        return not self.drift and self.journal_sum == 0


async def reconcile(conn: AsyncConnection, org_id: str | None = None, *,
                    journal_dir: Path | None = None) -> ReconcileReport:
    """`journal_dir`: the adapters' served-output journal (`<data_dir>/journal`), when at hand."""
    scope: dict[str, object] = {"o": org_id, "all": org_id is None}
    where_a = "(:all OR a.org_id = :o)"
    drift: list[Drift] = []
    accounts = 0
    select = columns(
        _AccountCheck, "a",
        entries_sum="(SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e WHERE e.account_id = a.id)",
        last_balance="(SELECT e.balance_after FROM ledger_entries e WHERE e.account_id = a.id"
                     " AND e.account_seq = a.entry_seq)",
        entries="(SELECT COUNT(*) FROM ledger_entries e WHERE e.account_id = a.id)")
    for a in rows_as(_AccountCheck, await conn.execute(text(
            f"SELECT {select} FROM ledger_accounts a WHERE {where_a} ORDER BY a.id"), scope)):
        accounts += 1
        if a.entries_sum != a.balance:
            drift.append(Drift(check="balance_vs_entries", subject=a.id, expected=a.entries_sum,
                               actual=a.balance))
        last = a.last_balance or 0
        if last != a.balance:
            drift.append(Drift(check="balance_vs_last_entry", subject=a.id, expected=last, actual=a.balance))
        if a.entries != a.entry_seq:
            drift.append(Drift(check="entry_count", subject=a.id, expected=a.entries, actual=a.entry_seq))
        if a.kind in ("wallet", "promo"):
            part = "promo_part" if a.kind == "promo" else "amount - promo_part"
            held = int((await conn.execute(text(
                f"SELECT COALESCE(SUM({part}), 0) FROM ledger_holds WHERE org_id = :o AND status = 'open'"),
                {"o": a.org_id})).scalar_one())
            if held != a.held:
                drift.append(Drift(check="held_vs_open_holds", subject=a.id, expected=held, actual=a.held))
    for t in rows_as(_TxnSum, await conn.execute(text(
            "SELECT t.id, (SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e WHERE e.txn_id = t.id)"
            " FROM ledger_transactions t WHERE (:all OR t.org_id = :o)"), scope)):
        if t.total != 0:
            drift.append(Drift(check="transaction_sum", subject=t.id, expected=0, actual=t.total))
    transactions = int((await conn.execute(text(
        "SELECT COUNT(*) FROM ledger_transactions WHERE (:all OR org_id = :o)"), scope)).scalar_one())
    journal_sum = int((await conn.execute(text(
        "SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e"
        " JOIN ledger_accounts a ON a.id = e.account_id"
        f" WHERE {where_a}"), scope)).scalar_one())
    drift += await _budget_drift(conn, scope)
    drift += await billed_drift(conn, scope, journal_dir)
    return ReconcileReport(organization=org_id, accounts=accounts, transactions=transactions,
                           journal_sum=journal_sum, drift=drift)


async def _budget_drift(conn: AsyncConnection, scope: dict[str, object]) -> list[Drift]:
    out = []
    select = columns(
        _BudgetCheck, "b",
        charged="(SELECT COALESCE(SUM(CASE WHEN t.kind = 'charge' THEN t.amount ELSE -t.amount END), 0)"
                " FROM ledger_transactions t WHERE t.period = b.period AND t.kind IN ('charge', 'reversal')"
                " AND (t.key_id = b.scope_id OR t.project_id = b.scope_id))",
        open_holds="(SELECT COALESCE(SUM(h.amount), 0) FROM ledger_holds h WHERE h.status = 'open'"
                   " AND h.period = b.period AND (h.key_id = b.scope_id OR h.project_id = b.scope_id))")
    for b in rows_as(_BudgetCheck, await conn.execute(text(
            f"SELECT {select} FROM budget_usage b WHERE (:all OR b.org_id = :o) ORDER BY b.scope_id, b.period"),
            scope)):
        subject = f"{b.scope_id}@{b.period}"
        if b.charged != b.spent:
            out.append(Drift(check="budget_spent", subject=subject, expected=b.charged, actual=b.spent))
        if b.open_holds != b.held:
            out.append(Drift(check="budget_held", subject=subject, expected=b.open_holds, actual=b.held))
    return out


class _AccountCheck(msgspec.Struct, frozen=True):
    """An account's cached figures beside what its entries and open holds say they must be."""

    id: str
    balance: int
    held: int
    kind: str
    org_id: str
    entry_seq: int
    entries_sum: int
    last_balance: int | None
    entries: int


class _TxnSum(msgspec.Struct, frozen=True):
    id: str
    total: int


class _BudgetCheck(msgspec.Struct, frozen=True):
    scope_id: str
    period: str
    spent: int
    held: int
    charged: int
    open_holds: int
