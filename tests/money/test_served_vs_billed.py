"""Issue 12, findings 4-6 at the ledger: served work is charged even after its hold expired, once;
and reconcile reports work the adapters' journal says was served and nobody has billed.
(The end-to-end cases, with a real adapter killed or a database down, are in tests/faults.)"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from core import ledger
from core.db import read_tx, write_tx
from core.ledger import Usage
from core.ledger.errors import HoldResolved
from core.served import GLOB
from tests.money.conftest import Tenant
from tests.money.helpers import assert_books_balance, balance, grant, hold, settle


async def _expire(engine: AsyncEngine) -> None:
    async with write_tx(engine) as conn:
        await ledger.expire_holds(conn)


async def test_an_expired_hold_is_settled_late_and_what_the_wallet_lacks_is_owed(
        engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 1000 * 3000 + 100 * 12000)  # exactly the hold below
    expired = await hold(engine, tenant, 1000, 100, expires_in_ms=-1)
    await _expire(engine)
    # The money came back at expiry; another request reserves all of it.
    other = await hold(engine, tenant, 1000, 100)
    usage = Usage(status=502, input_tokens=1000, cached_tokens=0, output_tokens=60)
    async with write_tx(engine) as conn:
        [late] = await ledger.settle_many(conn, [(expired.request_id, usage)], late=True)
    assert isinstance(late, ledger.Settlement)
    cost = 1000 * 3000 + 60 * 12000
    assert (late.charged, late.receivable, late.released) == (cost, cost, 0)  # nothing available: all owed
    async with write_tx(engine) as conn:  # exactly once
        [again] = await ledger.settle_many(conn, [(expired.request_id, usage)], late=True)
        assert isinstance(again, HoldResolved)
        [settled] = await ledger.settle_many(conn, [(other.request_id, usage)])
        assert isinstance(settled, ledger.Settlement) and settled.receivable == 0
    assert (await balance(engine, tenant)).wallet_nanos == expired.amount - cost
    await assert_books_balance(engine, tenant.org_id)


async def test_a_late_settlement_takes_what_credit_is_available_first(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 10**9)
    expired = await hold(engine, tenant, 10, 10, expires_in_ms=-1)
    await _expire(engine)
    async with write_tx(engine) as conn:
        [late] = await ledger.settle_many(conn, [(expired.request_id, Usage(status=200, input_tokens=10,
                                                                              cached_tokens=0, output_tokens=5))],
                                          late=True)
    assert isinstance(late, ledger.Settlement) and late.receivable == 0
    assert (await balance(engine, tenant)).wallet_nanos == 10**9 - late.charged
    await assert_books_balance(engine, tenant.org_id)


async def _served(engine: AsyncEngine, org_id: str, journal: Path) -> list[tuple[str, str, int]]:
    async with read_tx(engine) as conn:
        report = await ledger.reconcile(conn, org_id, journal_dir=journal)
    return [(d.check, d.subject, d.expected) for d in report.drift]


async def test_reconcile_reports_what_the_journal_served_and_nobody_billed(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 10**9)
    h = await hold(engine, tenant, 10, 50)
    r = h.request_id
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp)
        path = journal / GLOB.replace("*", "1-1")
        path.write_bytes(f"O {r} 5000 10 0\nS {r} 1 0\nS {r} 7 0\n".encode())
        # No writer holds the file: its adapter died mid-stream, 7 output tokens sent.
        assert await _served(engine, tenant.org_id, journal) == [("served_vs_billed", r, 7)]
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Alive and streaming: not a difference.
            assert await _served(engine, tenant.org_id, journal) == []
            os.write(fd, f"F {r} 200 10 0 9\n".encode())
            # Alive, the stream ended, its settlement failed: a difference until the settler runs.
            assert await _served(engine, tenant.org_id, journal) == [("served_vs_billed", r, 9)]
        finally:
            os.close(fd)
        await settle(engine, r, 10, 9)
        # Billed (the `D` line may have been lost with its adapter): no difference.
        assert await _served(engine, tenant.org_id, journal) == []
    await assert_books_balance(engine, tenant.org_id)
