"""Finance exports: usage records and ledger statements for a period, as CSV or JSON Lines.

Streamed: one read transaction per export (a consistent snapshot on both databases: WAL on
SQLite, REPEATABLE READ on PostgreSQL), rows pulled through a server-side cursor in batches of
`BATCH` and encoded batch by batch, so memory stays flat however long the range is. The snapshot
also makes the totals (`usage_totals`, `ledger_totals`) describe exactly the streamed rows.

Formats: CSV (RFC 4180, a header line, nothing else, so any CSV reader takes it) and JSON Lines
(one object per line; the last line is the `export.totals` object). Money appears twice per row:
integer nano-dollars (`*_nanos`, authoritative) and the exact decimal USD string (`*_usd`).

Reconciliation to the nano-dollar (`usage_totals`): the usage records of the period, the ledger
charge transactions they name, and the debits those transactions made on the customer accounts
(wallet + promotional credit) are summed independently; `reconciled` is true when all three agree.
Records are matched to their charge by transaction id, not by timestamp, so a charge stamped a
millisecond after its usage record on the other side of a period boundary still matches.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_plane.usage.export_model import LEDGER_COLUMNS, USAGE_COLUMNS, AccountTotals, LedgerTotals, UsageTotals
from core.errors import ApiError
from core.money import format_usd
from core.rows import row_as

__all__ = [
    "BATCH",
    "Account",
    "Format",
    "LedgerTotals",
    "UsageTotals",
    "export_ledger",
    "export_usage",
    "ledger_totals",
    "parse_time",
    "period",
    "snapshot",
    "streamed",
    "usage_totals",
]

BATCH = 2000
Format = Literal["csv", "jsonl"]
Account = Literal["wallet", "promo", "all"]

_USAGE_SQL = (
    "SELECT request_id, created_at, org_id, project_id, key_id, model_id, backend_id, endpoint, status,"
    " input_tokens, cached_tokens, output_tokens, cost_nanos, price_version, txn_id, ttft_ms, latency_ms,"
    " cache_status, client_ip FROM usage_records WHERE org_id = :o AND created_at >= :lo AND created_at < :hi"
    " ORDER BY created_at, request_id")
_LEDGER_SQL = (
    "SELECT a.kind, e.account_seq, e.created_at, t.id, t.kind, e.amount, e.balance_after, t.request_id,"
    " t.reverses, t.reason, t.actor FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id"
    " JOIN ledger_transactions t ON t.id = e.txn_id WHERE a.org_id = :o AND a.kind IN :kinds"
    " AND e.created_at >= :lo AND e.created_at < :hi ORDER BY a.kind DESC, e.account_seq")


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str, name: str) -> int:
    """Unix ms from unix seconds, a UTC date `2025-01-31` or an ISO 8601 date-time (UTC if no offset)."""
    text_value = value.strip()
    try:
        if text_value.isdigit() and len(text_value) <= 11:
            return int(text_value) * 1000
        moment = datetime.fromisoformat(text_value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError("invalid_request_error", f"'{name}' must be unix seconds, a date (2025-01-31) or "
                       "an ISO 8601 date-time.", param=name) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def period(start: str | None, end: str | None, now: int) -> tuple[int, int]:
    """[from, to) in unix ms; `from` is required, `to` defaults to now."""
    if not start:
        raise ApiError("missing_required_parameter", "'from' is required.", param="from")
    lo = parse_time(start, "from")
    hi = parse_time(end, "to") if end else now
    if hi <= lo:
        raise ApiError("invalid_request_error", "'to' must be after 'from'.", param="to")
    return lo, hi


@asynccontextmanager
async def snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection inside a read snapshot transaction (REPEATABLE READ on PostgreSQL)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


async def streamed(engine: AsyncEngine,
                   produce: Callable[[AsyncConnection], AsyncIterator[bytes]]) -> AsyncIterator[bytes]:
    """Run `produce` inside its own snapshot; the connection is returned when the stream ends or the
    client goes away (the generator is closed)."""
    async with snapshot(engine) as conn:
        async for chunk in produce(conn):
            if chunk:
                yield chunk


def _usage_row(r: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(("request_id", "created_at_ms", "org_id", "project_id", "key_id", "model", "backend_id",
                    "endpoint", "status", "input_tokens", "cached_tokens", "output_tokens", "cost_nanos",
                    "price_version", "txn_id", "ttft_ms", "latency_ms", "cache_status", "client_ip"), r,
                   strict=True))
    row["created_at"] = iso(int(row["created_at_ms"]))
    row["cost_usd"] = format_usd(int(row["cost_nanos"]), 9)
    return row


def _ledger_row(r: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(("account", "seq", "created_at_ms", "txn_id", "kind", "amount_nanos",
                    "balance_after_nanos", "request_id", "reverses", "reason", "actor"), r, strict=True))
    row["created_at"] = iso(int(row["created_at_ms"]))
    row["amount_usd"] = format_usd(int(row["amount_nanos"]), 9)
    row["balance_after_usd"] = format_usd(int(row["balance_after_nanos"]), 9)
    return row


def _encoder(fmt: Format, columns: tuple[str, ...], kind: str) -> Callable[[list[dict[str, Any]]], bytes]:
    def as_csv(rows: list[dict[str, Any]]) -> bytes:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerows([["" if row[c] is None else row[c] for c in columns] for row in rows])
        return buf.getvalue().encode()

    def as_jsonl(rows: list[dict[str, Any]]) -> bytes:
        return b"".join(msgspec.json.encode({"object": kind, **{c: row[c] for c in columns}}) + b"\n"
                        for row in rows)

    return as_csv if fmt == "csv" else as_jsonl


def _header(fmt: Format, columns: tuple[str, ...]) -> bytes:
    if fmt != "csv":
        return b""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(columns)
    return buf.getvalue().encode()


async def export_usage(conn: AsyncConnection, org_id: str, lo: int, hi: int, fmt: Format, *,
                       batch: int = BATCH) -> AsyncIterator[bytes]:
    """Usage records of [lo, hi) (unix ms) in (created_at, request_id) order, one chunk per batch."""
    yield _header(fmt, USAGE_COLUMNS)
    encode = _encoder(fmt, USAGE_COLUMNS, "usage.record")
    result = await conn.stream(text(_USAGE_SQL), {"o": org_id, "lo": lo, "hi": hi})
    async for part in result.partitions(batch):
        yield encode([_usage_row(r) for r in part])
    if fmt == "jsonl":
        yield msgspec.json.encode(await usage_totals(conn, org_id, lo, hi)) + b"\n"


async def export_ledger(conn: AsyncConnection, org_id: str, lo: int, hi: int, fmt: Format,
                        account: Account = "all", *, batch: int = BATCH) -> AsyncIterator[bytes]:
    """Entries of the customer accounts in [lo, hi): wallet first, then promotional credit, each in
    posting order with the balance it produced (the running balance)."""
    yield _header(fmt, LEDGER_COLUMNS)
    encode = _encoder(fmt, LEDGER_COLUMNS, "ledger.entry")
    kinds = ["wallet", "promo"] if account == "all" else [account]
    statement = text(_LEDGER_SQL).bindparams(bindparam("kinds", expanding=True))
    result = await conn.stream(statement, {"o": org_id, "kinds": kinds, "lo": lo, "hi": hi})
    async for part in result.partitions(batch):
        yield encode([_ledger_row(r) for r in part])
    if fmt == "jsonl":
        yield msgspec.json.encode(await ledger_totals(conn, org_id, lo, hi, account)) + b"\n"


async def usage_totals(conn: AsyncConnection, org_id: str, lo: int, hi: int) -> UsageTotals:
    p = {"o": org_id, "lo": lo, "hi": hi}
    window = "FROM usage_records u WHERE u.org_id = :o AND u.created_at >= :lo AND u.created_at < :hi"
    r = row_as(_UsageSums, (await conn.execute(text(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0),"
        " COALESCE(SUM(input_tokens), 0), COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(output_tokens), 0),"
        f" COALESCE(SUM(cost_nanos), 0) {window}"), p)).one())
    charged = row_as(_ChargeSums, (await conn.execute(text(
        "SELECT COUNT(*), COALESCE(SUM(t.amount), 0) FROM ledger_transactions t"
        " WHERE t.kind = 'charge' AND t.org_id = :o"
        f" AND t.id IN (SELECT u.txn_id {window} AND u.txn_id IS NOT NULL)"), p)).one())
    debits = (await conn.execute(text(
        "SELECT SUM(e.amount) FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id"
        f" WHERE a.customer = 1 AND e.txn_id IN (SELECT u.txn_id {window} AND u.txn_id IS NOT NULL)"),
        p)).scalar()
    debit = -int(debits or 0)
    return UsageTotals(organization=org_id, start_ms=lo, end_ms=hi, records=r.records, errors=r.errors,
                       input_tokens=r.input_tokens, cached_tokens=r.cached_tokens, output_tokens=r.output_tokens,
                       cost_nanos=r.cost_nanos, cost_usd=format_usd(r.cost_nanos, 9),
                       charge_transactions=charged.transactions, ledger_charged_nanos=charged.amount,
                       customer_debits_nanos=debit, reconciled=r.cost_nanos == charged.amount == debit)


class _UsageSums(msgspec.Struct, frozen=True):
    records: int
    errors: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_nanos: int


class _ChargeSums(msgspec.Struct, frozen=True):
    transactions: int
    amount: int


class _EntrySums(msgspec.Struct, frozen=True):
    entries: int
    credits: int
    debits: int
    charges: int


async def ledger_totals(conn: AsyncConnection, org_id: str, lo: int, hi: int,
                        account: Account = "all") -> LedgerTotals:
    accounts = []
    for kind in (["wallet", "promo"] if account == "all" else [account]):
        p = {"o": org_id, "k": kind, "lo": lo, "hi": hi}
        base = ("FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id"
                " WHERE a.org_id = :o AND a.kind = :k")
        opening = (await conn.execute(text(f"SELECT e.balance_after {base} AND e.created_at < :lo"
                                           " ORDER BY e.account_seq DESC LIMIT 1"), p)).scalar()
        r = row_as(_EntrySums, (await conn.execute(text(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN e.amount > 0 THEN e.amount ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN e.amount < 0 THEN -e.amount ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN t.kind = 'charge' THEN -e.amount ELSE 0 END), 0)"
            f" {base.replace('WHERE', 'JOIN ledger_transactions t ON t.id = e.txn_id WHERE')}"
            " AND e.created_at >= :lo AND e.created_at < :hi"), p)).one())
        open_bal = int(opening or 0)
        credits, debits = r.credits, r.debits
        closing = (await conn.execute(text(f"SELECT e.balance_after {base} AND e.created_at < :hi"
                                           " ORDER BY e.account_seq DESC LIMIT 1"), p)).scalar()
        close_bal = int(closing or 0)
        accounts.append(AccountTotals(account=kind, entries=r.entries, opening_balance_nanos=open_bal,
                                      credits_nanos=credits, debits_nanos=debits,
                                      charges_nanos=r.charges,
                                      closing_balance_nanos=close_bal,
                                      reconciled=open_bal + credits - debits == close_bal))
    return LedgerTotals(organization=org_id, start_ms=lo, end_ms=hi, accounts=accounts,
                        reconciled=all(a.reconciled for a in accounts))
