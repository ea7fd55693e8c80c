"""Reconcile, served against billed: what was delivered has its charge, and every charge its usage.

The ledger's own consistency (reconcile.py) cannot see work that was served and never billed:
nothing was written. These checks compare what records the serving left against the charges:
- `usage_vs_charge`: a usage record with a cost and no charge transaction of that amount;
- `charge_vs_usage`: a charge transaction with no usage record;
- `settled_hold_vs_usage`: a hold settled without its usage record;
- `response_vs_usage`: a stored response whose request took a hold (was billable) and whose
  output is not (wholly) in its usage record;
- `served_vs_billed`: a request the adapters' journal says was served and is not settled: its
  adapter died, or the database refused its settlement, and no settler has charged it yet (the
  journal is read when the data directory is at hand: `nx ledger reconcile`, the control plane on
  the same machine). A stream being served right now is not a difference.
A charge above its hold, partly booked to the receivable (migration 0004), is a whole charge here:
its transaction's amount is its revenue, the usage record's cost.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ledger.model import Drift
from core.rows import columns, rows_as
from core.served import unsettled_in

__all__ = ["billed_drift"]


async def billed_drift(conn: AsyncConnection, scope: dict[str, object], journal_dir: Path | None) -> list[Drift]:
    out: list[Drift] = []
    for u in rows_as(_Usage, await conn.execute(text(
            f"SELECT {columns(_Usage, 'u', charged='t.amount')} FROM usage_records u"
            " LEFT JOIN ledger_transactions t ON t.id = u.txn_id AND t.kind = 'charge'"
            " WHERE (:all OR u.org_id = :o) AND u.cost_nanos > 0 AND (t.id IS NULL OR t.amount <> u.cost_nanos)"
            " ORDER BY u.request_id"), scope)):
        out.append(Drift(check="usage_vs_charge", subject=u.request_id, expected=u.cost_nanos,
                         actual=u.charged or 0))
    for t in rows_as(_Charge, await conn.execute(text(
            "SELECT t.id, t.amount FROM ledger_transactions t WHERE (:all OR t.org_id = :o) AND t.kind = 'charge'"
            " AND NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.request_id = t.request_id)"
            " ORDER BY t.id"), scope)):
        out.append(Drift(check="charge_vs_usage", subject=t.id, expected=t.amount, actual=0))
    for r in await conn.execute(text(
            "SELECT h.id FROM ledger_holds h WHERE (:all OR h.org_id = :o) AND h.status = 'settled'"
            " AND NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.request_id = h.request_id) ORDER BY h.id"),
            scope):
        out.append(Drift(check="settled_hold_vs_usage", subject=str(r[0]), expected=1, actual=0))
    # A background response is billed under its own id, one answered at once under its request's.
    for resp in rows_as(_Response, await conn.execute(text(
            "SELECT r.id, r.output_tokens, (SELECT MAX(u.output_tokens) FROM usage_records u"
            "  WHERE u.request_id IN (r.request_id, r.id))"
            " FROM responses r WHERE (:all OR r.org_id = :o) AND r.output_tokens > 0"
            " AND r.status NOT IN ('queued', 'in_progress') AND EXISTS (SELECT 1 FROM ledger_holds h"
            "  WHERE h.request_id IN (r.request_id, r.id)) ORDER BY r.id"), scope)):
        billed = -1 if resp.billed_output is None else resp.billed_output
        if billed < resp.output_tokens:
            out.append(Drift(check="response_vs_usage", subject=resp.id, expected=resp.output_tokens,
                             actual=max(0, billed)))
    if journal_dir is not None and journal_dir.is_dir():
        out += await _journal_drift(conn, scope, journal_dir)
    return out


async def _journal_drift(conn: AsyncConnection, scope: dict[str, object], journal_dir: Path) -> list[Drift]:
    out: list[Drift] = []
    for alive, u in unsettled_in(journal_dir):
        hold = (await conn.execute(text(
            "SELECT status FROM ledger_holds WHERE request_id = :r AND (:all OR org_id = :o)"),
            {**scope, "r": u.request_id})).first()
        if hold is None or hold[0] == "settled":
            continue  # another organization's, or charged (its `D` line was lost with its adapter)
        if alive and u.final is None and hold[0] == "open":
            continue  # being served now
        out.append(Drift(check="served_vs_billed", subject=u.request_id, expected=u.usage().output_tokens,
                         actual=0))
    return out


class _Usage(msgspec.Struct, frozen=True):
    request_id: str
    cost_nanos: int
    charged: int | None


class _Charge(msgspec.Struct, frozen=True):
    id: str
    amount: int


class _Response(msgspec.Struct, frozen=True):
    id: str
    output_tokens: int
    billed_output: int | None
