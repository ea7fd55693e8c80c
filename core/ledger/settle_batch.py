"""Settlements of a group-commit batch with fewer statements per item (the adapter's hot path).

`settle_many` (settle.py) runs about eleven statements per settlement; on PostgreSQL each is a
network round trip. `settle_batch` produces the same rows with the statements whose results nobody
needs taken out of the per-item loop. The batch's holds are read (and on PostgreSQL locked) in one
statement; then, on SQLite, claimed in one UPDATE, the budget counters moved, each leg's account
UPDATE and entry run one after the other (schema.sql: an entry records the account's state right
after its own move, and an account's `entry_seq` moves by one per entry), and the transaction rows
and usage records inserted in one `executemany` each (local calls). On PostgreSQL all of those
writes are one call of `nx_settle_batch` (settle_call.py), so a batch costs about five round trips
(BEGIN, the locked read, the call, the event subscription check, COMMIT) whatever its size.

It is the optimistic path: a batch that is not plain raises (a hold not found, not open or named
twice, a hold id instead of a request id, a customer account that cannot pay), and the group commit
reruns it item by item with `settle_many` (each in a savepoint), which gives each item its own
outcome (`hold_already_resolved`, a late settlement of an expired hold, ...). Since the holds are
open and locked, the claim cannot lose a race, so the outcome is the same as `settle_many`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.ids import new_id
from core.ledger.core import TXN_INSERT, TxnMeta, is_postgres, post, release_held, release_out
from core.ledger.errors import LedgerError
from core.ledger.holds import HOLD_COLUMNS, hold_from_row
from core.ledger.model import Hold, Leg, Settlement, Usage
from core.ledger.pricing import card_version, charge_for
from core.ledger.settle import USAGE_INSERT, _budgets, _Claimed, completed_event, usage_row, wallet_crossing
from core.ledger.settle_call import apply_in_one_call
from core.rawsql import execute_many, sql

__all__ = ["NotPlain", "settle_batch"]


class NotPlain(LedgerError):
    """The batch needs `settle_many`'s item-by-item outcomes: rerun it that way."""

    code = "billing_unavailable"


async def settle_batch(conn: AsyncConnection, items: Sequence[tuple[str, Usage]], *,
                       now: int | None = None) -> list[Settlement]:
    """Settle every item (request ids of open holds) or raise `NotPlain`; results in item order."""
    now = now_ms() if now is None else now
    refs = [ref for ref, _ in items]
    if len(set(refs)) != len(refs) or not all(ref.startswith("req_") for ref in refs):
        raise NotPlain("a batch naming a hold twice or by hold id")
    holds = await _lock_holds(conn, refs)
    claimed: list[_Claimed] = []
    for index in sorted(range(len(items)), key=lambda i: items[i][0]):
        ref, usage = items[index]
        hold = holds.get(ref)
        if hold is None or hold.status != "open" or usage.cached_tokens > usage.input_tokens:
            raise NotPlain(f"hold {ref} needs settle_many")
        routed = usage.model_id is not None and usage.price_version is not None  # settle.py's `_claim`
        card = await card_version(conn, *((usage.model_id, usage.price_version) if routed  # type: ignore[arg-type]
                                          else (hold.model_id, hold.price_version)))
        cost = charge_for(card, usage.input_tokens, usage.cached_tokens, usage.output_tokens)
        claimed.append(_Claimed(index, hold, usage, cost, new_id("txn") if cost else None, card.id))
    if is_postgres(conn):
        await _settle_in_one_call(conn, claimed, now)
    else:
        await _settle_statements(conn, claimed, now)
    results: list[Settlement | None] = [None] * len(items)
    for c in claimed:
        await completed_event(conn, c, now)
        covered = min(c.cost, c.hold.amount)
        results[c.index] = Settlement(hold_id=c.hold.id, request_id=c.hold.request_id, charged=c.cost,
                                      released=c.hold.amount - covered, receivable=c.cost - covered,
                                      txn_id=c.txn_id, model_id=c.model_id, price_version=c.price_version)
    return [r for r in results if r is not None]


