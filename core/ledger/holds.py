"""Holds: reserve a request's maximum cost before the backend is called (the sidecar's check).

A hold is a pending debit. It reserves from promotional credit first, then the wallet, by raising
the accounts' `held` with conditional UPDATEs (`WHERE balance - held >= x`), and from the key's and
the project's monthly budgets the same way; if any of them cannot cover it the request is refused
with 402 `insufficient_quota` before it reaches a backend. Under any interleaving exactly the
affordable holds succeed: on SQLite writers are serialized (BEGIN IMMEDIATE), on PostgreSQL the
conditional UPDATE re-checks the row after waiting for its lock (READ COMMITTED).

A hold resolves exactly once (a trigger refuses a second resolution): settled (`settle.py`),
released, or expired by the worker (`expire_holds`) when the process that placed it died. A hold is
a lease: the adapter moves `expires_at` forward while its stream is live (`renew_holds`), so a
stream that outlasts the first expiry keeps its reservation; and an expired hold whose request was
served after all may still be settled once, late (`settle_many(late=True)`: migration 0007).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.ids import new_id
from core.ledger import budgets
from core.ledger.core import is_postgres, release_held
from core.ledger.errors import HoldResolved, InsufficientFunds, InvalidAmount, KeyReused, NotFound
from core.ledger.model import KIND_ORDER, Hold
from core.ledger.pricing import card_in_force, max_cost
from core.rawsql import sql
from core.rows import columns, row_as

__all__ = ["HOLD_COLUMNS", "expire_holds", "hold_from_row", "load_hold", "place_hold", "release_hold",
           "renew_holds", "unreserve"]

HOLD_COLUMNS = columns(Hold)


def hold_from_row(r: Sequence[object]) -> Hold:
    return row_as(Hold, r)


async def load_hold(conn: AsyncConnection, ref: str, *, for_update: bool = False) -> Hold | None:
    """By hold id (`hold_...`) or by the request id it was placed for (`req_...`)."""
    column = "id" if ref.startswith("hold_") else "request_id"
    lock = " FOR UPDATE" if for_update and is_postgres(conn) else ""
    r = (await conn.execute(sql(f"SELECT {HOLD_COLUMNS} FROM ledger_holds WHERE {column} = :r{lock}"),
                            {"r": ref})).first()
    return None if r is None else hold_from_row(r)


async def place_hold(conn: AsyncConnection, *, org_id: str, project_id: str, key_id: str, request_id: str,
                     model_id: str, endpoint: str, backend_id: str, max_input_tokens: int,
                     max_output_tokens: int, expires_at_ms: int, client_ip: str = "",
                     now: int | None = None, cover_nanos: int = 0) -> Hold:
    """Reserve the most this request can cost at the price card in force; raise 402 if unaffordable.

    Idempotent on `request_id`: placed again with the same figures it returns the same hold; with
    others it is refused (422). On refusal the caller's transaction must be rolled back.
    `cover_nanos`: a routed request may be answered by a pricier target than `model_id` (issue 16);
    the hold is then at least that target's maximum cost.
    """
    now = now_ms() if now is None else now
    if max_input_tokens < 0 or max_output_tokens < 0:
        raise InvalidAmount("token counts must be non-negative")
    card = await card_in_force(conn, model_id, now)
    amount = max(max_cost(card, max_input_tokens, max_output_tokens), cover_nanos)
    existing = await load_hold(conn, request_id)
    if existing is not None:
        was = (existing.org_id, existing.project_id, existing.key_id, existing.model_id, existing.amount)
        if was != (org_id, project_id, key_id, model_id, amount):
            raise KeyReused(f"Request {request_id} already holds a different amount.")
        return existing
    period = budgets.period_of(now)
    key_budget, project_budget = await budgets.budgets_of(conn, org_id, key_id, project_id)
    for kind, scope, budget in (("key", key_id, key_budget), ("project", project_id, project_budget)):
        if not await budgets.reserve(conn, org_id, scope, period, amount, budget):
            raise InsufficientFunds(f"This request could cost up to {amount} nano-dollars, more "
                                    f"than remains of the {kind}'s monthly budget.")
    promo_part = await _reserve_promo(conn, org_id, amount)
    rest = amount - promo_part
    if rest:
        moved = await conn.execute(sql(
            "UPDATE ledger_accounts SET held = held + :x WHERE org_id = :o AND kind = 'wallet'"
            " AND balance - held >= :x"), {"x": rest, "o": org_id})
        if moved.rowcount != 1:
            raise InsufficientFunds(f"This request could cost up to {amount} nano-dollars, "
                                    "more than the available balance. Add credit to continue.")
    hold = Hold(id=new_id("hold"), org_id=org_id, project_id=project_id, key_id=key_id, request_id=request_id,
                model_id=model_id, price_version=card.version, endpoint=endpoint, backend_id=backend_id,
                client_ip=client_ip, amount=amount, promo_part=promo_part, period=period, status="open",
                charged=None, txn_id=None, expires_at=expires_at_ms, created_at=now)
    await conn.execute(sql(
        "INSERT INTO ledger_holds (id, org_id, project_id, key_id, request_id, model_id, price_version,"
        " endpoint, backend_id, client_ip, amount, promo_part, period, status, expires_at, created_at)"
        " VALUES (:id, :o, :p, :k, :r, :m, :pv, :e, :b, :ip, :a, :pp, :period, 'open', :exp, :now)"),
        {"id": hold.id, "o": org_id, "p": project_id, "k": key_id, "r": request_id, "m": model_id,
         "pv": card.version, "e": endpoint, "b": backend_id, "ip": client_ip, "a": amount, "pp": promo_part,
         "period": period, "exp": expires_at_ms, "now": now})
    return hold


async def _reserve_promo(conn: AsyncConnection, org_id: str, amount: int) -> int:
    """Reserve what promotional credit can cover (it is spent before the wallet)."""
    lock = " FOR UPDATE" if is_postgres(conn) else ""
    r = (await conn.execute(sql(
        f"SELECT balance - held FROM ledger_accounts WHERE org_id = :o AND kind = 'promo'{lock}"),
        {"o": org_id})).first()
    take = 0 if r is None else min(amount, max(0, int(r[0])))
    if take:
        await conn.execute(sql(
            "UPDATE ledger_accounts SET held = held + :x WHERE org_id = :o AND kind = 'promo'"
            " AND balance - held >= :x"), {"x": take, "o": org_id})
    return take


async def unreserve(conn: AsyncConnection, holds: list[Hold]) -> None:
    """Return claimed holds' reservations: budget rows first, then accounts, each in sorted order
    (the global lock order, see model.KIND_ORDER), whatever order the holds came in."""
    scopes: dict[tuple[str, str], int] = {}
    accounts: dict[tuple[str, int, str], int] = {}
    for h in holds:
        for scope in (h.key_id, h.project_id):
            scopes[(scope, h.period)] = scopes.get((scope, h.period), 0) + h.amount
        for kind, part in (("promo", h.promo_part), ("wallet", h.amount - h.promo_part)):
            key = (h.org_id, KIND_ORDER[kind], kind)
            accounts[key] = accounts.get(key, 0) + part
    for (scope, period), amount in sorted(scopes.items()):
        await budgets.consume(conn, scope, period, 0, amount)
    for (org_id, _, kind), amount in sorted(accounts.items()):
        await release_held(conn, org_id, kind, amount)


async def release_hold(conn: AsyncConnection, ref: str, *, now: int | None = None) -> Hold:
    """Give a hold back untouched (the request never reached a backend). No usage record."""
    now = now_ms() if now is None else now
    hold = await load_hold(conn, ref)
    if hold is None:
        raise NotFound(f"No hold {ref!r}.")
    claimed = await conn.execute(sql(
        "UPDATE ledger_holds SET status = 'released', charged = 0, resolved_at = :now"
        " WHERE id = :id AND status = 'open'"), {"now": now, "id": hold.id})
    if claimed.rowcount != 1:
        raise HoldResolved(f"Hold {hold.id} is already {hold.status}.")
    await unreserve(conn, [hold])
    return hold


async def expire_holds(conn: AsyncConnection, now: int | None = None, limit: int = 500) -> int:
    """Release every open hold whose time is up (orphans of a crashed process); returns how many."""
    now = now_ms() if now is None else now
    rows = await conn.execute(sql(
        f"SELECT {HOLD_COLUMNS} FROM ledger_holds WHERE status = 'open' AND expires_at <= :now"
        " ORDER BY id LIMIT :lim"), {"now": now, "lim": limit})
    expired: list[Hold] = []
    for hold in [hold_from_row(r) for r in rows]:
        # Conditional: a settlement racing this sweep wins or loses cleanly, never both.
        claimed = await conn.execute(sql(
            "UPDATE ledger_holds SET status = 'expired', charged = 0, resolved_at = :now"
            " WHERE id = :id AND status = 'open'"), {"now": now, "id": hold.id})
        if claimed.rowcount == 1:
            expired.append(hold)
    await unreserve(conn, expired)
    return len(expired)


async def renew_holds(conn: AsyncConnection, request_ids: list[str], expires_at_ms: int) -> int:
    """Extend the leases of open holds (their streams are live) to at least `expires_at_ms`;
    returns how many moved. Resolved holds are left alone (the guard would refuse them)."""
    moved = 0
    for start in range(0, len(request_ids), 500):
        chunk = request_ids[start:start + 500]
        names = ", ".join(f":r{i}" for i in range(len(chunk)))
        result = await conn.execute(sql(
            f"UPDATE ledger_holds SET expires_at = :exp WHERE status = 'open' AND expires_at < :exp"
            f" AND request_id IN ({names})"), {"exp": expires_at_ms, **{f"r{i}": r for i, r in enumerate(chunk)}})
        moved += result.rowcount
    return moved
