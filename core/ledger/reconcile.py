"""Reconciliation: recompute every cached figure from the journal and report any drift.

Checked, per organization or for all: each account's balance against the sum of its entries and
against the balance its latest entry recorded; each account's held amount against its open holds;
every transaction sums to zero and so does the whole journal; budget counters against the charges
(net of reversals) and open holds of their period. Zero drift is the only healthy answer.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Drift", "ReconcileReport", "reconcile"]


class Drift(msgspec.Struct, frozen=True, kw_only=True):
    check: str
    subject: str
    expected: int
    actual: int


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


async def reconcile(conn: AsyncConnection, org_id: str | None = None) -> ReconcileReport:
    scope: dict[str, object] = {"o": org_id, "all": org_id is None}
    where_a = "(:all OR a.org_id = :o)"
    drift: list[Drift] = []
    accounts = 0
    for r in await conn.execute(text(
            "SELECT a.id, a.balance, a.held, a.kind, a.org_id, a.entry_seq,"
            " (SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e WHERE e.account_id = a.id),"
            " (SELECT e.balance_after FROM ledger_entries e WHERE e.account_id = a.id"
            "  AND e.account_seq = a.entry_seq),"
            " (SELECT COUNT(*) FROM ledger_entries e WHERE e.account_id = a.id)"
            f" FROM ledger_accounts a WHERE {where_a} ORDER BY a.id"), scope):
        accounts += 1
        subject, cached = str(r[0]), int(r[1])
        if int(r[6]) != cached:
            drift.append(Drift(check="balance_vs_entries", subject=subject, expected=int(r[6]),
                               actual=cached))
        last = 0 if r[7] is None else int(r[7])
        if last != cached:
            drift.append(Drift(check="balance_vs_last_entry", subject=subject, expected=last, actual=cached))
        if int(r[8]) != int(r[5]):
            drift.append(Drift(check="entry_count", subject=subject, expected=int(r[8]), actual=int(r[5])))
        if r[3] in ("wallet", "promo"):
            part = "promo_part" if r[3] == "promo" else "amount - promo_part"
            held = (await conn.execute(text(
                f"SELECT COALESCE(SUM({part}), 0) FROM ledger_holds WHERE org_id = :o AND status = 'open'"),
                {"o": r[4]})).scalar_one()
            if int(held) != int(r[2]):
                drift.append(Drift(check="held_vs_open_holds", subject=subject, expected=int(held),
                                   actual=int(r[2])))
    for r in await conn.execute(text(
            "SELECT t.id, (SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e WHERE e.txn_id = t.id)"
            " FROM ledger_transactions t WHERE (:all OR t.org_id = :o)"), scope):
        if int(r[1]) != 0:
            drift.append(Drift(check="transaction_sum", subject=str(r[0]), expected=0, actual=int(r[1])))
    transactions = int((await conn.execute(text(
        "SELECT COUNT(*) FROM ledger_transactions WHERE (:all OR org_id = :o)"), scope)).scalar_one())
    journal_sum = int((await conn.execute(text(
        "SELECT COALESCE(SUM(e.amount), 0) FROM ledger_entries e"
        " JOIN ledger_accounts a ON a.id = e.account_id"
        f" WHERE {where_a}"), scope)).scalar_one())
    drift += await _budget_drift(conn, scope)
    return ReconcileReport(organization=org_id, accounts=accounts, transactions=transactions,
                           journal_sum=journal_sum, drift=drift)


async def _budget_drift(conn: AsyncConnection, scope: dict[str, object]) -> list[Drift]:
    out = []
    for r in await conn.execute(text(
            "SELECT b.scope_id, b.period, b.spent, b.held,"
            " (SELECT COALESCE(SUM(CASE WHEN t.kind = 'charge' THEN t.amount ELSE -t.amount END), 0)"
            "  FROM ledger_transactions t WHERE t.period = b.period AND t.kind IN ('charge', 'reversal')"
            "  AND (t.key_id = b.scope_id OR t.project_id = b.scope_id)),"
            " (SELECT COALESCE(SUM(h.amount), 0) FROM ledger_holds h WHERE h.status = 'open'"
            "  AND h.period = b.period AND (h.key_id = b.scope_id OR h.project_id = b.scope_id))"
            " FROM budget_usage b WHERE (:all OR b.org_id = :o) ORDER BY b.scope_id, b.period"), scope):
        subject = f"{r[0]}@{r[1]}"
        if int(r[4]) != int(r[2]):
            out.append(Drift(check="budget_spent", subject=subject, expected=int(r[4]), actual=int(r[2])))
        if int(r[5]) != int(r[3]):
            out.append(Drift(check="budget_held", subject=subject, expected=int(r[5]), actual=int(r[3])))
    return out
