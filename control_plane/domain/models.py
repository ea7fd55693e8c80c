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

__all__ = ["ModelList", "ModelObject", "Pricing", "latency_bands", "list_models"]


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
    for r in await conn.execute(text(
            "SELECT model_id, version, input_nanos_per_mtok, cached_input_nanos_per_mtok,"
            " output_nanos_per_mtok, effective_at FROM price_cards WHERE effective_at <= :now"
            " ORDER BY model_id, effective_at, version"), {"now": now}):
        prices[str(r[0])] = Pricing(input=format_usd(int(r[2])), cached_input=format_usd(int(r[3])),
                                    output=format_usd(int(r[4])), version=int(r[1]),
                                    effective_at=int(r[5]) // 1000)
    out: list[ModelObject] = []
    models = {}
    for r in await conn.execute(text(
            "SELECT id, display_name, description, backend_id, kind, context_window, max_output_tokens,"
            " capabilities, status, created_at FROM models WHERE status != 'disabled' ORDER BY id")):
        mid = str(r[0])
        if mid not in prices:
            continue  # never served without a price card, so never listed
        models[mid] = r
        out.append(_object(mid, None, r, prices[mid]))
    for alias, target in await conn.execute(text("SELECT alias, model_id FROM routes ORDER BY alias")):
        if str(target) in models:
            out.append(_object(str(alias), str(target), models[str(target)], prices[str(target)]))
    if patterns is not None:
        out = [m for m in out if any(fnmatch.fnmatchcase(n, p) for p in patterns
                                     for n in (m.id, m.alias_of or m.id))]
    return out


def _object(name: str, alias_of: str | None, r: Any, pricing: Pricing) -> ModelObject:
    return ModelObject(
        id=name, created=int(r[9]) // 1000, owned_by=str(r[3]), display_name=str(r[1]),
        description=str(r[2]), kind=str(r[4]), alias_of=alias_of, context_window=int(r[5]),
        max_output_tokens=int(r[6]), capabilities=msgspec.json.decode(str(r[7])), pricing=pricing,
        latency=None, status=str(r[8]))


LATENCY_WINDOW_MS = 3_600_000


async def latency_bands(conn: AsyncConnection, now_ms: int) -> dict[str, Latency]:
    """p50/p95 total latency per model over the last hour of the platform's own successful
    requests, from the same log-binned histogram as /v1/usage (within about 19% of the exact
    percentile). A model with no traffic in the window has no band: none is ever invented."""
    from control_plane.usage.histogram import BINS, percentile, raw_bin_sums

    rows = await conn.execute(text(
        f"SELECT model_id, COUNT(latency_ms), {raw_bin_sums()} FROM usage_records"
        " WHERE created_at >= :since AND status < 400 AND latency_ms IS NOT NULL GROUP BY model_id"),
        {"since": now_ms - LATENCY_WINDOW_MS})
    bands: dict[str, Latency] = {}
    for r in rows:
        counts = [int(c or 0) for c in r[2:2 + BINS]]
        p50, p95 = percentile(counts, 50), percentile(counts, 95)
        if p50 is not None and p95 is not None:
            bands[str(r[0])] = Latency(p50_ms=p50, p95_ms=p95, window="1h", samples=int(r[1]))
    return bands
