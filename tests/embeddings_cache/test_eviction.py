"""Eviction (the worker's `embedding_cache` job) and recency, on the platform's own database."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import now_ms, write_tx
from core.embedding_cache import TTL_MS, EvictJob, entry_key, evict
from core.snapshot import load_snapshot
from tests.embeddings_cache.helpers import embed, tenant
from tests.inference.helpers import marker
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def keys_of(engine: AsyncEngine, org: str, texts: list[str]) -> list[str]:
    snap = await load_snapshot(engine)
    model, project = snap.models["sim/embed"], snap.default_project[org]  # the project an unscoped key acts for
    return [entry_key(model, 8, t, project=project) for t in texts]


async def set_used(engine: AsyncEngine, org: str, key: str, at: int) -> None:
    async with write_tx(engine) as conn:
        done = await conn.execute(text("UPDATE embedding_cache SET last_used_at = :t WHERE org_id = :o"
                                       " AND entry_key = :k"), {"t": at, "o": org, "k": key})
    assert done.rowcount == 1


async def used(engine: AsyncEngine, org: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT entry_key, last_used_at FROM embedding_cache WHERE org_id = :o"), {"o": org})).all()
    return {str(k): int(t) for k, t in rows}


async def test_least_recently_used_beyond_the_bound_are_evicted(sp: SimPlatform, engine: AsyncEngine) -> None:
    org, key = await tenant(sp)
    m = marker()
    texts = [f"lru {i} {m}" for i in range(5)]
    for t in texts:
        await embed(sp, key, t)
    keys = await keys_of(engine, org, texts)
    assert set(await used(engine, org)) == set(keys)
    now = now_ms()
    for i, k in enumerate(keys):
        await set_used(engine, org, k, now - 60_000 + i)  # texts[4] is the most recently used
    async with write_tx(engine) as conn:
        gone = await evict(conn, now, max_per_org=2)
    assert gone >= 3
    assert set(await used(engine, org)) == set(keys[3:])
    assert (await embed(sp, key, texts[0])).headers["x-cache-status"] == "miss"
    assert (await embed(sp, key, texts[4])).headers["x-cache-status"] == "hit"


async def test_entries_unused_for_the_ttl_expire(sp: SimPlatform, engine: AsyncEngine) -> None:
    org, key = await tenant(sp)
    m = marker()
    texts = [f"old {m}", f"recent {m}"]
    await embed(sp, key, texts)
    old, recent = await keys_of(engine, org, texts)
    await set_used(engine, org, old, now_ms() - TTL_MS - 1000)
    await set_used(engine, org, recent, now_ms() - TTL_MS + 3_600_000)
    await EvictJob(engine)()
    assert set(await used(engine, org)) == {recent}
    r = await embed(sp, key, texts)
    assert r.headers["x-cache-status"] == "partial"


async def test_a_hit_refreshes_only_stale_recency(sp: SimPlatform, engine: AsyncEngine) -> None:
    org, key = await tenant(sp)
    m = marker()
    texts = [f"stale {m}", f"fresh {m}"]
    await embed(sp, key, texts)
    stale, fresh = await keys_of(engine, org, texts)
    long_ago, lately = now_ms() - 5 * 3_600_000, now_ms() - 60_000
    await set_used(engine, org, stale, long_ago)
    await set_used(engine, org, fresh, lately)
    assert (await embed(sp, key, texts)).headers["x-cache-status"] == "hit"
    for _ in range(100):  # recency is written after the answer went out
        seen = await used(engine, org)
        if seen[stale] != long_ago:
            break
        await asyncio.sleep(0.02)
    assert seen[stale] >= lately and seen[fresh] == lately  # touched within the hour: no write
