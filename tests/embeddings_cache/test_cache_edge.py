"""The embedding cache through the real edge (Envoy, sidecar, adapter) against the simulator."""

from __future__ import annotations

import asyncio
import struct

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.embeddings_cache.helpers import embed, tenant, usage, vectors
from tests.inference.helpers import marker
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def entries(engine: AsyncEngine, org: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT COUNT(*) FROM embedding_cache WHERE org_id = :o"),
                                       {"o": org})).scalar_one())


async def test_miss_then_hit_never_reaches_the_backend_again(sp: SimPlatform) -> None:
    _, key = await tenant(sp)
    m = marker()
    first = await embed(sp, key, f"hello cached world {m}")
    second = await embed(sp, key, f"hello cached world {m}")
    assert first.headers["x-cache-status"] == "miss" and second.headers["x-cache-status"] == "hit"
    assert len(sp.sim.requests(m)) == 1  # the simulator never saw the second request
    assert vectors(first) == vectors(second) and len(vectors(first)[0]) == 8 * 4
    assert usage(first) == (4, 0) and usage(second) == (4, 4)
    assert second.json()["model"] == "sim/embed" and second.headers["x-model"] == "sim/embed"


async def test_partial_batch_sends_only_the_uncached_inputs_in_one_call(sp: SimPlatform) -> None:
    _, key = await tenant(sp)
    m = marker()
    a, b, c, d = f"a {m}", f"b b {m}", f"c c c {m}", f"d {m}"
    primed_a = await embed(sp, key, a)
    primed_c = await embed(sp, key, c)
    r = await embed(sp, key, [a, b, c, d], encoding_format="base64")
    assert r.headers["x-cache-status"] == "partial"
    upstream = [rec["body"]["input"] for rec in sp.sim.requests(m)]
    assert upstream == [a, c, [b, d]]  # one call, only the uncached inputs, in request order
    got = vectors(r)
    assert got[0] == vectors(primed_a)[0] and got[2] == vectors(primed_c)[0]
    assert all(isinstance(item["embedding"], str) for item in r.json()["data"])
    # 2 + 3 + 4 + 2 words; a and c (2 + 4) came from the cache.
    assert usage(r) == (11, 6)
    # The same batch as floats: every vector from the same cache entries, bit for bit.
    again = await embed(sp, key, [a, b, c, d], encoding_format="float")
    assert again.headers["x-cache-status"] == "hit" and len(sp.sim.requests(m)) == 3
    assert vectors(again) == got and usage(again) == (11, 11)
    # What the backend computes for b, uncached, is what the cache served for it.
    fresh = await embed(sp, key, b, headers={"cache-control": "no-store"}, encoding_format="float")
    assert struct.unpack("<8f", got[1]) == pytest.approx(fresh.json()["data"][0]["embedding"], abs=1e-6)


async def test_no_store_bypasses_reading_and_writing(sp: SimPlatform, engine: AsyncEngine) -> None:
    org, key = await tenant(sp)
    m = marker()
    await embed(sp, key, f"known {m}")
    bypass = await embed(sp, key, [f"known {m}", f"unknown {m}"], headers={"Cache-Control": "No-Store"})
    assert bypass.headers["x-cache-status"] == "bypass" and usage(bypass) == (4, 0)
    assert sp.sim.requests(m)[-1]["body"]["input"] == [f"known {m}", f"unknown {m}"]
    assert await entries(engine, org) == 1  # the bypassed answer was not stored
    other = await embed(sp, key, f"unknown {m}", headers={"cache-control": "max-age=0, no-store"})
    assert other.headers["x-cache-status"] == "bypass"
    after = await embed(sp, key, f"unknown {m}", headers={"cache-control": "no-cache"})
    assert after.headers["x-cache-status"] == "miss" and len(sp.sim.requests(m)) == 4


async def test_another_organization_misses(sp: SimPlatform) -> None:
    _, key_a = await tenant(sp)
    _, key_b = await tenant(sp)
    m = marker()
    await embed(sp, key_a, f"secret text {m}")
    b = await embed(sp, key_b, f"secret text {m}")
    assert b.headers["x-cache-status"] == "miss" and usage(b) == (3, 0)
    assert len(sp.sim.requests(m)) == 2
    # The same organization's other key shares its organization's cache.
    org_a_again = await embed(sp, key_a, f"secret text {m}")
    assert org_a_again.headers["x-cache-status"] == "hit"


async def test_dimensions_are_part_of_the_key(sp: SimPlatform) -> None:
    _, key = await tenant(sp)
    m = marker()
    four = await embed(sp, key, f"width {m}", dimensions=4, encoding_format="float")
    eight = await embed(sp, key, f"width {m}", dimensions=8, encoding_format="float")
    assert four.headers["x-cache-status"] == eight.headers["x-cache-status"] == "miss"
    assert len(four.json()["data"][0]["embedding"]) == 4 and len(eight.json()["data"][0]["embedding"]) == 8
    # No `dimensions` is the model's native width (8): the same entry as `dimensions: 8`.
    native = await embed(sp, key, f"width {m}", encoding_format="float")
    four_again = await embed(sp, key, f"width {m}", dimensions=4)
    assert native.headers["x-cache-status"] == four_again.headers["x-cache-status"] == "hit"
    assert vectors(native) == vectors(eight) and vectors(four_again) == vectors(four)
    assert len(sp.sim.requests(m)) == 2
    # Another model is another key, even with the same upstream simulator and width.
    fixed = await embed(sp, key, f"width {m}", model="sim/embed-fixed")
    assert fixed.headers["x-cache-status"] == "miss"


async def test_duplicates_token_arrays_and_concurrent_misses(sp: SimPlatform, engine: AsyncEngine) -> None:
    org, key = await tenant(sp)
    m = marker()
    dup = await embed(sp, key, [f"twice {m}", f"twice {m}"])
    assert dup.headers["x-cache-status"] == "miss" and vectors(dup)[0] == vectors(dup)[1]
    assert await entries(engine, org) == 1
    tokens = await embed(sp, key, [[1, 2, 3]])
    tokens_again = await embed(sp, key, [1, 2, 3])  # one token-id array, not in a list: the same input
    assert tokens.headers["x-cache-status"] == "miss" and tokens_again.headers["x-cache-status"] == "hit"
    text_digits = await embed(sp, key, "[1, 2, 3]")  # a string is never confused with token ids
    assert text_digits.headers["x-cache-status"] == "miss"
    same = f"together {m}"
    results = await asyncio.gather(*(embed(sp, key, same) for _ in range(12)))
    assert {vectors(r)[0] for r in results} == {vectors(results[0])[0]}
    assert await entries(engine, org) == 4


async def test_failed_backend_call_stores_nothing(sp: SimPlatform, engine: AsyncEngine) -> None:
    org, key = await tenant(sp)
    async with sp.platform.client(key) as c:
        r = await c.post("/v1/embeddings", json={"model": "sim/embed",
                                                 "input": f"[[sim status=500]] {marker()}"})
    assert r.status_code == 502 and r.headers["x-wallet-debit"] == "0.00"
    assert await entries(engine, org) == 0
