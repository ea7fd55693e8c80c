"""Operator operations: grant credit, adjust with a reason, reverse, balance, statement, alerts.

Corrections never edit history: an adjustment is its own transaction against the organization's
`adjustments` account, and a reversal is a new transaction with every leg of the original negated.
Idempotency keys from clients are scoped by organization and operation, so the same key string from
two organizations (or for two operations) never returns the other's transaction.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.events import record_event
from core.events.catalog import WalletRecharged
from core.ledger.core import TxnMeta, ensure_accounts, get_transaction, post
from core.ledger.errors import InvalidAmount, MissingReason, NotFound, NotReversible
from core.ledger.model import BalanceView, Leg, StatementLine, StatementPage, TransactionView
from core.rows import columns, row_as, rows_as

__all__ = ["adjust", "balance", "grant", "reverse", "set_low_balance", "statement"]

MAX_NANOS = 10**18  # a trillion dollars: far beyond any real figure, far below BIGINT's limit


def _check_amount(amount: int, *, signed: bool = False) -> None:
    if (amount == 0 if signed else amount <= 0) or abs(amount) > MAX_NANOS:
        raise InvalidAmount("amount must be a non-zero whole number of nano-dollars"
                            f"{'' if signed else ' above 0'} and at most {MAX_NANOS}.", param="amount_nanos")


async def grant(conn: AsyncConnection, org_id: str, amount: int, *, idempotency_key: str, actor: str,
                reason: str = "", promotional: bool = False) -> TransactionView:
    """Add prepaid credit (from payments clearing) or promotional credit (a promotions expense)."""
    _check_amount(amount)
    legs = [Leg("promo", amount), Leg("promotions", -amount)] if promotional else \
        [Leg("wallet", amount), Leg("clearing", -amount)]
    kind = "promo_grant" if promotional else "grant"
    already = await _stored(conn, f"{kind}:{org_id}:{idempotency_key}")
    txn = await post(conn, org_id, legs, TxnMeta(kind=kind, reason=reason, actor=actor),
                     f"{kind}:{org_id}:{idempotency_key}")
    if not already:
        credited = next(e for e in txn.entries if e.account in ("wallet", "promo"))
        await record_event(conn, org_id, "wallet.recharged", WalletRecharged(
            wallet_id=credited.account_id, transaction_id=txn.id, amount_nanos=amount,
            balance_nanos=credited.balance_after, source="grant"))
    return txn


async def _stored(conn: AsyncConnection, idempotency_key: str) -> bool:
    return (await conn.execute(text("SELECT 1 FROM ledger_transactions WHERE idempotency_key = :k"),
                               {"k": idempotency_key})).first() is not None


async def adjust(conn: AsyncConnection, org_id: str, amount: int, *, reason: str, idempotency_key: str,
                 actor: str, account: Literal["wallet", "promo"] = "wallet") -> TransactionView:
    """Credit (amount > 0) or debit (amount < 0) a customer account; a reason is mandatory."""
    _check_amount(amount, signed=True)
    if not reason.strip():
        raise MissingReason("An adjustment needs a reason.", param="reason")
    return await post(conn, org_id, [Leg(account, amount), Leg("adjustments", -amount)],
                      TxnMeta(kind="adjustment", reason=reason, actor=actor),
                      f"adjustment:{org_id}:{idempotency_key}")


async def reverse(conn: AsyncConnection, org_id: str, txn_id: str, *, reason: str, idempotency_key: str,
                  actor: str) -> TransactionView:
    """Post the mirror image of a transaction. A reversed charge also leaves its budget spend."""
    original = await get_transaction(conn, org_id, txn_id)
    if original is None:
        raise NotFound(f"No ledger transaction {txn_id!r}.")
    if original.kind == "reversal":
        raise NotReversible("A reversal cannot be reversed; post a new transaction instead.")
    key = f"reversal:{org_id}:{idempotency_key}"
    prior = (await conn.execute(text("SELECT idempotency_key FROM ledger_transactions WHERE reverses = :t"),
                                {"t": txn_id})).first()
    if prior is not None and prior[0] != key:
        raise NotReversible(f"Transaction {txn_id} is already reversed.")
    r = row_as(_Scope, (await conn.execute(text(
        f"SELECT {columns(_Scope)} FROM ledger_transactions WHERE id = :t"), {"t": txn_id})).one())
    meta = TxnMeta(kind="reversal", reason=reason, actor=actor, reverses=txn_id,
                   request_id=original.request_id, project_id=r.project_id, key_id=r.key_id, period=r.period,
                   model_id=original.model_id, price_version=original.price_version)
    legs = [Leg(e.account, -e.amount) for e in original.entries]  # type: ignore[arg-type]
    if prior is None and original.kind == "charge" and r.period is not None:
        for scope in sorted(s for s in (r.project_id, r.key_id) if s):
            await conn.execute(text(
                "UPDATE budget_usage SET spent = spent - :a WHERE scope_id = :s AND period = :p"),
                {"a": original.amount, "s": scope, "p": r.period})
    return await post(conn, org_id, legs, meta, key)


class _Scope(msgspec.Struct, frozen=True):
    """The budget scopes a transaction was charged under."""

    project_id: str | None
    key_id: str | None
    period: str | None


async def balance(conn: AsyncConnection, org_id: str) -> BalanceView:
    await ensure_accounts(conn, org_id)
    rows = {a.kind: a for a in rows_as(_Account, await conn.execute(text(
        f"SELECT {columns(_Account)} FROM ledger_accounts"
        " WHERE org_id = :o AND kind IN ('wallet', 'promo', 'receivable')"), {"o": org_id}))}
    wallet, promo = rows["wallet"], rows["promo"]
    held = wallet.held + promo.held
    return BalanceView(organization=org_id, wallet_nanos=wallet.balance, promo_nanos=promo.balance, held_nanos=held,
                       available_nanos=wallet.balance + promo.balance - held,
                       low_balance_nanos=wallet.low_balance_nanos,
                       owed_nanos=-rows["receivable"].balance if "receivable" in rows else 0)


class _Account(msgspec.Struct, frozen=True):
    kind: str
    balance: int
    held: int
    low_balance_nanos: int | None


async def set_low_balance(conn: AsyncConnection, org_id: str, low_balance_nanos: int | None) -> BalanceView:
    """Fire `usage.threshold_reached` (once a month) when wallet + promo falls below this mark."""
    if low_balance_nanos is not None and not 0 <= low_balance_nanos <= MAX_NANOS:
        raise InvalidAmount("low_balance_nanos must be between 0 and 10^18.",
                            param="low_balance_nanos")
    await ensure_accounts(conn, org_id)
    await conn.execute(text(
        "UPDATE ledger_accounts SET low_balance_nanos = :l WHERE org_id = :o AND kind = 'wallet'"),
        {"l": low_balance_nanos, "o": org_id})
    return await balance(conn, org_id)


async def statement(conn: AsyncConnection, org_id: str,
                    account: Literal["wallet", "promo", "receivable"] = "wallet", *,
                    after: int = 0, limit: int = 100, since_ms: int | None = None,
                    until_ms: int | None = None) -> StatementPage:
    """Every entry of a customer account (or of what it owes: `receivable`) in posting order, each
    with the balance it produced."""
    await ensure_accounts(conn, org_id)
    limit = max(1, min(limit, 1000))
    select = columns(StatementLine, "t", seq="e.account_seq", txn_id="t.id", amount="e.amount",
                     balance_after="e.balance_after")
    rows = list(await conn.execute(text(
        f"SELECT {select} FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id"
        " JOIN ledger_transactions t ON t.id = e.txn_id WHERE a.org_id = :o AND a.kind = :k"
        " AND e.account_seq > :after AND e.created_at >= :since AND e.created_at < :until"
        " ORDER BY e.account_seq LIMIT :lim"),
        {"o": org_id, "k": account, "after": after, "since": since_ms or 0, "until": until_ms or 2**62,
         "lim": limit + 1}))
    lines = rows_as(StatementLine, rows[:limit])
    opening = lines[0].balance_after - lines[0].amount if lines else 0
    if not lines:
        r = (await conn.execute(text(
            "SELECT e.balance_after FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id"
            " WHERE a.org_id = :o AND a.kind = :k AND e.account_seq <= :after"
            " ORDER BY e.account_seq DESC LIMIT 1"), {"o": org_id, "k": account, "after": after})).first()
        opening = 0 if r is None else int(r[0])
    has_more = len(rows) > limit
    return StatementPage(organization=org_id, account=account, opening_balance=opening,
                         closing_balance=lines[-1].balance_after if lines else opening, data=lines,
                         has_more=has_more, next_after=lines[-1].seq if has_more else None)
