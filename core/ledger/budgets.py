"""Monthly budgets (calendar month, UTC) on keys and projects, and threshold crossings.

Consumption of a period = settled charges + open holds, kept as counters in `budget_usage` so the
hold can enforce the budget with one conditional UPDATE (no read-then-write race). The period of a
charge is the period of its hold, so counters stay exact across a month boundary.

Thresholds (50 %, 80 %, 100 % of a budget, and a wallet falling below its low-balance mark) are
edge-triggered: a crossing is a row in `threshold_crossings` whose unique key (scope, period,
threshold) makes it fire once, written with the `usage.threshold_reached` event in the transaction
of the charge that crossed it.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from core.events import record_event
from core.events.catalog import UsageThresholdReached
from core.rawsql import sql
from core.rows import row_as

__all__ = [
    "BUDGET_PERCENTS",
    "budgets_of",
    "consume",
    "period_of",
    "record_budget_crossings",
    "record_wallet_crossing",
    "reserve",
]

BUDGET_PERCENTS = (50, 80, 100)


def period_of(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC).strftime("%Y-%m")


async def budgets_of(conn: AsyncConnection, org_id: str, key_id: str,
                     project_id: str) -> tuple[int | None, int | None]:
    """(key budget, project budget) in one round trip; None means unlimited."""
    r = row_as(_Budgets, (await conn.execute(sql(
        "SELECT (SELECT monthly_budget_nanos FROM api_keys WHERE id = :k AND org_id = :o),"
        " (SELECT monthly_budget_nanos FROM projects WHERE id = :p AND org_id = :o)"),
        {"k": key_id, "p": project_id, "o": org_id})).one())
    return r.key, r.project


class _Budgets(msgspec.Struct, frozen=True):
    key: int | None
    project: int | None


async def reserve(conn: AsyncConnection, org_id: str, scope_id: str, period: str, amount: int,
                  budget: int | None) -> bool:
    """Add `amount` to the scope's open holds if the budget (None: unlimited) still covers it.

    One upsert: the first hold of a period creates the counter (consumption 0, so only the amount
    itself is checked); later ones update it only WHERE the budget still covers the total. The
    budget seen here is remembered, so settling needs no second read to evaluate thresholds.
    """
    if budget is not None and amount > budget:
        return False
    guard = "" if budget is None else " WHERE budget_usage.spent + budget_usage.held + :a <= :b"
    result = await conn.execute(sql(
        "INSERT INTO budget_usage (scope_id, period, org_id, held, limit_nanos) VALUES (:s, :p, :o, :a, :b)"
        " ON CONFLICT (scope_id, period) DO UPDATE SET held = budget_usage.held + :a, limit_nanos = :b"
        f"{guard}"), {"a": amount, "s": scope_id, "p": period, "o": org_id, "b": budget})
    return result.rowcount == 1


async def consume(conn: AsyncConnection, scope_id: str, period: str, spent: int,
                  released: int) -> tuple[int, int | None]:
    """Settle: `spent` moves into the period's spend, `released` leaves its open holds.

    Returns (spend after, budget remembered at the last hold)."""
    r = (await conn.execute(sql(
        "UPDATE budget_usage SET spent = spent + :c, held = held - :r WHERE scope_id = :s AND period = :p"
        " RETURNING spent, limit_nanos"), {"c": spent, "r": released, "s": scope_id, "p": period})).first()
    if r is None:
        raise LookupError(f"no budget counter for {scope_id} in {period}: a hold always creates it")
    counter = row_as(_Counter, r)
    return counter.spent, counter.limit_nanos


class _Counter(msgspec.Struct, frozen=True):
    spent: int
    limit_nanos: int | None


ScopeKind = Literal["key", "project", "wallet"]


async def _cross(conn: AsyncConnection, org_id: str, scope_kind: ScopeKind, scope_id: str, period: str,
                 threshold: str, txn_id: str, value: int, limit: int, mark: int, project_id: str | None,
                 now: int) -> bool:
    inserted = await conn.execute(sql(
        "INSERT INTO threshold_crossings (org_id, scope_kind, scope_id, period, threshold, txn_id,"
        " value_nanos, limit_nanos, created_at) VALUES (:o, :k, :s, :p, :t, :txn, :v, :l, :now)"
        " ON CONFLICT (scope_kind, scope_id, period, threshold) DO NOTHING"),
        {"o": org_id, "k": scope_kind, "s": scope_id, "p": period, "t": threshold,
         "txn": txn_id, "v": value, "l": limit, "now": now})
    if inserted.rowcount != 1:
        return False
    await record_event(conn, org_id, "usage.threshold_reached", UsageThresholdReached(
        rule_id=f"{scope_kind}.{threshold}", scope=scope_kind,
        scope_id=scope_id, period=period, threshold_nanos=mark, observed_nanos=value, limit_nanos=limit),
        project_id=project_id, dedup_key=f"threshold:{scope_kind}:{scope_id}:{period}:{threshold}")
    return True


async def record_budget_crossings(conn: AsyncConnection, org_id: str, scope_kind: ScopeKind, scope_id: str,
                                  period: str, before: int, after: int, budget: int | None, txn_id: str,
                                  project_id: str | None, now: int) -> list[int]:
    """Record each budget percentage that spend moved across (before < mark <= after)."""
    if budget is None or budget == 0 or after <= before:
        return []
    crossed = []
    for pct in BUDGET_PERCENTS:
        # Integer comparison: spend * 100 against pct * budget, so no fraction is ever formed.
        if before * 100 < pct * budget <= after * 100:
            mark = -(-pct * budget // 100)
            if await _cross(conn, org_id, scope_kind, scope_id, period, f"{pct}pct", txn_id, after, budget,
                            mark, project_id, now):
                crossed.append(pct)
    return crossed


async def record_wallet_crossing(conn: AsyncConnection, org_id: str, wallet_id: str, period: str,
                                 before: int, after: int, low_mark: int | None, txn_id: str,
                                 now: int) -> bool:
    """The spendable balance (wallet + promo) fell below the organization's low-balance mark."""
    if low_mark is None or not (after < low_mark <= before):
        return False
    return await _cross(conn, org_id, "wallet", wallet_id, period, "low_balance", txn_id, after, low_mark,
                        low_mark, None, now)
