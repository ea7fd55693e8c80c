"""Settlement: post a request's actual cost against its hold, release the rest, write its usage.

One database transaction per call, however many holds it settles (`settle_many` is the group
commit the adapter uses so the hot path is not capped at one commit per request). Per hold:
- the charge is `request_cost(actual tokens)` at the hold's price card version;
- a hold settles at most once (`hold_already_resolved`; the refusal affects only that item of a
  batch);
- promotional credit pays first, then the wallet, up to the held amount; revenue receives the
  whole charge; the held amounts are released in the same UPDATE that debits the balance;
- a charge above the held amount (a backend that produced more than it was asked for, or a
  tokenizer that counts differently than the estimate) is never lost: the hold's amount is taken
  as above and the rest is debited to the organization's `receivable` account (what it owes;
  a negative balance there), in the same balanced transaction. The usage record and the budget
  spend carry the whole charge;
- the usage record, the budget spend, threshold crossings and the `request.completed` event are
  written in the same transaction as the charge;
- `late=True` (the adapter's commit and the settler, proxy_plugins/adapter/settler.py) also
  settles a hold that expired while its request was being served, or after its adapter died:
  served work is never free. Its reservation is gone, so the charge is taken from what promotional
  credit and the wallet have available now, the rest booked to the receivable as above, at the
  hold's price card; the hold's `charged` stays 0 (its reservation paid nothing), the usage record
  carries the whole charge. Still at most once: the gate is `status = 'expired'` -> 'settled'.

Locks are taken hold rows -> budget rows (sorted) -> accounts (by organization, then KIND_ORDER),
the same global order as holds and grants, so concurrent batches cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.events import record_event
from core.events.catalog import RequestCompleted
from core.ids import new_id
from core.ledger import budgets
from core.ledger.core import TxnMeta, is_postgres, post, release_held
from core.ledger.errors import HoldResolved, InvalidAmount, LedgerError, NotFound
from core.ledger.holds import load_hold
from core.ledger.model import Hold, Leg, Settlement, Usage
from core.ledger.pricing import PriceCard, card_version, charge_for
from core.rawsql import sql
from core.rows import row_as

__all__ = ["settle_hold", "settle_many"]


class _Claimed(msgspec.Struct, frozen=True):
    index: int
    hold: Hold
    usage: Usage
    cost: int
    txn_id: str | None
    card_id: str
    late: bool = False
    """The hold had expired: its reservation was already given back (see the module docstring)."""

    @property
    def reserved(self) -> int:
        return 0 if self.late else self.hold.amount

    @property
    def model_id(self) -> str:
        """The model charged for: the routed target that answered, else the hold's."""
        return self.usage.model_id if self.usage.price_version is not None and self.usage.model_id \
            else self.hold.model_id

    @property
    def price_version(self) -> int:
        return self.usage.price_version if self.usage.price_version is not None and self.usage.model_id \
            else self.hold.price_version


async def settle_hold(conn: AsyncConnection, ref: str, usage: Usage, *, now: int | None = None) -> Settlement:
    """Settle one hold (by `hold_...` or `req_...` id); raises the item's LedgerError if refused."""
    result = (await settle_many(conn, [(ref, usage)], now=now))[0]
    if isinstance(result, LedgerError):
        raise result
    return result


async def settle_many(conn: AsyncConnection, items: Sequence[tuple[str, Usage]], *,
                      now: int | None = None, late: bool = False) -> list[Settlement | LedgerError]:
    """Settle many holds in one transaction; results are in the order of `items`. `late`: expired
    holds are settled too (served work; see the module docstring)."""
    now = now_ms() if now is None else now
    results: list[Settlement | LedgerError | None] = [None] * len(items)
    claimed: list[_Claimed] = []
    cards: dict[tuple[str, int], PriceCard] = {}
    for index in sorted(range(len(items)), key=lambda i: items[i][0]):
        ref, usage = items[index]
        try:
            claimed.append(await _claim(conn, index, ref, usage, cards, now, late))
        except LedgerError as exc:
            results[index] = exc
    await _budgets(conn, claimed, now)
    receivables: dict[str, int] = {}
    for org_id in sorted({c.hold.org_id for c in claimed}):
        receivables.update(await _post_org(conn, org_id, [c for c in claimed if c.hold.org_id == org_id], now))
    for c in claimed:
        covered = min(c.cost, c.reserved)
        results[c.index] = Settlement(hold_id=c.hold.id, request_id=c.hold.request_id, charged=c.cost,
                                      released=c.reserved - covered, receivable=receivables.get(c.hold.id, 0),
                                      txn_id=c.txn_id, model_id=c.model_id, price_version=c.price_version)
    return [r for r in results if r is not None]


