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

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ledger.settle import Wallet, _Claimed, budget_crossings, budget_shares, low_balance_crossing, usage_row
from core.rawsql import sql

__all__ = ["apply_in_one_call"]

_CALL = ("SELECT nx_settle_batch(CAST(:claims AS jsonb), CAST(:budgets AS jsonb), CAST(:legs AS jsonb),"
         " CAST(:txns AS jsonb), CAST(:usage AS jsonb), CAST(:orgs AS text[]), :now)")


class _Result(msgspec.Struct, frozen=True):
    budgets: list[tuple[str, str, int, int | None]]
    """(scope, period, spend after, budget remembered at the last hold), in scope order."""
    wallets: list[tuple[str, int, int | None, str]]
    """(organization, wallet + promo after, low-balance mark, wallet id)."""


async def apply_in_one_call(conn: AsyncConnection, claimed: list[_Claimed], legs: list[dict[str, object]],
                            sealing: list[dict[str, object]], charged: dict[str, tuple[int, str]], now: int) -> None:
    """Claim, budgets, legs, transaction rows and usage records of `claimed` in one call, then the
    threshold crossings they caused. `charged`: organization -> (what its wallet and credit paid in
    this batch, its last transaction), for the organizations that paid anything."""
    shares = budget_shares(claimed)
    encode = msgspec.json.encode
    raw = (await conn.execute(sql(_CALL), {
        "claims": encode([{"id": c.hold.id, "c": min(c.cost, c.hold.amount), "t": c.txn_id} for c in claimed]).decode(),
        "budgets": encode([{"s": scope, "p": period, "c": sum(c.cost for c in group),
                            "r": sum(c.reserved for c in group)} for (scope, period), group in shares]).decode(),
        "legs": encode(legs).decode(), "txns": encode(sealing).decode(),
        "usage": encode([usage_row(c, now) for c in claimed]).decode(), "orgs": sorted(charged),
        "now": now})).scalar_one()
    # asyncpg hands jsonb over as text; SQLAlchemy's asyncpg dialect decodes it first.
    result = (msgspec.json.decode(raw, type=_Result) if isinstance(raw, (str, bytes))
              else msgspec.convert(raw, _Result))
    groups = dict(shares)
    for scope, period, after, limit in result.budgets:
        await budget_crossings(conn, scope, period, groups[(scope, period)], after, limit, now)
    for org_id, balance, low_mark, wallet_id in result.wallets:
        paid, last_txn = charged[org_id]
        await low_balance_crossing(conn, org_id, Wallet(balance, low_mark, wallet_id), paid, last_txn, now)
