"""Rollups: the same answer before, during and after rolling; the job is idempotent and safe with
two workers at once; percentiles from the histogram stay in the exact percentile's bin."""

from __future__ import annotations

import asyncio
import random

import msgspec
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.usage import RollupJob, parse_query, run_query
from control_plane.usage.histogram import BINS, LOWER, bin_of, percentile
from control_plane.usage.rollups import watermarks
from core.db import read_tx
from tests.usage.conftest import DAY, Clock, Rec, make_org, produce
from tests.usage.test_query import HOUR, roll_to


def _recs(n: int, days: int, seed: int) -> list[Rec]:
    rnd = random.Random(seed)
    return [Rec(rnd.randrange(days * DAY), rnd.randrange(3), rnd.randrange(2), rnd.randrange(3),
                rnd.choice([200, 200, 500]), rnd.randrange(3000), 0, rnd.randrange(900),
                rnd.choice([None, rnd.randrange(1, 90_000)])) for _ in range(n)]


async def _answer(engine: AsyncEngine, org_id: str, base: int, width: str) -> object:
    params = [("start_time", str(base // 1000)), ("end_time", str((base + 3 * DAY) // 1000)),
              ("bucket_width", width), ("group_by", "model,status"),
              ("limit", "3" if width == "1d" else "72")]
    async with read_tx(engine) as conn:
        return msgspec.to_builtins(await run_query(conn, org_id, parse_query(params, 0), None))


async def _rollup_rows(engine: AsyncEngine, org_id: str) -> dict[str, int]:
    async with read_tx(engine) as conn:
        rows = await conn.execute(text("SELECT grain, COUNT(*), SUM(requests) FROM usage_rollups"
                                       " WHERE org_id = :o GROUP BY grain"), {"o": org_id})
        return {str(r[0]): int(r[2]) for r in rows}


async def test_rollup_plus_tail_equals_raw(engine: AsyncEngine, clock: Clock) -> None:
    org = await make_org(engine)
    base = clock.window(3)
    await produce(engine, org, base, _recs(300, 3, 1))
    raw = {w: await _answer(engine, org.org_id, base, w) for w in ("1h", "1d")}
    await roll_to(engine, base + DAY + 5 * HOUR + 17)  # day 1 as a daily rollup, 5 hours, then raw
    rolled = await _rollup_rows(engine, org.org_id)
    assert rolled["day"] > 0 and rolled["hour"] > rolled["day"]
    assert {w: await _answer(engine, org.org_id, base, w) for w in ("1h", "1d")} == raw
    await roll_to(engine, base + 4 * DAY)
    assert (await _rollup_rows(engine, org.org_id))["day"] == 300
    assert {w: await _answer(engine, org.org_id, base, w) for w in ("1h", "1d")} == raw


async def test_two_workers_roll_each_record_once(engine: AsyncEngine, clock: Clock) -> None:
    org = await make_org(engine)
    base = clock.window(2)
    await produce(engine, org, base, _recs(200, 2, 2))
    before = await _answer(engine, org.org_id, base, "1h")
    async with read_tx(engine) as conn:
        start = (await watermarks(conn))["hour"]

    def job() -> RollupJob:  # a worker whose clock stands at the end of the window
        return RollupJob(engine, lag_ms=0, clock=lambda: base + 2 * DAY + HOUR)

    await asyncio.gather(job()(), job()())
    async with read_tx(engine) as conn:
        marks = await watermarks(conn)
    assert marks["hour"] == base + 2 * DAY + HOUR and marks["day"] == base + 2 * DAY and start < marks["hour"]
    assert await _rollup_rows(engine, org.org_id) == {"hour": 200, "day": 200}
    await job()()  # nothing due: nothing changes
    assert await _rollup_rows(engine, org.org_id) == {"hour": 200, "day": 200}
    assert await _answer(engine, org.org_id, base, "1h") == before


@given(st.lists(st.integers(0, 3_000_000), min_size=1, max_size=300), st.sampled_from([50, 95, 99]))
def test_percentile_lands_in_the_exact_percentiles_bin(latencies: list[int], p: int) -> None:
    counts = [0] * BINS
    for v in latencies:
        counts[bin_of(v)] += 1
    exact = sorted(latencies)[-(-p * len(latencies) // 100) - 1]  # nearest rank
    estimate = percentile(counts, p)
    assert estimate is not None and bin_of(estimate) == bin_of(exact)
    if LOWER[1] < exact < LOWER[-1]:
        assert abs(estimate - exact) <= 0.2 * exact + 1


def test_bins_are_contiguous_and_logarithmic() -> None:
    assert LOWER[0] == 0 and BINS == 40 and list(LOWER) == sorted(set(LOWER))
    assert all(bin_of(LOWER[i]) == i and bin_of(LOWER[i] - 1) == i - 1 for i in range(1, BINS))
    assert all(LOWER[i + 1] / LOWER[i] <= 2 for i in range(1, BINS - 1))
    assert percentile([0] * BINS, 50) is None
