"""Holds placed set-based: a group-commit batch of holds in a fixed number of statements.

`place_hold` (holds.py) runs about eight statements per hold; on PostgreSQL each is a network
round trip, so a batch of 30 holds cost about 240 of them (418 holds/s at 32 concurrent callers,
bench/ledger_hot_path.py). `place_holds` reserves a whole batch at once: one price-card read per
model, one budget read per (key, project), one multi-row upsert of the budget counters (summed per
scope), per organization one locked read of its promotional credit and wallet and one UPDATE per
account that moves, and one INSERT of every hold (sqlite3 `executemany`). On PostgreSQL all of it
is one call of `nx_place_holds` (schema.sql, migration 0011), with the price card the group commit
remembers from its last batch (the function checks it is still the one in force): the sidecar's
hold transaction is three round trips (BEGIN, the call, COMMIT) instead of about eight.

It is the optimistic path only. Whenever the batch is not plain it raises: a request id already
held (the unique index refuses the insert), a budget, credit or wallet that cannot cover the
batch's sum. The group commit (core/groupcommit.py) then rolls the transaction back and places each
hold on its own with `place_hold` in a savepoint, which decides exactly which are affordable and
which repeat an earlier hold. When the batch's sums fit, every prefix fits too (amounts are not
negative), so the outcome is the same as placing the holds one by one in the batch's order,
promotional credit included (taken greedily in that order).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.ids import new_id
from core.ledger import budgets
from core.ledger.core import is_postgres
from core.ledger.errors import InsufficientFunds, InvalidAmount, LedgerError
from core.ledger.model import Hold
from core.ledger.pricing import PriceCard, card_in_force, max_cost
from core.rawsql import execute_many, facts_of, sql

__all__ = ["HoldRequest", "place_holds"]


class HoldRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`place_hold`'s arguments for one request of a batch."""

    org_id: str
    project_id: str
    key_id: str
    request_id: str
    model_id: str
    endpoint: str
    backend_id: str
    max_input_tokens: int
    max_output_tokens: int
    expires_at_ms: int
    client_ip: str = ""
    cover_nanos: int = 0
    """A routed request's pricier target's maximum cost: the hold is at least that (place_hold)."""


class BatchRefused(InsufficientFunds):
    """The batch's sum does not fit somewhere: rerun it one hold at a time (`place_hold`)."""


async def place_holds(conn: AsyncConnection, requests: Sequence[HoldRequest], *,
                      now: int | None = None) -> list[Hold | LedgerError]:
    """Place every hold of the batch, or raise (see the module docstring). An item refused before
    anything is written (a negative token count, a model without a price card) is that item's
    outcome alone."""
    now = now_ms() if now is None else now
    period = budgets.period_of(now)
    outcomes: list[Hold | LedgerError] = []
    cards: dict[str, PriceCard | LedgerError] = {}
    for r in requests:
        if r.max_input_tokens < 0 or r.max_output_tokens < 0:
            outcomes.append(InvalidAmount("token counts must be non-negative"))
            continue
        card = cards.get(r.model_id)
        if card is None:
            try:
                card = cards[r.model_id] = await _card(conn, r.model_id, now)
            except LedgerError as exc:
                card = cards[r.model_id] = exc
        if isinstance(card, LedgerError):
            outcomes.append(card)
            continue
        outcomes.append(Hold(id=new_id("hold"), org_id=r.org_id, project_id=r.project_id, key_id=r.key_id,
                             request_id=r.request_id, model_id=r.model_id, price_version=card.version,
                             endpoint=r.endpoint, backend_id=r.backend_id, client_ip=r.client_ip,
                             amount=max(max_cost(card, r.max_input_tokens, r.max_output_tokens), r.cover_nanos),
                             promo_part=0,
                             period=period, status="open", charged=None, txn_id=None,
                             expires_at=r.expires_at_ms, created_at=now))
    holds = [h for h in outcomes if isinstance(h, Hold)]
    if not holds:
        return outcomes
    if is_postgres(conn):
        return await _place_in_one_call(conn, outcomes, holds, period, now)
    await _reserve_budgets(conn, holds, period)
    promo: dict[str, int] = {}
    for org_id in sorted({h.org_id for h in holds}):
        promo.update(await _reserve_accounts(conn, [h for h in holds if h.org_id == org_id]))
    placed = {h.id: msgspec.structs.replace(h, promo_part=promo.get(h.id, 0)) for h in holds}
    await execute_many(conn, (
        "INSERT INTO ledger_holds (id, org_id, project_id, key_id, request_id, model_id, price_version,"
        " endpoint, backend_id, client_ip, amount, promo_part, period, status, expires_at, created_at)"
        " VALUES (:id, :o, :p, :k, :r, :m, :pv, :e, :b, :ip, :a, :pp, :period, 'open', :exp, :now)"),
        [{"id": h.id, "o": h.org_id, "p": h.project_id, "k": h.key_id, "r": h.request_id, "m": h.model_id,
          "pv": h.price_version, "e": h.endpoint, "b": h.backend_id, "ip": h.client_ip, "a": h.amount,
          "pp": h.promo_part, "period": period, "exp": h.expires_at, "now": now} for h in placed.values()])
    return [placed[o.id] if isinstance(o, Hold) else o for o in outcomes]


async def _card(conn: AsyncConnection, model_id: str, now: int) -> PriceCard:
    """The card in force for `model_id`. On PostgreSQL the group commit keeps the last one it read
    across batches (no round trip per batch): `nx_place_holds` checks that it is still the card in
    force, and if a newer one took effect the batch raises, the hint is dropped, and the next read
    is fresh."""
    facts = facts_of(conn) if is_postgres(conn) else None
    hint = facts.get(("card_in_force_hint", model_id)) if facts is not None else None
    if isinstance(hint, PriceCard) and hint.effective_at <= now:
        return hint
    card = await card_in_force(conn, model_id, now)
    if facts is not None:
        facts[("card_in_force_hint", model_id)] = card
    return card


