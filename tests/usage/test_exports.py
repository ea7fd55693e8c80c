"""Finance exports on the real database: CSV parses, JSON Lines ends with its totals, the totals
equal the ledger's to the nano-dollar (usage costs == charge transactions == wallet and promo
debits), statements carry a correct running balance, and a 50 000-row export streams in bounded
chunks instead of being built in memory."""

from __future__ import annotations

import csv
import io
import random
import tracemalloc

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.usage import exports
from control_plane.usage.export_model import LEDGER_COLUMNS, USAGE_COLUMNS
from core import ledger
from core.db import now_ms, write_tx
from core.ids import new_id
from core.money import parse_usd
from tests.usage.conftest import DAY, Clock, Rec, make_org, produce
from tests.usage.synthetic import insert


async def _collect(engine: AsyncEngine, kind: str, org_id: str, lo: int, hi: int, fmt: exports.Format,
                   **kw: object) -> bytes:
    async with exports.snapshot(engine) as conn:
        gen = exports.export_usage(conn, org_id, lo, hi, fmt) if kind == "usage" else \
            exports.export_ledger(conn, org_id, lo, hi, fmt, **kw)  # type: ignore[arg-type]
        return b"".join([chunk async for chunk in gen])


async def _traffic(engine: AsyncEngine, clock: Clock) -> tuple[str, int, list[str]]:
    org = await make_org(engine, credit=5 * 10**9)
    async with write_tx(engine) as conn:  # promotional credit pays first: charges split across accounts
        await ledger.grant(conn, org.org_id, 37_123_457, idempotency_key=new_id("req"), actor="test",
                           promotional=True)
    base = clock.window(2)
    rnd = random.Random(5)
    recs = [Rec(rnd.randrange(2 * DAY), rnd.randrange(3), rnd.randrange(2), rnd.randrange(3),
                rnd.choice([200, 200, 200, 500]), rnd.randrange(4000), 0, rnd.randrange(1500),
                rnd.randrange(900))
            for _ in range(120)]
    recs.append(Rec(5, 0, 0, 0, 500, 0, 0, 0, 3))  # a zero-cost failure: a record without a transaction
    ids = await produce(engine, org, base, recs)
    return org.org_id, base, ids


async def test_usage_export_reconciles_to_the_ledger(engine: AsyncEngine, clock: Clock) -> None:
    org_id, base, ids = await _traffic(engine, clock)
    lo, hi = base, base + 2 * DAY
    body = await _collect(engine, "usage", org_id, lo, hi, "csv")
    table = list(csv.DictReader(io.StringIO(body.decode())))
    assert tuple(table[0].keys()) == USAGE_COLUMNS and {r["request_id"] for r in table} == set(ids)
    assert all(parse_usd(r["cost_usd"]) == int(r["cost_nanos"]) for r in table)
    assert [int(r["created_at_ms"]) for r in table] == sorted(int(r["created_at_ms"]) for r in table)
    async with exports.snapshot(engine) as conn:
        totals = await exports.usage_totals(conn, org_id, lo, hi)
        wallet_and_promo_debits = -int((await conn.execute(text(
            "SELECT SUM(e.amount) FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id"
            " JOIN ledger_transactions t ON t.id = e.txn_id WHERE a.org_id = :o AND a.customer = 1"
            " AND t.kind = 'charge'"), {"o": org_id})).scalar_one())
        charges = int((await conn.execute(text(
            "SELECT SUM(amount) FROM ledger_transactions WHERE org_id = :o AND kind = 'charge'"),
            {"o": org_id})).scalar_one())
    cost = sum(int(r["cost_nanos"]) for r in table)
    assert totals.records == len(table) == len(ids) and totals.reconciled
    assert cost == totals.cost_nanos == totals.ledger_charged_nanos == totals.customer_debits_nanos
    assert cost == charges == wallet_and_promo_debits > 0
    lines = (await _collect(engine, "usage", org_id, lo, hi, "jsonl")).splitlines()
    records = [msgspec.json.decode(line) for line in lines[:-1]]
    assert [r["request_id"] for r in records] == [r["request_id"] for r in table]
    assert all(r["object"] == "usage.record" for r in records)
    assert msgspec.json.decode(lines[-1]) == msgspec.to_builtins(totals)
    # A sub-range holds exactly its records.
    mid = base + DAY
    halves = [await _collect(engine, "usage", org_id, a, b, "csv") for a, b in ((lo, mid), (mid, hi))]
    assert sum(len(list(csv.DictReader(io.StringIO(h.decode())))) for h in halves) == len(table)


