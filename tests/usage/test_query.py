"""`/v1/usage` query correctness on the real database against a brute-force computation.

Records are produced through the ledger (hold + settle at chosen times). Each hypothesis example
also moves the rollup watermarks to a random point inside its records, so every answer mixes
daily rollups, hourly rollups and raw records, and must still equal the brute force exactly:
"rollup + tail equals raw", bucket boundaries, group-bys, filters, scoping and pagination.
"""

from __future__ import annotations

import itertools

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.usage import parse_query, roll_step, run_query
from control_plane.usage.model import LIMITS, UsageQuery
from control_plane.usage.query import plan
from core.db import read_tx, write_tx
from tests.usage.conftest import DAY, Clock, Org, Rec, make_org, produce
from tests.usage.reference import expected_buckets, rows_of

HOUR = 3_600_000

offsets = st.one_of(st.integers(0, 3 * DAY - 1),
                    st.builds(lambda h, d: max(0, h * HOUR + d), st.integers(0, 71),
                              st.sampled_from([-1, 0, 1])))
records = st.builds(Rec, at=offsets, key=st.integers(0, 2), model=st.integers(0, 1),
                    endpoint=st.integers(0, 2),
                    status=st.sampled_from([200, 200, 200, 400, 429, 500]), input_tokens=st.integers(0, 5000),
                    cached_tokens=st.just(0), output_tokens=st.integers(0, 2000),
                    latency_ms=st.one_of(st.none(), st.integers(0, 200_000)))


async def roll_to(engine: AsyncEngine, at: int) -> None:
    for grain in ("hour", "day"):
        more = True
        while more:
            async with write_tx(engine) as conn:
                more = await roll_step(conn, grain, now=at, lag_ms=0)


async def all_pages(engine: AsyncEngine, org: Org, params: list[tuple[str, str]],
                    allowed: list[str] | None) -> list[tuple[int, int, list[object]]]:
    got: list[tuple[int, int, list[object]]] = []
    page: str | None = None
    for _ in range(500):
        q = parse_query([*params, *([("page", page)] if page else [])], now_ms=0)
        async with read_tx(engine) as conn:
            result = await run_query(conn, org.org_id, q, allowed)
        got += [(b.start_time, b.end_time, list(b.results)) for b in result.data]
        assert len(result.data) <= q.limit
        if not result.has_more:
            assert result.next_page is None
            return got
        page = result.next_page
    raise AssertionError("pagination did not end")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(recs=st.lists(records, min_size=0, max_size=40), width=st.sampled_from(["1m", "1h", "1d"]),
       groups=st.lists(st.sampled_from(["project_id", "model", "api_key_id", "endpoint", "status"]),
                       max_size=3),
       start=st.integers(-DAY, 2 * DAY), span=st.integers(1, 4 * DAY), limit_frac=st.floats(0, 1),
       cut=st.integers(0, 4 * DAY),
       filters=st.sets(st.sampled_from(["projects", "models", "statuses", "keys"])),
       scoped=st.booleans())