async def _place_in_one_call(conn: AsyncConnection, outcomes: list[Hold | LedgerError], holds: list[Hold],
                             period: str, now: int) -> list[Hold | LedgerError]:
    """PostgreSQL: the whole plain batch in one call of `nx_place_holds` (schema.sql): the same
    checks and rows as `_reserve_budgets`, `_reserve_accounts` and the insert below, in one round
    trip instead of about six. Whatever it refuses raises, and the batch is rerun hold by hold."""
    try:
        result = await conn.execute(sql(
            "SELECT nx_place_holds(CAST(:ids AS text[]), CAST(:orgs AS text[]), CAST(:projects AS text[]),"
            " CAST(:keys AS text[]), CAST(:requests AS text[]), CAST(:models AS text[]),"
            " CAST(:versions AS integer[]), CAST(:endpoints AS text[]), CAST(:backends AS text[]),"
            " CAST(:ips AS text[]), CAST(:amounts AS bigint[]), CAST(:expires AS bigint[]), :period, :now)"),
            {"ids": [h.id for h in holds], "orgs": [h.org_id for h in holds],
             "projects": [h.project_id for h in holds], "keys": [h.key_id for h in holds],
             "requests": [h.request_id for h in holds], "models": [h.model_id for h in holds],
             "versions": [h.price_version for h in holds], "endpoints": [h.endpoint for h in holds],
             "backends": [h.backend_id for h in holds], "ips": [h.client_ip for h in holds],
             "amounts": [h.amount for h in holds], "expires": [h.expires_at for h in holds],
             "period": period, "now": now})
        promo = list(result.scalar_one())
    except Exception:
        facts = facts_of(conn) or {}
        for h in holds:  # a card that moved is read afresh by the next batch
            facts.pop(("card_in_force_hint", h.model_id), None)
        raise
    placed = {h.id: msgspec.structs.replace(h, promo_part=int(part)) for h, part in zip(holds, promo, strict=True)}
    return [placed[o.id] if isinstance(o, Hold) else o for o in outcomes]


async def _reserve_budgets(conn: AsyncConnection, holds: list[Hold], period: str) -> None:
    """Every key's and project's share of the batch in one upsert, rows in scope order (the global
    lock order for budget rows). Each row updates only where its budget still covers the sum."""
    pairs: dict[tuple[str, str], str] = {}
    sums: dict[tuple[str, str], int] = {}
    for h in holds:
        pairs[(h.key_id, h.project_id)] = h.org_id
        for scope in (h.key_id, h.project_id):
            sums[(h.org_id, scope)] = sums.get((h.org_id, scope), 0) + h.amount
    budget_of: dict[str, int | None] = {}
    for (key_id, project_id), org_id in pairs.items():  # one round trip per (key, project)
        budget_of[key_id], budget_of[project_id] = await budgets.budgets_of(conn, org_id, key_id, project_id)
    rows = sorted(sums.items(), key=lambda kv: kv[0][1])
    params: dict[str, object] = {"period": period}
    values = []
    for i, ((org_id, scope), amount) in enumerate(rows):
        budget = budget_of[scope]
        if budget is not None and amount > budget:
            raise BatchRefused("a budget cannot cover the batch")
        values.append(f"(:s{i}, :period, :o{i}, :a{i}, :b{i})")
        params.update({f"s{i}": scope, f"o{i}": org_id, f"a{i}": amount, f"b{i}": budget})
    result = await conn.execute(sql(
        "INSERT INTO budget_usage (scope_id, period, org_id, held, limit_nanos) VALUES " + ", ".join(values)
        + " ON CONFLICT (scope_id, period) DO UPDATE SET held = budget_usage.held + excluded.held,"
        " limit_nanos = excluded.limit_nanos WHERE excluded.limit_nanos IS NULL"
        " OR budget_usage.spent + budget_usage.held + excluded.held <= excluded.limit_nanos"), params)
    if result.rowcount != len(rows):
        raise BatchRefused("a budget cannot cover the batch")


async def _reserve_accounts(conn: AsyncConnection, holds: list[Hold]) -> dict[str, int]:
    """One organization's holds: promotional credit first, greedily in batch order, then the
    wallet; returns each hold's promotional part. Both rows are locked (promo, then wallet: the
    global account order) before either moves."""
    org_id = holds[0].org_id
    lock = " FOR UPDATE" if is_postgres(conn) else ""
    free = {str(kind): int(available) for kind, available in await conn.execute(sql(
        "SELECT kind, balance - held FROM ledger_accounts WHERE org_id = :o AND kind IN ('promo', 'wallet')"
        f" ORDER BY kind{lock}"), {"o": org_id})}
    promo_left = max(0, free.get("promo", 0))
    parts: dict[str, int] = {}
    for h in holds:
        take = min(h.amount, promo_left)
        promo_left -= take
        if take:
            parts[h.id] = take
    promo_total = sum(parts.values())
    rest = sum(h.amount for h in holds) - promo_total
    if rest > free.get("wallet", 0):
        raise BatchRefused("the wallet cannot cover the batch")
    for kind, amount in (("promo", promo_total), ("wallet", rest)):
        if amount:
            moved = await conn.execute(sql(
                "UPDATE ledger_accounts SET held = held + :x WHERE org_id = :o AND kind = :k"
                " AND balance - held >= :x"), {"x": amount, "o": org_id, "k": kind})
            if moved.rowcount != 1:
                raise BatchRefused(f"the {kind} cannot cover the batch")
    return parts