async def _settle_in_one_call(conn: AsyncConnection, claimed: list[_Claimed], now: int) -> None:
    """PostgreSQL: every leg and transaction row prepared here (`post` with `sealing` and
    `legs_out`), then all of the batch's writes in one call (settle_call.py)."""
    sealing: list[dict[str, object]] = []
    legs: list[dict[str, object]] = []
    charged: dict[str, tuple[int, str]] = {}
    for org_id in sorted({c.hold.org_id for c in claimed}):
        paid, last_txn = await _post_org(conn, org_id, [c for c in claimed if c.hold.org_id == org_id], sealing, legs)
        if last_txn is not None:
            charged[org_id] = (paid, last_txn)
    await apply_in_one_call(conn, claimed, legs, sealing, charged, now)


async def _settle_statements(conn: AsyncConnection, claimed: list[_Claimed], now: int) -> None:
    """SQLite: the same writes as statements on the connection (each a local call)."""
    # Locked and open (SQLite: the one writer), so every claim wins.
    await execute_many(conn, (
        "UPDATE ledger_holds SET status = 'settled', charged = :c, txn_id = :t, resolved_at = :now"
        " WHERE id = :id AND status = 'open'"),
        [{"c": min(c.cost, c.hold.amount), "t": c.txn_id, "now": now, "id": c.hold.id} for c in claimed])
    await _budgets(conn, claimed, now)
    sealing: list[dict[str, object]] = []
    orgs = sorted({c.hold.org_id for c in claimed})
    posted = [await _post_org(conn, org_id, [c for c in claimed if c.hold.org_id == org_id], sealing, None)
              for org_id in orgs]
    for org_id, (charged, last_txn) in zip(orgs, posted, strict=True):
        await wallet_crossing(conn, org_id, charged, last_txn, now)
    await execute_many(conn, TXN_INSERT, sealing)
    await execute_many(conn, USAGE_INSERT, [usage_row(c, now) for c in claimed])


async def _lock_holds(conn: AsyncConnection, refs: list[str]) -> dict[str, Hold]:
    if is_postgres(conn):  # hold rows first, in id order: settle.py's lock order
        rows = await conn.execute(sql(
            f"SELECT {HOLD_COLUMNS} FROM ledger_holds WHERE request_id = ANY(CAST(:refs AS text[]))"
            " ORDER BY id FOR UPDATE"), {"refs": refs})
    else:
        names = ", ".join(f":r{i}" for i in range(len(refs)))
        rows = await conn.execute(sql(f"SELECT {HOLD_COLUMNS} FROM ledger_holds WHERE request_id IN ({names})"),
                                  {f"r{i}": ref for i, ref in enumerate(refs)})
    holds = [hold_from_row(r) for r in rows]
    return {h.request_id: h for h in holds}


async def _post_org(conn: AsyncConnection, org_id: str, group: list[_Claimed], sealing: list[dict[str, object]],
                    legs_out: list[dict[str, object]] | None) -> tuple[int, str | None]:
    """settle.py's `_post_org` for open holds, with each transaction row left in `sealing` (and on
    PostgreSQL each leg in `legs_out`); returns what the wallet and credit paid, and the last
    transaction."""
    charged = 0
    last_txn: str | None = None
    for c in sorted(group, key=lambda c: c.hold.id):
        h = c.hold
        covered = min(c.cost, h.amount)
        promo_charge = min(covered, h.promo_part)
        legs = [Leg("promo", -promo_charge, h.promo_part), Leg("wallet", promo_charge - covered,
                                                               h.amount - h.promo_part)]
        if c.txn_id is None:
            for leg in legs:
                if legs_out is None:
                    await release_held(conn, org_id, leg.kind, leg.release)
                elif leg.release:  # in the batch's call, after the budget counters (lock order)
                    legs_out.append(release_out(org_id, leg.kind, leg.release))
            continue
        meta = TxnMeta(kind="charge", actor="system", request_id=h.request_id, project_id=h.project_id,
                       key_id=h.key_id, period=h.period, model_id=c.model_id, price_version=c.price_version)
        if c.cost > covered:
            legs.append(Leg("receivable", covered - c.cost))
        try:
            await post(conn, org_id, [*legs, Leg("revenue", c.cost)], meta, f"charge:{h.id}", txn_id=c.txn_id,
                       first_use=True, sealing=sealing, legs_out=legs_out)
        except LedgerError as exc:
            raise NotPlain(str(exc)) from exc
        charged, last_txn = charged + covered, c.txn_id
    return charged, last_txn

