"""Money: cached inputs are billed at the cached-input price, through the real edge, and the
tokens billed always reconcile with what the backend reported."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.money import format_usd, request_cost
from tests.embeddings_cache.helpers import CACHED, IN, OUT, embed, statement, tenant, usage
from tests.inference.helpers import marker
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_ledger_charges_cached_tokens_at_the_cached_price(sp: SimPlatform, engine: AsyncEngine) -> None:
    org, key = await tenant(sp)
    m = marker()
    a, b = f"first input {m}", f"second longer input {m}"
    answers = [await embed(sp, key, a), await embed(sp, key, [a, b]), await embed(sp, key, [b, a])]
    assert [r.headers["x-cache-status"] for r in answers] == ["miss", "partial", "hit"]
    assert [usage(r) for r in answers] == [(3, 0), (7, 3), (7, 7)]
    expected = [request_cost(n, cached, 0, IN, CACHED, OUT) for n, cached in map(usage, answers)]
    assert expected == [3000, 5500, 3500]  # 1000 nano-dollars a token, 500 cached
    assert [r.headers["x-wallet-debit"] for r in answers] == [format_usd(e) for e in expected]
    charges = [row for row in await statement(sp, org) if row["amount"] < 0]
    assert [(row["request_id"], -row["amount"]) for row in charges] == [
        (r.headers["x-request-id"], e) for r, e in zip(answers, expected, strict=True)]
    async with engine.connect() as conn:
        records = (await conn.execute(text(
            "SELECT request_id, input_tokens, cached_tokens, cost_nanos, cache_status FROM usage_records"
            " WHERE org_id = :o ORDER BY created_at, request_id"), {"o": org})).all()
    assert sorted(tuple(row) for row in records) == sorted(
        (r.headers["x-request-id"], *usage(r), e, r.headers["x-cache-status"])
        for r, e in zip(answers, expected, strict=True))
    async with sp.platform.admin() as admin:
        report = (await admin.get("/api/ledger/reconcile", params={"org_id": org})).json()
    assert report["drift"] == [] and report["ok"]


async def test_bypass_is_billed_in_full(sp: SimPlatform) -> None:
    org, key = await tenant(sp)
    m = marker()
    await embed(sp, key, f"paid twice {m}")
    bypass = await embed(sp, key, f"paid twice {m}", headers={"cache-control": "no-store"})
    assert usage(bypass) == (3, 0)
    charges = [-row["amount"] for row in await statement(sp, org) if row["amount"] < 0]
    assert charges == [3000, 3000]


async def test_batch_counts_split_exactly_over_later_hits(sp: SimPlatform) -> None:
    """The backend reports one total for a batch; the per-input counts stored for it add up to that
    total, so serving the inputs one by one from the cache bills exactly the tokens computed."""
    _, key = await tenant(sp)
    m = marker()
    texts = [f"x {m}", "a much longer input with quite a few words in it " + m, f"three word {m}",
             "ü" * 40 + m]
    batch = await embed(sp, key, texts)
    total, _ = usage(batch)
    assert total == 2 + 12 + 3 + 1
    singles = [usage(await embed(sp, key, t)) for t in texts]
    assert all(n == cached >= 1 for n, cached in singles)
    assert sum(n for n, _ in singles) == total
    reordered = await embed(sp, key, list(reversed(texts)))
    assert usage(reordered) == (total, total)
