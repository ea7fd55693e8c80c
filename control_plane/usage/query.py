"""Answer a `/v1/usage` query from rollups and raw records, always complete.

The page's time range is cut into segments (`plan`): whole UTC days below the day grain's
watermark come from daily rollups, whole hours below the hour watermark from hourly rollups, and
everything else (the still-open tail, partial hours at the edges, every `1m` query) from
usage_records. Only grains no wider than the bucket width are used, so no bucket ever mixes data
across its boundary. Each segment is one `GROUP BY` in the database; the partial sums are added in
Python (integers, exact) and percentiles come from the merged latency histograms, so a result is
identical whichever mix of sources produced it.

Scoping: every statement filters on the caller's organization; a key scoped to projects only ever
sees those projects, and a filter naming anything else (another tenant's ids included) matches
nothing rather than failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BindParameter, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.usage.histogram import COLUMNS, percentile, raw_bin_sums
from control_plane.usage.model import GROUPS, WIDTH_MS, Latency, Spend, UsageBucket, UsagePage, UsageQuery, UsageResult
from control_plane.usage.params import encode_page
from control_plane.usage.rollups import GRAIN_MS, watermarks
from core.money import format_usd

__all__ = ["Segment", "aggregate", "plan", "run_query"]

Segment = tuple[str | None, int, int]
"""(grain or None for raw records, start ms inclusive, end ms exclusive)."""
Key = tuple[int, tuple[str | int, ...]]
"""(bucket start ms, group values in query.group_by order)."""
N_METRICS = 6  # requests, errors, input, cached, output, cost; then the latency bins

_RAW_METRICS = ("COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(input_tokens),"
                " SUM(cached_tokens), SUM(output_tokens), SUM(cost_nanos), " + raw_bin_sums())
_ROLLUP_METRICS = ", ".join(f"SUM({c})" for c in ("requests", "errors", "input_tokens", "cached_tokens",
                                                    "output_tokens", "cost_nanos", *COLUMNS))


def plan(lo: int, hi: int, grains: Sequence[tuple[str, int]], marks: dict[str, int]) -> list[Segment]:
    """Cut [lo, hi) into rollup segments (coarsest first) and raw remainders."""
    if lo >= hi:
        return []
    if not grains:
        return [(None, lo, hi)]
    (grain, width), finer = grains[0], grains[1:]
    a = -(-lo // width) * width
    b = min(hi, marks.get(grain, 0)) // width * width
    if a >= b:
        return plan(lo, hi, finer, marks)
    return [*plan(lo, a, finer, marks), (grain, a, b), *plan(b, hi, finer, marks)]


def _statement(segment: Segment, q: UsageQuery, org_id: str,
               filters: dict[str, Sequence[str | int]]) -> tuple[str, dict[str, object]]:
    grain, lo, hi = segment
    w = WIDTH_MS[q.width]
    groups = "".join(f", {c}" for c in q.group_by)
    params: dict[str, object] = {"org": org_id, "lo": lo, "hi": hi}
    where = ""
    for column, values in filters.items():  # column names come from the FILTERS table, never the caller
        where += f" AND {column} IN :f_{column}"
        params[f"f_{column}"] = list(values)
    if grain is None:
        sql = (f"SELECT (created_at / {w}) * {w} AS b{groups}, {_RAW_METRICS} FROM usage_records"
               f" WHERE org_id = :org AND created_at >= :lo AND created_at < :hi{where} GROUP BY b{groups}")
    else:
        sql = (f"SELECT (bucket_start / {w}) * {w} AS b{groups}, {_ROLLUP_METRICS} FROM usage_rollups"
               " WHERE grain = :grain AND org_id = :org AND bucket_start >= :lo"
               f" AND bucket_start < :hi{where}"
               f" GROUP BY b{groups}")
        params["grain"] = grain
    return sql, params


async def aggregate(conn: AsyncConnection, org_id: str, q: UsageQuery, lo: int, hi: int,
                    allowed_projects: Sequence[str] | None) -> dict[Key, list[int]] | None:
    """Sums per (bucket, group) over [lo, hi); None when the scope leaves nothing to see."""
    filters: dict[str, Sequence[str | int]] = dict(q.filters)
    if allowed_projects is not None:
        wanted = set(filters.get("project_id", allowed_projects))
        filters["project_id"] = sorted(wanted & set(allowed_projects))
    if any(not values for values in filters.values()):
        return None
    w = WIDTH_MS[q.width]
    grains = [(g, ms) for g, ms in sorted(GRAIN_MS.items(), key=lambda kv: -kv[1]) if ms <= w and w % ms == 0]
    marks = await watermarks(conn) if grains else {}
    sums: dict[Key, list[int]] = {}
    for segment in plan(lo, hi, grains, marks):
        sql, params = _statement(segment, q, org_id, filters)
        lists: list[BindParameter[Any]] = [bindparam(k, expanding=True) for k in params if k.startswith("f_")]
        statement = text(sql).bindparams(*lists)
        for row in await conn.execute(statement, params):
            n = len(q.group_by)
            key: Key = (int(row[0]), tuple(row[1:1 + n]))
            values = [int(v or 0) for v in row[1 + n:]]
            acc = sums.get(key)
            if acc is None:
                sums[key] = values
            else:
                for i, v in enumerate(values):
                    acc[i] += v
    return sums


def _result(q: UsageQuery, groups: tuple[str | int, ...], m: list[int]) -> UsageResult:
    named = dict(zip(q.group_by, groups, strict=True))
    bins = m[N_METRICS:]
    by_name = {name: named.get(column) for name, column in GROUPS.items()}
    return UsageResult(
        num_model_requests=m[0], num_errors=m[1], input_tokens=m[2], input_cached_tokens=m[3],
        input_uncached_tokens=m[2] - m[3], output_tokens=m[4],
        spend=Spend(value=format_usd(m[5]), nanos=m[5]),
        latency_ms=Latency(p50=percentile(bins, 50), p95=percentile(bins, 95), p99=percentile(bins, 99)),
        project_id=_str(by_name["project_id"]), api_key_id=_str(by_name["api_key_id"]),
        model=_str(by_name["model"]), endpoint=_str(by_name["endpoint"]),
        status=None if by_name["status"] is None else int(by_name["status"]))


def _str(value: str | int | None) -> str | None:
    return None if value is None else str(value)


async def run_query(conn: AsyncConnection, org_id: str, q: UsageQuery,
                    allowed_projects: Sequence[str] | None) -> UsagePage:
    """One page of buckets: `q.limit` buckets from `q.page_start_ms`, empty buckets included."""
    w = WIDTH_MS[q.width]
    page_end = q.page_start_ms + q.limit * w
    lo, hi = max(q.start_ms, q.page_start_ms), min(q.end_ms, page_end)
    sums = await aggregate(conn, org_id, q, lo, hi, allowed_projects) or {}
    per_bucket: dict[int, list[tuple[tuple[str | int, ...], list[int]]]] = {}
    for (bucket, groups), metrics in sums.items():
        per_bucket.setdefault(bucket, []).append((groups, metrics))
    data = []
    for bucket in range(q.page_start_ms, hi, w):
        rows = sorted(per_bucket.get(bucket, []), key=lambda gm: tuple(str(v) for v in gm[0]))
        data.append(UsageBucket(start_time=max(bucket, q.start_ms) // 1000,
                                end_time=min(bucket + w, q.end_ms) // 1000,
                                results=[_result(q, g, m) for g, m in rows]))
    has_more = page_end < q.end_ms
    return UsagePage(data=data, has_more=has_more, next_page=encode_page(page_end) if has_more else None)
