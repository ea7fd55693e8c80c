"""A brute-force `/v1/usage`: the answer computed in Python from every raw usage record, written
independently of control_plane/usage/query.py (no SQL, no rollups) to check it against."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.usage.histogram import BINS, bin_of, percentile
from control_plane.usage.model import WIDTH_MS, Latency, Spend, UsageQuery, UsageResult
from core.db import read_tx
from core.money import format_usd

# group_by name -> attribute of Row
FIELDS = {"project_id": "project_id", "key_id": "key_id", "model_id": "model_id", "endpoint": "endpoint",
          "status": "status"}


@dataclass(frozen=True)
class Row:
    created_at: int
    project_id: str
    key_id: str
    model_id: str
    endpoint: str
    status: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_nanos: int
    latency_ms: int | None


async def rows_of(engine: AsyncEngine, org_id: str) -> list[Row]:
    async with read_tx(engine) as conn:
        result = await conn.execute(text(
            "SELECT created_at, project_id, key_id, model_id, endpoint, status, input_tokens, cached_tokens,"
            " output_tokens, cost_nanos, latency_ms FROM usage_records WHERE org_id = :o"), {"o": org_id})
        return [Row(*r) for r in result]


def _result(group: dict[str, str | int], rows: Sequence[Row]) -> UsageResult:
    bins = [0] * BINS
    for r in rows:
        if r.latency_ms is not None:
            bins[bin_of(r.latency_ms)] += 1
    cost = sum(r.cost_nanos for r in rows)
    inp, cached = sum(r.input_tokens for r in rows), sum(r.cached_tokens for r in rows)
    status = group.get("status")
    return UsageResult(
        num_model_requests=len(rows), num_errors=sum(1 for r in rows if r.status >= 400), input_tokens=inp,
        input_cached_tokens=cached, input_uncached_tokens=inp - cached,
        output_tokens=sum(r.output_tokens for r in rows), spend=Spend(value=format_usd(cost), nanos=cost),
        latency_ms=Latency(p50=percentile(bins, 50), p95=percentile(bins, 95), p99=percentile(bins, 99)),
        project_id=_s(group.get("project_id")), api_key_id=_s(group.get("key_id")),
        model=_s(group.get("model_id")), endpoint=_s(group.get("endpoint")),
        status=None if status is None else int(status))


def _s(v: str | int | None) -> str | None:
    return None if v is None else str(v)


def expected_buckets(rows: Sequence[Row], q: UsageQuery,
                     allowed: Sequence[str] | None) -> list[tuple[int, int, list[UsageResult]]]:
    """Every bucket of the whole range (all pages), each with its results in the API's order."""
    w = WIDTH_MS[q.width]
    kept = [r for r in rows if q.start_ms <= r.created_at < q.end_ms
            and all(getattr(r, FIELDS[c]) in vals for c, vals in q.filters.items())
            and (allowed is None or r.project_id in allowed)]
    out = []
    for b in range(q.start_ms // w * w, q.end_ms, w):
        lo, hi = max(b, q.start_ms), min(b + w, q.end_ms)
        groups: dict[tuple[str | int, ...], list[Row]] = {}
        for r in kept:
            if lo <= r.created_at < hi:
                groups.setdefault(tuple(getattr(r, FIELDS[c]) for c in q.group_by), []).append(r)
        results = [_result(dict(zip(q.group_by, g, strict=True)), groups[g])
                   for g in sorted(groups, key=lambda g: tuple(str(v) for v in g))]
        out.append((lo // 1000, hi // 1000, results))
    return out
