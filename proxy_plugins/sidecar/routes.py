"""The routing part of the check: which targets a request may reach, and what the hold must cover.

A request for a route group (core/routeplan.py), or one that names its own fallbacks in a
`models` array (OpenRouter's field), may be answered by any target of its plan. The sidecar
refuses a `models` entry the key may not use (403 `model_not_allowed`, naming it) or that does
not exist (404), before anything is reserved; and sizes the hold for the priciest target, each
estimated with its own context window and output cap, so a pricier fallback never escapes the
budget. The adapter tries targets only from this plan (`x-nx-plan`). The request's `provider`
preferences narrow or reorder the plan (preferences.py).
"""

from __future__ import annotations

import msgspec

from core.errors import ApiError
from core.money import request_cost
from core.routeplan import MAX_TARGETS, encode_plan
from core.snapshot import KeyRecord, ModelRecord, Snapshot
from proxy_plugins.sidecar import preferences
from proxy_plugins.sidecar.estimate import EstimateFields, estimate_from

__all__ = ["Routed", "route_plan"]


class Routed(msgspec.Struct, frozen=True):
    header: str
    """`x-nx-plan`."""
    cover: int
    """Nano-dollars: the most the priciest target of the plan can cost this request."""


def _extra(fields: EstimateFields, key: KeyRecord, snap: Snapshot) -> tuple[str, ...] | ApiError:
    models = fields.models
    if models is None:
        return ()
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models) \
            or len(models) > MAX_TARGETS:
        return ApiError("invalid_request_error", f"'models' must be an array of at most {MAX_TARGETS} model "
                        "names.", "models")
    for i, name in enumerate(models):
        shown = name if len(name) <= 200 else name[:200] + "..."
        model = snap.resolve(name)
        if model is None:
            return ApiError("model_not_found", f"models[{i}]: the model '{shown}' does not exist or you do not "
                            "have access to it.", "models")
        if not key.allows_model(name, model.id):
            return ApiError("model_not_allowed", f"models[{i}]: this API key is not allowed to use model "
                            f"'{shown}' (scope: models).", "models")
    return tuple(models)


def _worst(model: ModelRecord, fields: EstimateFields, body_bytes: int, endpoint: str) -> int:
    price = model.price
    if price is None:
        return 0
    est = estimate_from(fields, body_bytes, model, endpoint)
    i, o = est.input_tokens, est.output_tokens
    return max(request_cost(i, c, o, price.input_nanos_per_mtok, price.cached_input_nanos_per_mtok,
                            price.output_nanos_per_mtok) for c in (0, i))


def route_plan(key: KeyRecord, snap: Snapshot, name: str, model: ModelRecord, fields: EstimateFields,
               body_bytes: int, endpoint: str) -> Routed | ApiError | None:
    """None: one target (the usual case, nothing to add); else the plan and the hold's cover."""
    if fields.models is None and fields.provider is None and name not in snap.routes:
        return None
    extra = _extra(fields, key, snap)
    if isinstance(extra, ApiError):
        return extra
    tiers = snap.plan(name, extra, model.kind)
    latency = False
    prefs = preferences.parse(fields.provider)
    if isinstance(prefs, ApiError):
        return prefs
    if prefs is not None:
        applied = preferences.apply(tiers, prefs, snap)
        if isinstance(applied, ApiError):
            return applied
        tiers, latency = applied
    ids = [m for tier in tiers for m in tier]
    if len(ids) <= 1 and (not ids or ids[0] == model.id):
        return None
    cover = max(_worst(snap.models[m], fields, body_bytes, endpoint) for m in ids)
    return Routed(encode_plan(tiers, snap.version) + (preferences.LATENCY_SUFFIX if latency else ""), cover)
