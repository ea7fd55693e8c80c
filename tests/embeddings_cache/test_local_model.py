"""The cache in front of the real local model (all-MiniLM-L6-v2): a miss computes, a hit does not,
and both answer the same float32 vectors at the model's own token count."""

from __future__ import annotations

import math
import struct

import pytest

from tests.embeddings_cache.helpers import embed, statement, tenant, usage, vectors
from tests.inference.helpers import marker
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")

MODEL = "local/all-minilm-l6-v2"
IN, CACHED = 5_000_000, 1_000_000  # its card in tests/inference/support.py


async def test_local_model_miss_then_partial_then_hit(sp: SimPlatform) -> None:
    if sp.local is None:
        pytest.skip(sp.local_unavailable or "local models unavailable")
    org, key = await tenant(sp)
    m = marker()
    a, b = f"the cat sat on the mat {m}", f"markets fell sharply today {m}"
    miss = await embed(sp, key, a, model=MODEL, encoding_format="float")
    part = await embed(sp, key, [b, a], model=MODEL, encoding_format="base64")
    hit = await embed(sp, key, [a, b], model=MODEL, encoding_format="float")
    assert [r.headers["x-cache-status"] for r in (miss, part, hit)] == ["miss", "partial", "hit"]
    only_a, _ = usage(miss)
    both, cached = usage(part)
    assert only_a > 0 and cached == only_a < both and usage(hit) == (both, both)
    va, vb = vectors(hit)
    assert vectors(miss) == [va] and vectors(part) == [vb, va]
    assert len(va) == 384 * 4
    assert math.isclose(math.sqrt(sum(x * x for x in struct.unpack("<384f", va))), 1.0, abs_tol=1e-3)
    charges = [-row["amount"] for row in await statement(sp, org) if row["amount"] < 0]
    assert charges == [-(-(only_a * IN) // 10**6), -(-((both - cached) * IN + cached * CACHED) // 10**6),
                       -(-(both * CACHED) // 10**6)]