async def _claim(conn: AsyncConnection, index: int, ref: str, usage: Usage,
                 cards: dict[tuple[str, int], PriceCard], now: int, late: bool) -> _Claimed:
    if usage.cached_tokens > usage.input_tokens:
        raise InvalidAmount("cached_tokens cannot exceed input_tokens",
                            param="cached_tokens")
    hold = await load_hold(conn, ref)
    if hold is None:
        raise NotFound(f"No hold {ref!r}.")
    expired = late and hold.status == "expired"
    if hold.status != "open" and not expired:
        raise HoldResolved(f"Hold {hold.id} is already {hold.status}.")
    card_key = (hold.model_id, hold.price_version)
    if usage.model_id is not None and usage.price_version is not None:
        card_key = (usage.model_id, usage.price_version)  # the routed target that answered
    if card_key not in cards:
        cards[card_key] = await card_version(conn, *card_key)
    cost = charge_for(cards[card_key], usage.input_tokens, usage.cached_tokens, usage.output_tokens)
    txn_id = new_id("txn") if cost else None
    # The conditional UPDATE is the at-most-once gate: a racing settle or expiry sees no open row.
    # `charged` is what the hold paid; anything above it is owed (see the module docstring).
    won = await conn.execute(sql(
        "UPDATE ledger_holds SET status = 'settled', charged = :c, txn_id = :t, resolved_at = :now"
        " WHERE id = :id AND status = :was"),
        {"c": 0 if expired else min(cost, hold.amount), "t": txn_id, "now": now, "id": hold.id,
         "was": hold.status})
    if won.rowcount != 1:
        raise HoldResolved(f"Hold {hold.id} was resolved concurrently.")
    return _Claimed(index, hold, usage, cost, txn_id, cards[card_key].id, expired)


def budget_shares(claimed: list[_Claimed]) -> list[tuple[tuple[str, str], list[_Claimed]]]:
    """Each (key or project, period) with the settlements that move its counter, in scope order
    (the global lock order of budget rows)."""
    scopes: dict[tuple[str, str], list[_Claimed]] = {}
    for c in claimed:
        for scope in (c.hold.key_id, c.hold.project_id):
            scopes.setdefault((scope, c.hold.period), []).append(c)
    return sorted(scopes.items(), key=lambda kv: kv[0])


async def budget_crossings(conn: AsyncConnection, scope: str, period: str, group: list[_Claimed], after: int,
                           limit: int | None, now: int) -> None:
    """The budget percentages `group`'s charges moved the counter across (spend `after` them)."""
    last = max((c for c in group if c.txn_id), key=lambda c: c.hold.id, default=None)
    if last is not None and last.txn_id is not None:
        kind: budgets.ScopeKind = "key" if scope == last.hold.key_id else "project"
        await budgets.record_budget_crossings(conn, last.hold.org_id, kind, scope, period,
                                              after - sum(c.cost for c in group), after, limit, last.txn_id,
                                              last.hold.project_id, now)


async def _budgets(conn: AsyncConnection, claimed: list[_Claimed], now: int) -> None:
    for (scope, period), group in budget_shares(claimed):
        after, limit = await budgets.consume(conn, scope, period, sum(c.cost for c in group),
                                             sum(c.reserved for c in group))
        await budget_crossings(conn, scope, period, group, after, limit, now)


async def _post_org(conn: AsyncConnection, org_id: str, group: list[_Claimed], now: int) -> dict[str, int]:
    """Post the group's charges; returns each hold's part booked to the receivable."""
    charged = 0
    last_txn: str | None = None
    owed: dict[str, int] = {}
    for c in sorted(group, key=lambda c: c.hold.id):
        h = c.hold
        if c.late:
            legs = await _late_legs(conn, org_id, c.cost)
            covered = -sum(leg.amount for leg in legs)
        else:
            covered = min(c.cost, h.amount)
            promo_charge = min(covered, h.promo_part)
            legs = [Leg("promo", -promo_charge, h.promo_part), Leg("wallet", promo_charge - covered,
                                                                   h.amount - h.promo_part)]
        owed[h.id] = c.cost - covered
        if c.txn_id is None:
            for leg in legs:
                await release_held(conn, org_id, leg.kind, leg.release)
        else:
            meta = TxnMeta(kind="charge", actor="system", request_id=h.request_id,
                           project_id=h.project_id, key_id=h.key_id, period=h.period, model_id=c.model_id,
                           price_version=c.price_version)
            if c.cost > covered:
                legs.append(Leg("receivable", covered - c.cost))
            await post(conn, org_id, [*legs, Leg("revenue", c.cost)], meta, f"charge:{h.id}", txn_id=c.txn_id,
                       first_use=True)
            charged, last_txn = charged + covered, c.txn_id
        await _usage_record(conn, c, now)
    await wallet_crossing(conn, org_id, charged, last_txn, now)
    return owed


