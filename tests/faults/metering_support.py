"""Shared by the metering fault cases (tests/faults/test_metering_*.py): a platform wired to the
provider simulator, tenants with credit, and the books of one organization read from the database.

`assert_books` is the check every case ends with: once no hold of the organization is open, the
sum of the charges the clients were told (`x-wallet-debit`, where the answer reached them) = the
ledger's charge transactions = the usage records' costs = what left the wallet and promotional
credit plus what the organization owes (receivable), and every usage record costs exactly its
tokens at the price card.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from core.db import make_engine
from core.money import parse_usd, request_cost
from tests.inference.support import SimPlatform, start_sim_platform

__all__ = ["CREDIT", "IN", "OUT", "Books", "assert_books", "books", "cost", "debit", "eventually", "sp", "tenant"]

IN, CACHED, OUT = 1_000_000_000, 500_000_000, 2_000_000_000  # the simulator models' card (support.PRICE)
CREDIT = 10**9


@pytest.fixture(scope="module")
async def sp() -> AsyncIterator[SimPlatform]:
    """The simulator's catalog (tests/inference/support.py); local models are not started."""
    running = await start_sim_platform()
    try:
        yield running
    finally:
        await running.stop()


async def tenant(sp: SimPlatform, credit_nanos: int = CREDIT) -> tuple[str, str]:
    """A new organization with `credit_nanos` in its wallet and a key: (org id, key secret)."""
    async with sp.platform.admin() as admin:
        org = (await admin.post("/api/orgs", json={"name": f"f-{secrets.token_hex(4)}"})).json()["id"]
        if credit_nanos:
            r = await admin.post(f"/api/orgs/{org}/ledger/grants", json={"amount_nanos": credit_nanos},
                                 headers={"idempotency-key": secrets.token_hex(8)})
            assert r.status_code == 201, r.text
        key = (await admin.post(f"/api/orgs/{org}/keys", json={"name": "faults"})).json()["secret"]
    return org, key


def cost(input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
    return request_cost(input_tokens, cached_tokens, output_tokens, IN, CACHED, OUT)


def debit(headers: dict[str, str] | object) -> int:
    """`x-wallet-debit` (a header mapping or the stream's final metadata) in nano-dollars."""
    value = headers["x-wallet-debit"]  # type: ignore[index]
    return parse_usd(str(value))


@dataclass(frozen=True)
class Usage:
    request_id: str
    status: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_nanos: int


@dataclass(frozen=True)
class Books:
    charges: int
    """Sum of the organization's `charge` transactions."""
    usage: list[Usage]
    wallet: int
    promo: int
    held: int
    receivable: int
    """Balance of the receivable account: minus what the organization owes."""
    open_holds: int


async def books(sp: SimPlatform, org: str) -> Books:
    engine = make_engine(sp.platform.s)
    try:
        async with engine.connect() as conn:
            # Holds first: a settlement resolves its hold, writes the charge and the usage record in
            # one transaction, so once its hold reads resolved, the later reads see the rest of it.
            open_holds = (await conn.execute(text(
                "SELECT COUNT(*) FROM ledger_holds WHERE org_id = :o AND status = 'open'"), {"o": org})).scalar_one()
            charges = (await conn.execute(text(
                "SELECT COALESCE(SUM(amount), 0) FROM ledger_transactions WHERE org_id = :o AND kind = 'charge'"),
                {"o": org})).scalar_one()
            usage = [Usage(str(r[0]), *(int(v) for v in r[1:])) for r in await conn.execute(text(
                "SELECT request_id, status, input_tokens, cached_tokens, output_tokens, cost_nanos"
                " FROM usage_records WHERE org_id = :o ORDER BY created_at"), {"o": org})]
            accounts = {str(r[0]): (int(r[1]), int(r[2])) for r in await conn.execute(text(
                "SELECT kind, balance, held FROM ledger_accounts WHERE org_id = :o"), {"o": org})}
    finally:
        await engine.dispose()
    wallet, promo = accounts.get("wallet", (0, 0)), accounts.get("promo", (0, 0))
    return Books(charges=int(charges), usage=usage, wallet=wallet[0], promo=promo[0], held=wallet[1] + promo[1],
                 receivable=accounts.get("receivable", (0, 0))[0], open_holds=int(open_holds))


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


async def assert_books(sp: SimPlatform, org: str, *, requests: int, debits: list[int] | None = None,
                       credit: int = CREDIT) -> Books:
    """Wait until the organization's `requests` requests are all settled, then check the books
    (see the module docstring). `debits`: the `x-wallet-debit` values the clients received."""
    latest: list[Books] = []

    async def settled() -> bool:
        latest[:] = [await books(sp, org)]
        return latest[0].open_holds == 0 and len(latest[0].usage) >= requests

    await eventually(settled, f"{requests} settled requests of {org}")
    b = latest[0]
    assert len(b.usage) == requests, b.usage
    assert b.held == 0, b
    for u in b.usage:
        assert u.cost_nanos == cost(u.input_tokens, u.output_tokens, u.cached_tokens), u
    billed = sum(u.cost_nanos for u in b.usage)
    assert b.charges == billed, (b.charges, b.usage)
    assert (credit - b.wallet - b.promo) - b.receivable == billed, b
    if debits is not None:
        assert sum(debits) == billed, (debits, b.usage)
    async with sp.platform.admin() as admin:
        report = (await admin.get("/api/ledger/reconcile")).json()
    assert report["drift"] == [], report
    return b
