"""A plain settlement batch's writes in one call on PostgreSQL (`nx_settle_batch`, schema.sql).

`settle_batch` (settle_batch.py) computes everything from the holds it has read and locked: each
claim, each budget counter's share, each ledger leg, each transaction row and usage record. On
SQLite it then runs those statements (local calls); on PostgreSQL each is a network round trip,
about eleven per batch, so here they go to the server as one call, in the same order and with the
same checks, and only what the threshold checks need comes back: each budget counter's spend
after the batch, and each charged organization's spendable balance after it. The crossings
themselves (rare: a budget percentage or the low-balance mark passed) stay in Python, as do the
`request.completed` events. Whatever the function refuses raises, and the group commit reruns the
batch item by item (`settle_many`).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ledger import budgets
from core.ledger.settle import _Claimed, usage_row
from core.rawsql import sql

__all__ = ["apply_in_one_call"]

_CALL = ("SELECT nx_settle_batch(CAST(:claims AS jsonb), CAST(:budgets AS jsonb), CAST(:legs AS jsonb),"
         " CAST(:txns AS jsonb), CAST(:usage AS jsonb), CAST(:orgs AS text[]), :now)")


class _Result(msgspec.Struct, frozen=True):
    budgets: list[tuple[str, str, int, int | None]]
    """(scope, period, spend after, budget remembered at the last hold), in scope order."""
    wallets: list[tuple[str, int, int | None, str]]
    """(organization, wallet + promo after, low-balance mark, wallet id)."""


async def apply_in_one_call(conn: AsyncConnection, claimed: Sequence[_Claimed], legs: list[dict[str, object]],
                            sealing: list[dict[str, object]], charged: dict[str, tuple[int, str]], now: int) -> None:
    """Claim, budgets, legs, transaction rows and usage records of `claimed` in one call, then the
    threshold crossings they caused. `charged`: organization -> (what its wallet and credit paid in
    this batch, its last transaction), for the organizations that paid anything."""
    shares: dict[tuple[str, str], list[_Claimed]] = {}
    for c in claimed:
        for scope in (c.hold.key_id, c.hold.project_id):
            shares.setdefault((scope, c.hold.period), []).append(c)
    orgs = sorted(charged)
    encode = msgspec.json.encode
    raw = (await conn.execute(sql(_CALL), {
        "claims": encode([{"id": c.hold.id, "c": min(c.cost, c.hold.amount), "t": c.txn_id} for c in claimed]).decode(),
        "budgets": encode([{"s": scope, "p": period, "c": sum(c.cost for c in group),
                            "r": sum(c.reserved for c in group)}
                           for (scope, period), group in sorted(shares.items())]).decode(),
        "legs": encode(legs).decode(), "txns": encode(sealing).decode(),
        "usage": encode([usage_row(c, now) for c in claimed]).decode(), "orgs": orgs, "now": now})).scalar_one()
    result = msgspec.json.decode(raw if isinstance(raw, (str, bytes)) else msgspec.json.encode(raw), type=_Result)
    for scope, period, after, limit in result.budgets:  # settle.py's `_budgets`, after the fact
        group = shares[(scope, period)]
        last = max((c for c in group if c.txn_id), key=lambda c: c.hold.id, default=None)
        if last is not None and last.txn_id is not None:
            spent = sum(c.cost for c in group)
            kind: budgets.ScopeKind = "key" if scope == last.hold.key_id else "project"
            await budgets.record_budget_crossings(conn, last.hold.org_id, kind, scope, period, after - spent, after,
                                                  limit, last.txn_id, last.hold.project_id, now)
    for org_id, balance, low_mark, wallet_id in result.wallets:  # settle.py's `wallet_crossing`
        paid, last_txn = charged[org_id]
        await budgets.record_wallet_crossing(conn, org_id, wallet_id, budgets.period_of(now), balance + paid,
                                             balance, low_mark, last_txn, now)