async def test_query_equals_brute_force(engine: AsyncEngine, clock: Clock, recs: list[Rec], width: str,
                                        groups: list[str], start: int, span: int, limit_frac: float, cut: int,
                                        filters: set[str], scoped: bool) -> None:
    org = await make_org(engine)
    base = clock.window(5)
    recs = [Rec(**{**r.__dict__, "cached_tokens": r.input_tokens // 3}) for r in recs]
    await produce(engine, org, base, recs)
    await roll_to(engine, base + cut)
    if width == "1m":
        span = min(span, 6 * HOUR)  # a 1m page is at most a day; keep examples small
    start_s = (base + start) // 1000
    end_s = start_s + max(1, span // 1000)
    params = [("start_time", str(start_s)), ("end_time", str(end_s)), ("bucket_width", width),
              ("group_by", ",".join(groups))] if groups else [
        ("start_time", str(start_s)), ("end_time", str(end_s)), ("bucket_width", width)]
    most = LIMITS[width][1]
    params.append(("limit", str(max(1, int(limit_frac * min(most, 8))))))
    if "projects" in filters:
        params.append(("project_ids[]", org.projects[1]))
    if "models" in filters:
        params.append(("models", "test/alpha"))
    if "statuses" in filters:
        params += [("statuses", "200"), ("statuses", "500")]
    if "keys" in filters:
        params.append(("api_key_ids", f"{org.keys[0]},{org.keys[1]}"))
    allowed = [org.projects[0]] if scoped else None
    got = await all_pages(engine, org, params, allowed)
    q = parse_query(params, now_ms=0)
    want = expected_buckets(await rows_of(engine, org.org_id), q, allowed)
    assert msgspec.to_builtins(got) == msgspec.to_builtins(want)


def test_plan_uses_each_grain_only_for_whole_closed_intervals() -> None:
    grains = [("day", DAY), ("hour", HOUR)]
    lo, hi = DAY + 90 * 60_000, 4 * DAY + 5 * HOUR + 7
    marks = {"day": 3 * DAY, "hour": 4 * DAY + 3 * HOUR}
    segments = plan(lo, hi, grains, marks)
    assert segments == [(None, lo, DAY + 2 * HOUR), ("hour", DAY + 2 * HOUR, 2 * DAY),
                        ("day", 2 * DAY, 3 * DAY), ("hour", 3 * DAY, 4 * DAY + 3 * HOUR),
                        (None, 4 * DAY + 3 * HOUR, hi)]
    # contiguous and complete, whatever the watermarks
    for marks in ({}, {"day": 10 * DAY, "hour": 10 * DAY}, {"hour": 2 * DAY + 1}):
        segs = plan(lo, hi, grains, marks)
        assert segs[0][1] == lo and segs[-1][2] == hi
        assert all(a[2] == b[1] for a, b in itertools.pairwise(segs))


async def test_bucket_boundaries(engine: AsyncEngine, clock: Clock) -> None:
    org = await make_org(engine)
    base = clock.window(3)  # day-aligned
    edges = [0, HOUR - 1, HOUR, DAY - 1, DAY, DAY + 1]
    await produce(engine, org, base, [Rec(at, 1, 0, 0, 200, 10, 0, 5, 100) for at in edges])
    await roll_to(engine, base + DAY)  # the first day from rollups, the rest raw
    q = [("start_time", str(base // 1000)), ("end_time", str((base + 2 * DAY) // 1000)),
         ("bucket_width", "1d")]
    async with read_tx(engine) as conn:
        page = await run_query(conn, org.org_id, parse_query(q, 0), None)
    s = base // 1000
    assert [(b.start_time, b.end_time) for b in page.data] == [(s, s + 86400), (s + 86400, s + 2 * 86400)]
    assert [b.results[0].num_model_requests for b in page.data] == [4, 2]
    # An unaligned range: buckets are clipped to it and `end_time` is exclusive.
    q = [("start_time", str((base + HOUR) // 1000)), ("end_time", str((base + DAY) // 1000)),
         ("bucket_width", "1h"), ("limit", "168")]
    async with read_tx(engine) as conn:
        page = await run_query(conn, org.org_id, parse_query(q, 0), None)
    assert len(page.data) == 23 and page.data[0].start_time == (base + HOUR) // 1000 and not page.has_more
    assert sum(r.num_model_requests for b in page.data for r in b.results) == 2  # HOUR and DAY - 1
    assert page.data[-1].results[0].num_model_requests == 1


async def test_another_orgs_ids_match_nothing(engine: AsyncEngine, clock: Clock) -> None:
    mine, theirs = await make_org(engine), await make_org(engine)
    base = clock.window(1)
    await produce(engine, mine, base, [Rec(10, 1, 0, 0, 200, 10, 0, 5, 100)])
    await produce(engine, theirs, base, [Rec(10, 1, 0, 0, 200, 10, 0, 5, 100)])
    window = [("start_time", str(base // 1000)), ("end_time", str(base // 1000 + 60))]
    for extra in ([("project_ids", theirs.projects[1])], [("api_key_ids", theirs.keys[1])], []):
        async with read_tx(engine) as conn:
            page = await run_query(conn, theirs.org_id if not extra else mine.org_id,
                                   parse_query([*window, *extra], 0), None)
        count = sum(r.num_model_requests for b in page.data for r in b.results)
        assert count == (1 if not extra else 0)
    # a key scoped to project 0 filtering on project 1 of its own org sees nothing, without an error
    async with read_tx(engine) as conn:
        other = parse_query([*window, ("project_ids", mine.projects[1])], 0)
        page = await run_query(conn, mine.org_id, other, [mine.projects[0]])
    assert page.data and all(b.results == [] for b in page.data)


def test_defaults_end_with_the_bucket_holding_now() -> None:
    q = parse_query([("start_time", "100")], now_ms=3_600_000)
    assert isinstance(q, UsageQuery) and q.end_ms == 86_400_000 and q.width == "1d" and q.limit == 7
    q = parse_query([("start_time", "100"), ("bucket_width", "1h")], now_ms=2 * DAY + 1)
    assert q.end_ms == 2 * DAY + HOUR and q.limit == 24 and q.page_start_ms == 0