async def wallet_crossing(conn: AsyncConnection, org_id: str, charged: int, last_txn: str | None,
                          now: int) -> None:
    """After an organization's charges of one batch (`charged` in all, the last `last_txn`): record
    a low-balance crossing if the wallet went below its threshold (budgets.record_wallet_crossing)."""
    if last_txn is None:
        return
    w = row_as(Wallet, (await conn.execute(sql(
        "SELECT SUM(balance), MAX(CASE WHEN kind = 'wallet' THEN low_balance_nanos END),"
        " MAX(CASE WHEN kind = 'wallet' THEN id END) FROM ledger_accounts"
        " WHERE org_id = :o AND kind IN ('wallet', 'promo')"), {"o": org_id})).one())
    await low_balance_crossing(conn, org_id, w, charged, last_txn, now)


async def low_balance_crossing(conn: AsyncConnection, org_id: str, w: Wallet, charged: int, last_txn: str,
                               now: int) -> None:
    """The low-balance crossing, if any, of charges of `charged` that left the wallet at `w`."""
    await budgets.record_wallet_crossing(conn, org_id, w.wallet_id, budgets.period_of(now),
                                         w.balance + charged, w.balance, w.low_balance_nanos, last_txn, now)


async def _late_legs(conn: AsyncConnection, org_id: str, cost: int) -> list[Leg]:
    """An expired hold's charge: promotional credit first, then the wallet, each up to what is
    available now (balance less other holds' reservations); the caller books the rest as owed."""
    lock = " FOR UPDATE" if is_postgres(conn) else ""
    available = {str(kind): max(0, int(free)) for kind, free in await conn.execute(sql(
        f"SELECT kind, balance - held FROM ledger_accounts WHERE org_id = :o AND kind IN ('promo', 'wallet')"
        f" ORDER BY kind{lock}"), {"o": org_id})}
    promo = min(cost, available.get("promo", 0))
    wallet = min(cost - promo, available.get("wallet", 0))
    return [Leg("promo", -promo), Leg("wallet", -wallet)]


class Wallet(msgspec.Struct, frozen=True):
    """Wallet plus promotional credit after a batch's charges, for the low-balance threshold."""

    balance: int
    low_balance_nanos: int | None
    wallet_id: str


USAGE_INSERT = (
    "INSERT INTO usage_records (request_id, org_id, project_id, key_id, model_id, backend_id, endpoint,"
    " status, input_tokens, cached_tokens, output_tokens, cost_nanos, price_version, txn_id, hold_id,"
    " ttft_ms, latency_ms, cache_status, client_ip, created_at, route_attempts) VALUES (:r, :o, :p, :k, :m,"
    " :b, :e, :s, :it, :ct, :ot, :cost, :pv, :t, :h, :ttft, :lat, :cache, :ip, :now, :ra)")


def usage_row(c: _Claimed, now: int) -> dict[str, object]:
    h, u = c.hold, c.usage
    return {"r": h.request_id, "o": h.org_id, "p": h.project_id, "k": h.key_id, "m": c.model_id,
            "b": u.backend_id or h.backend_id, "e": h.endpoint, "ra": u.route_attempts, "s": u.status,
            "it": u.input_tokens, "ct": u.cached_tokens, "ot": u.output_tokens,
            "cost": c.cost, "pv": c.price_version, "t": c.txn_id, "h": h.id, "ttft": u.ttft_ms,
            "lat": u.latency_ms, "cache": u.cache_status, "ip": h.client_ip, "now": now}


async def _usage_record(conn: AsyncConnection, c: _Claimed, now: int) -> None:
    await conn.execute(sql(USAGE_INSERT), usage_row(c, now))
    await completed_event(conn, c, now)


async def completed_event(conn: AsyncConnection, c: _Claimed, now: int) -> None:
    """`request.completed` (opt-in: written only when an endpoint of the organization wants it)."""
    h, u = c.hold, c.usage
    if h.endpoint in ("responses", "chat", "embeddings"):
        await record_event(conn, h.org_id, "request.completed", RequestCompleted(
            request_id=h.request_id, endpoint=h.endpoint,  # type: ignore[arg-type]
            model=c.model_id, key_id=h.key_id, project_id=h.project_id, status_code=u.status,
            input_tokens=u.input_tokens, cached_input_tokens=u.cached_tokens, output_tokens=u.output_tokens,
            cost_nanos=c.cost, price_card_id=c.card_id,
            latency_ms=u.latency_ms or 0, completed_at=now // 1000), project_id=h.project_id)
