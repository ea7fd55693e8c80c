"""Model views for `/v1/models`: OpenAI's list/object shape extended with pricing, capabilities,
context window and latency bands (p50/p95 from the platform's own traffic; null until there is any).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.money import format_usd
from core.rows import columns, rows_as

__all__ = ["ModelList", "ModelObject", "ModelRow", "Pricing", "latency_bands", "list_models"]


class Pricing(msgspec.Struct, kw_only=True):
    currency: Literal["USD"] = "USD"
    unit: Literal["per_million_tokens"] = "per_million_tokens"
    input: str
    cached_input: str
    output: str
    version: int
    effective_at: int


class Latency(msgspec.Struct, kw_only=True):
    p50_ms: int
    p95_ms: int
    window: str
    samples: int


class ModelObject(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    display_name: str
    description: str
    kind: str
    alias_of: str | None
    context_window: int
    max_output_tokens: int
    capabilities: dict[str, Any]
    pricing: Pricing
    latency: Latency | None
    status: str


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelObject]


async def list_models(conn: AsyncConnection, patterns: list[str] | None = None,
                      now_ms: int | None = None) -> list[ModelObject]:
    """Every priced, enabled model and alias, filtered by a key's model patterns when given."""
    import time

    now = now_ms if now_ms is not None else int(time.time() * 1000)
    prices: dict[str, Pricing] = {}
    for p in rows_as(_PriceRow, await conn.execute(text(
            f"SELECT {columns(_PriceRow)} FROM price_cards WHERE effective_at <= :now"
            " ORDER BY model_id, effective_at, version"), {"now": now})):
        prices[p.model_id] = Pricing(input=format_usd(p.input_nanos_per_mtok),
                                     cached_input=format_usd(p.cached_input_nanos_per_mtok),
                                     output=format_usd(p.output_nanos_per_mtok), version=p.version,
                                     effective_at=p.effective_at // 1000)
    out: list[ModelObject] = []
    models: dict[str, ModelRow] = {}
    for r in rows_as(ModelRow, await conn.execute(text(
            f"SELECT {columns(ModelRow)} FROM models WHERE status != 'disabled' ORDER BY id"))):
        if r.id not in prices:
            continue  # never served without a price card, so never listed
        models[r.id] = r
        out.append(_object(r.id, None, r, prices[r.id]))
    for alias, target in await conn.execute(text("SELECT alias, model_id FROM routes ORDER BY alias")):
        if str(target) in models:
            out.append(_object(str(alias), str(target), models[str(target)], prices[str(target)]))
    if patterns is not None:
        out = [m for m in out if any(fnmatch.fnmatchcase(n, p) for p in patterns
                                     for n in (m.id, m.alias_of or m.id))]
    return out


class _PriceRow(msgspec.Struct, frozen=True):
    model_id: str
    version: int
    input_nanos_per_mtok: int
    cached_input_nanos_per_mtok: int
    output_nanos_per_mtok: int
    effective_at: int


class ModelRow(msgspec.Struct, frozen=True):
    """A models row as stored (capabilities as JSON text, times in milliseconds): read by the public
    listing here and by the operator's model admin (model_admin.py)."""

    id: str
    display_name: str
    description: str
    backend_id: str
    upstream_name: str
    kind: str
    context_window: int
    max_output_tokens: int
    capabilities: str
    status: str
    created_at: int
    updated_at: int


def _object(name: str, alias_of: str | None, r: ModelRow, pricing: Pricing) -> ModelObject:
    return ModelObject(
        id=name, created=r.created_at // 1000, owned_by=r.backend_id, display_name=r.display_name,
        description=r.description, kind=r.kind, alias_of=alias_of, context_window=r.context_window,
        max_output_tokens=r.max_output_tokens, capabilities=msgspec.json.decode(r.capabilities), pricing=pricing,
        latency=None, status=r.status)


LATENCY_WINDOW_MS = 3_600_000


async def latency_bands(conn: AsyncConnection, now_ms: int) -> dict[str, Latency]:
    """p50/p95 total latency per model over the last hour of the platform's own successful
    requests, from the same log-binned histogram as /v1/usage (within about 19% of the exact
    percentile). A model with no traffic in the window has no band: none is ever invented."""
    from control_plane.usage.histogram import BINS, percentile, raw_bin_sums

    rows = await conn.execute(text(
        f"SELECT model_id, COUNT(latency_ms) AS samples, {raw_bin_sums()} FROM usage_records"
        " WHERE created_at >= :since AND status < 400 AND latency_ms IS NOT NULL GROUP BY model_id"),
        {"since": now_ms - LATENCY_WINDOW_MS})
    bands: dict[str, Latency] = {}
    for r in rows:
        counts = [int(c or 0) for c in r[2:2 + BINS]]
        p50, p95 = percentile(counts, 50), percentile(counts, 95)
        if p50 is not None and p95 is not None:
            bands[str(r.model_id)] = Latency(p50_ms=p50, p95_ms=p95, window="1h", samples=int(r.samples))
    return bands
