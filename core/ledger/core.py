"""Double-entry posting: accounts, balanced transactions, idempotency.

How one transaction is written (the database checks every step, see the ledger section of
schema.sql): each leg updates its account's cached balance (customer debits conditionally:
`WHERE balance - held >= amount`, the measured-correct pattern under READ COMMITTED) and bumps the
account's `entry_seq`; the entry then records the sequence and balance it produced; finally the
transaction row is inserted, which seals the entries and makes a trigger verify they sum to zero.

Idempotency: every transaction carries a unique `idempotency_key` and a fingerprint of its fields.
Resubmitted with the same fields it returns the original; with other fields it is refused (422).
A duplicate racing the original on PostgreSQL loses on the unique index and gets 409, which the
caller retries into the stored result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.ids import new_id
from core.ledger.errors import InsufficientFunds, KeyInUse, KeyReused
from core.ledger.model import CUSTOMER_KINDS, KIND_ORDER, EntryView, Leg, TransactionView
from core.rawsql import sql
from core.rows import columns, row_as, rows_as

__all__ = ["TXN_INSERT", "TxnMeta", "ensure_accounts", "get_transaction", "is_postgres", "post", "release_held",
           "release_out"]


def is_postgres(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


async def ensure_accounts(conn: AsyncConnection, org_id: str) -> None:
    """Create the organization's accounts if missing (idempotent, safe under concurrency)."""
    now = now_ms()
    for kind in KIND_ORDER:
        await conn.execute(sql(
            "INSERT INTO ledger_accounts (id, org_id, kind, customer, created_at)"
            " VALUES (:id, :o, :k, :c, :now) ON CONFLICT (org_id, kind) DO NOTHING"),
            {"id": new_id("acct"), "o": org_id, "k": kind, "c": int(kind in CUSTOMER_KINDS), "now": now})


class TxnMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Descriptive fields of a transaction; all of them are part of its fingerprint."""

    kind: str
    reason: str = ""
    actor: str
    reverses: str | None = None
    request_id: str | None = None
    project_id: str | None = None
    key_id: str | None = None
    period: str | None = None
    model_id: str | None = None
    price_version: int | None = None


def _fingerprint(org_id: str, legs: Sequence[Leg], meta: TxnMeta) -> str:
    shape = [org_id, sorted((leg.kind, leg.amount) for leg in legs if leg.amount),
             msgspec.structs.replace(meta, actor="")]
    return hashlib.sha256(msgspec.json.encode(shape)).hexdigest()


async def release_held(conn: AsyncConnection, org_id: str, kind: str, amount: int) -> None:
    """Return `amount` of an account's held reservation to its available balance."""
    if amount:
        await conn.execute(sql(
            "UPDATE ledger_accounts SET held = held - :a WHERE org_id = :o AND kind = :k"),
            {"a": amount, "o": org_id, "k": kind})


def release_out(org_id: str, kind: str, amount: int) -> dict[str, object]:
    """`release_held` as an item of a `legs_out` list: amount 0, only `r` given back."""
    return {"t": "", "s": 0, "o": org_id, "k": kind, "a": 0, "r": amount, "g": False, "now": 0}


class _Applied(msgspec.Struct, frozen=True):
    id: str
    entry_seq: int
    balance: int


async def _apply(conn: AsyncConnection, org_id: str, leg: Leg) -> _Applied | None:
    """Move one leg's balance; None when a customer account cannot cover the debit."""
    # The state after the update must keep balance - held >= 0 (the CHECK would refuse it anyway;
    # the WHERE turns that into a clean "no row" instead of an aborted transaction).
    guard = " AND balance + :a - held + :r >= 0" if leg.kind in CUSTOMER_KINDS and leg.amount < 0 else ""
    row = (await conn.execute(sql(
        "UPDATE ledger_accounts SET balance = balance + :a, held = held - :r, entry_seq = entry_seq + 1"
        f" WHERE org_id = :o AND kind = :k{guard} RETURNING id, entry_seq, balance"),
        {"a": leg.amount, "r": leg.release, "o": org_id, "k": leg.kind})).first()
    return None if row is None else row_as(_Applied, row)


TXN_INSERT = (
    "INSERT INTO ledger_transactions (id, org_id, kind, idempotency_key, fingerprint, amount, reverses,"
    " request_id, project_id, key_id, period, model_id, price_version, reason, actor, created_at)"
    " VALUES (:id, :o, :kind, :k, :f, :amount, :rev, :req, :proj, :key, :period, :model, :pv, :reason,"
    " :actor, :now)")


