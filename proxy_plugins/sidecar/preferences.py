"""A request's provider preferences (OpenRouter's `provider` object) applied to its route plan.

Here a provider is a backend (`backends.id`): the preferences narrow or reorder the targets the
route group and the `models` array gave, never widen them, so a key can only reach what its
scopes already allow.
- `only` / `ignore`: keep only targets on these backends / drop targets on these backends;
- `order`: targets on these backends first, in this order (each its own tier), then the rest;
- `allow_fallbacks: false`: only the first tier (with `order`: only the backends it names);
- `sort`: `price` orders all targets by their price card (input plus output, cheapest first);
  `latency` lets the adapter order them by recent time to first byte (one tier, the plan header
  ends in `@latency`);
- `max_price`: `{"prompt": USD, "completion": USD}` per million tokens; dearer targets are left out.
A preference that leaves no target is refused (400, param `provider`), as is a malformed one.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from core.errors import ApiError
from core.routeplan import LATENCY_SUFFIX
from core.snapshot import Snapshot

__all__ = ["LATENCY_SUFFIX", "Preferences", "apply", "parse"]

Names = Annotated[list[Annotated[str, msgspec.Meta(max_length=100)]], msgspec.Meta(max_length=32)]


class MaxPrice(msgspec.Struct, forbid_unknown_fields=True):
    prompt: float | None = None
    completion: float | None = None


class Preferences(msgspec.Struct, forbid_unknown_fields=True):
    order: Names | None = None
    only: Names | None = None
    ignore: Names | None = None
    allow_fallbacks: bool = True
    sort: Literal["price", "latency"] | None = None
    max_price: MaxPrice | None = None


def parse(raw: object) -> Preferences | ApiError | None:
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, Preferences)
    except msgspec.ValidationError as exc:
        return ApiError("invalid_request_error", f"'provider' is not valid: {str(exc)[:300]}", "provider")


def apply(tiers: list[list[str]], prefs: Preferences, snap: Snapshot) -> tuple[list[list[str]], bool] | ApiError:
    """(tiers, order by latency) after the preferences."""
    def backend(m: str) -> str:
        return snap.models[m].backend_id

    def fits(m: str) -> bool:
        model = snap.models[m]
        if prefs.only is not None and model.backend_id not in prefs.only:
            return False
        if prefs.ignore is not None and model.backend_id in prefs.ignore:
            return False
        cap, price = prefs.max_price, model.price
        if cap is not None and price is not None:
            if cap.prompt is not None and price.input_nanos_per_mtok > cap.prompt * 1e9:
                return False
            if cap.completion is not None and price.output_nanos_per_mtok > cap.completion * 1e9:
                return False
        return True

    tiers = [kept for tier in tiers if (kept := [m for m in tier if fits(m)])]
    if prefs.order:
        flat = [m for tier in tiers for m in tier]
        first = [[m for m in flat if backend(m) == b] for b in prefs.order]
        rest = [[m for m in tier if backend(m) not in prefs.order] for tier in tiers]
        tiers = [t for t in first if t] + ([] if not prefs.allow_fallbacks else [t for t in rest if t])
    elif not prefs.allow_fallbacks:
        tiers = tiers[:1]
    latency = prefs.sort == "latency"
    if prefs.sort is not None:
        flat = [m for tier in tiers for m in tier]
        if prefs.sort == "price":
            def cost(m: str) -> int:
                p = snap.models[m].price
                return 0 if p is None else p.input_nanos_per_mtok + p.output_nanos_per_mtok
            tiers = [[m] for m in sorted(flat, key=cost)]
        else:
            tiers = [flat] if flat else []
    if not tiers:
        return ApiError("invalid_request_error", "No target of this model fits the request's 'provider' "
                        "preferences.", "provider")
    return tiers, latency