async def test_ledger_statement_export_has_running_balances(engine: AsyncEngine, clock: Clock) -> None:
    org_id, _base, _ids = await _traffic(engine, clock)
    lo, hi = now_ms() - DAY, now_ms() + DAY  # ledger entries carry their real posting time
    body = await _collect(engine, "ledger", org_id, lo, hi, "csv")
    table = list(csv.DictReader(io.StringIO(body.decode())))
    assert tuple(table[0].keys()) == LEDGER_COLUMNS
    async with exports.snapshot(engine) as conn:
        totals = await exports.ledger_totals(conn, org_id, lo, hi)
        usage = await exports.usage_totals(conn, org_id, 0, 2**62)
    assert totals.reconciled and [a.account for a in totals.accounts] == ["wallet", "promo"]
    for acct in totals.accounts:
        lines = [r for r in table if r["account"] == acct.account]
        running = acct.opening_balance_nanos
        for r in lines:
            running += int(r["amount_nanos"])
            assert int(r["balance_after_nanos"]) == running and parse_usd(r["balance_after_usd"]) == running
        assert running == acct.closing_balance_nanos and len(lines) == acct.entries
    assert sum(a.charges_nanos for a in totals.accounts) == usage.cost_nanos
    assert totals.accounts[0].closing_balance_nanos + totals.accounts[1].closing_balance_nanos == \
        5 * 10**9 + 37_123_457 - usage.cost_nanos
    jsonl = (await _collect(engine, "ledger", org_id, lo, hi, "jsonl", account="promo")).splitlines()
    assert all(msgspec.json.decode(x)["account"] == "promo" for x in jsonl[:-1])
    assert msgspec.json.decode(jsonl[-1])["accounts"][0]["account"] == "promo"


async def _stream_stats(engine: AsyncEngine, org_id: str, lo: int, hi: int) -> tuple[int, int, int, int, int]:
    """(chunks, bytes, rows, biggest chunk, peak Python allocation) of consuming one CSV export."""
    tracemalloc.start()
    try:
        chunks = total = rows = biggest = 0
        async with exports.snapshot(engine) as conn:
            async for chunk in exports.export_usage(conn, org_id, lo, hi, "csv"):
                chunks, total, biggest = chunks + 1, total + len(chunk), max(biggest, len(chunk))
                rows += chunk.count(b"\r\n")
        return chunks, total, rows, biggest, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_large_export_streams_in_bounded_chunks(engine: AsyncEngine, clock: Clock) -> None:
    org = await make_org(engine)
    base = clock.window(1)
    n = 50_000
    await insert(engine, org.org_id, n, base, DAY, batch=10_000)
    chunks, total, rows, biggest, peak = await _stream_stats(engine, org.org_id, base, base + DAY)
    assert rows == n + 1  # header + every record
    assert chunks >= n // exports.BATCH and biggest < total // 10
    # Memory does not grow with the export: five times the rows, about the same peak allocation
    # (one batch of rows plus the driver's prefetch), and well below the export's own size.
    _c, small_total, small_rows, _b, small_peak = await _stream_stats(engine, org.org_id, base,
                                                                      base + DAY // 5)
    assert small_rows < n // 4 and small_total < total // 4
    assert peak < 1.5 * small_peak + 1_000_000 and peak < total * 0.7, (peak, small_peak, total)