async def post(conn: AsyncConnection, org_id: str, legs: Sequence[Leg], meta: TxnMeta,
               idempotency_key: str, txn_id: str | None = None, *, first_use: bool = False,
               sealing: list[dict[str, object]] | None = None,
               legs_out: list[dict[str, object]] | None = None) -> TransactionView:
    """Write one balanced transaction in the caller's database transaction; see the module doc.

    Raises `insufficient_quota` when a customer account would go below its held amount; the caller
    must then roll back (write_tx does), since earlier legs may already have moved.
    `sealing`: the transaction row is not inserted but appended here, for the caller to insert
    with others in one statement (`TXN_INSERT`, settle_batch.py) before it commits; a reused key
    then fails that statement instead of answering `KeyInUse`.
    `legs_out` (PostgreSQL): each leg's account move and entry are not run but appended here as
    arguments of `nx_ledger_leg` (schema.sql), and a leg that only gives back a reservation (amount
    0) as such an item with `a` 0, for the caller to run every leg of a batch in one call
    (`nx_settle_batch`); a leg that cannot be paid then fails that call. The returned view has no
    entries.
    """
    if sum(leg.amount for leg in legs) != 0 or sum(1 for leg in legs if leg.amount) < 2:
        raise ValueError("a ledger transaction needs at least two non-zero legs summing to zero")
    fingerprint = _fingerprint(org_id, legs, meta)
    # `first_use`: the caller has already made this key's first use certain (a settlement's key
    # names a hold it has just claimed), so there is no earlier transaction to look up; the
    # unique index still refuses a duplicate below.
    existing = None if first_use else (await conn.execute(sql(
        "SELECT id, fingerprint FROM ledger_transactions WHERE idempotency_key = :k"),
        {"k": idempotency_key})).first()
    if existing is not None:
        if existing[1] != fingerprint:
            raise KeyReused("This idempotency key was already used for a different ledger transaction.")
        found = await get_transaction(conn, org_id, str(existing[0]))
        assert found is not None, "an idempotency key is never reused across organizations"
        return found
    txn_id, now = txn_id or new_id("txn"), now_ms()
    entries: list[EntryView] = []
    for seq, leg in enumerate(sorted(legs, key=lambda g: KIND_ORDER[g.kind])):
        if leg.amount == 0:
            if legs_out is None:
                await release_held(conn, org_id, leg.kind, leg.release)
            elif leg.release:  # a release only: the caller's batch gives it back in leg order
                legs_out.append(release_out(org_id, leg.kind, leg.release))
            continue
        if legs_out is not None:
            legs_out.append({"t": txn_id, "s": seq, "o": org_id, "k": leg.kind, "a": leg.amount,
                             "r": leg.release, "g": leg.kind in CUSTOMER_KINDS and leg.amount < 0, "now": now})
            continue
        applied = await _apply(conn, org_id, leg)
        if applied is None and (leg.kind not in CUSTOMER_KINDS or not await _has_accounts(conn, org_id)):
            # First money movement of this organization, or the first on an account kind added
            # since its accounts were made (a platform account's update has no guard, so a miss
            # means the row is missing): create them (only on a miss: the hot path does not pay).
            await ensure_accounts(conn, org_id)
            applied = await _apply(conn, org_id, leg)
        if applied is None:
            raise InsufficientFunds(f"The {leg.kind} balance cannot cover {-leg.amount} nano-dollars.")
        account_id, account_seq, balance_after = applied.id, applied.entry_seq, applied.balance
        await conn.execute(sql(
            "INSERT INTO ledger_entries (txn_id, seq, account_id, amount, account_seq, balance_after,"
            " created_at) VALUES (:t, :s, :a, :amt, :aseq, :bal, :now)"),
            {"t": txn_id, "s": seq, "a": account_id, "amt": leg.amount, "aseq": account_seq,
             "bal": balance_after, "now": now})
        entries.append(EntryView(account_id=account_id, account=leg.kind, amount=leg.amount,
                                 balance_after=balance_after))
    row: dict[str, object] = {
        "id": txn_id, "o": org_id, "kind": meta.kind, "k": idempotency_key, "f": fingerprint,
        "amount": sum(leg.amount for leg in legs if leg.amount > 0), "rev": meta.reverses,
        "req": meta.request_id, "proj": meta.project_id, "key": meta.key_id, "period": meta.period,
        "model": meta.model_id, "pv": meta.price_version, "reason": meta.reason, "actor": meta.actor,
        "now": now}
    if sealing is not None:
        sealing.append(row)
    else:
        inserted = await conn.execute(sql(TXN_INSERT + " ON CONFLICT (idempotency_key) DO NOTHING"), row)
        if inserted.rowcount != 1:
            raise KeyInUse("A transaction with this idempotency key is being written; retry to get its result.")
    return TransactionView(
        id=txn_id, organization=org_id, kind=meta.kind, amount=sum(g.amount for g in legs if g.amount > 0),
        reason=meta.reason, reverses=meta.reverses, request_id=meta.request_id, model_id=meta.model_id,
        price_version=meta.price_version, actor=meta.actor, created_at=now,
        entries=entries)


async def _has_accounts(conn: AsyncConnection, org_id: str) -> bool:
    row = (await conn.execute(sql("SELECT 1 FROM ledger_accounts WHERE org_id = :o AND kind = 'wallet'"),
                              {"o": org_id})).first()
    return row is not None


async def _entries(conn: AsyncConnection, txn_id: str) -> list[EntryView]:
    rows = await conn.execute(sql(
        f"SELECT {columns(EntryView, 'e', account='a.kind')} FROM ledger_entries e"
        " JOIN ledger_accounts a ON a.id = e.account_id WHERE e.txn_id = :t ORDER BY e.seq"), {"t": txn_id})
    return rows_as(EntryView, rows)


async def get_transaction(conn: AsyncConnection, org_id: str, txn_id: str) -> TransactionView | None:
    """One transaction of this organization; another tenant's id behaves like a missing one."""
    r = (await conn.execute(sql(
        f"SELECT {columns(_TxnRow, organization='org_id')} FROM ledger_transactions WHERE id = :t AND org_id = :o"),
        {"t": txn_id, "o": org_id})).first()
    if r is None:
        return None
    row = row_as(_TxnRow, r)
    return TransactionView(**msgspec.structs.asdict(row), entries=await _entries(conn, row.id))


class _TxnRow(msgspec.Struct, frozen=True, kw_only=True):
    """The columns of a TransactionView (its entries are read separately)."""

    id: str
    organization: str
    kind: str
    amount: int
    reason: str
    reverses: str | None
    request_id: str | None
    model_id: str | None
    price_version: int | None
    actor: str
    created_at: int
