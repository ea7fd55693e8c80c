"""Route groups as platform teams save them: an alias -> targets with weights and priorities.

A save is refused (400, naming the field) when a target is not a catalog model, when targets mix
text and embedding models, when a target appears twice, when a fallback names nothing, and when
the fallbacks would form a cycle or a chain deeper than `routeplan.MAX_DEPTH` groups: a cyclic
graph, taken at request time, is how a fallback loop takes a replica down. The route's `model_id`
stays the first target of the lowest priority, so everything that knows an alias as one model
(the model list, the sidecar's model check, the key's allow-list) keeps working unchanged.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.domain.catalog import Alias
from core.db import now_ms
from core.errors import ApiError
from core.routeplan import MAX_TARGETS, RoutePolicy, Strategy, Target, check_graph
from core.rows import columns, rows_as

__all__ = ["RouteSet", "RouteView", "policy_of", "save_route", "view"]


class RouteSet(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PUT /api/routes/{alias} and `nx routes set`: one `model`, or a group of `targets`."""

    model: str | None = None
    targets: list[Target] | None = None
    strategy: Strategy = "weighted"
    fallbacks: list[str] = msgspec.field(default_factory=list)
    max_attempts: int = 3
    max_added_ms: int = 10_000
    context_fallback: bool = False


class RouteView(msgspec.Struct, kw_only=True):
    alias: str
    object: Literal["route"] = "route"
    model: str
    """The primary target (the first of the lowest priority), or the route's one model."""
    strategy: Strategy = "weighted"
    targets: list[Target] = msgspec.field(default_factory=list)
    fallbacks: list[str] = msgspec.field(default_factory=list)
    max_attempts: int = 3
    max_added_ms: int = 10_000
    context_fallback: bool = False
    updated_at: int


def _invalid(param: str, message: str) -> ApiError:
    return ApiError("invalid_request_error", f"{param}: {message}", param=param)


def policy_of(text_value: str) -> RoutePolicy:
    return msgspec.json.decode(text_value or "{}", type=RoutePolicy)


def view(alias: str, model_id: str, policy_text: str, updated_ms: int) -> RouteView:
    p = policy_of(policy_text)
    targets = list(p.targets) or [Target(model=model_id)]
    return RouteView(alias=alias, model=model_id, strategy=p.strategy, targets=targets,
                     fallbacks=list(p.fallbacks), max_attempts=p.max_attempts, max_added_ms=p.max_added_ms,
                     context_fallback=p.context_fallback, updated_at=updated_ms // 1000)


class _Kind(msgspec.Struct, frozen=True):
    id: str
    kind: str


class _Policy(msgspec.Struct, frozen=True):
    alias: str
    policy: str


async def _kinds(conn: AsyncConnection, model_ids: list[str]) -> dict[str, str]:
    names = ", ".join(f":m{i}" for i in range(len(model_ids)))
    rows = await conn.execute(text(f"SELECT {columns(_Kind)} FROM models WHERE id IN ({names})"),
                              {f"m{i}": m for i, m in enumerate(model_ids)})
    return {k.id: k.kind for k in rows_as(_Kind, rows)}


async def _policy(conn: AsyncConnection, alias: str, data: RouteSet) -> tuple[str, RoutePolicy]:
    """(primary model id, policy) after every check but the graph's."""
    if data.targets is None and data.model is None:
        raise _invalid("targets", "give `model` (one target) or `targets` (a group)")
    targets = list(data.targets) if data.targets is not None else [Target(model=data.model or "")]
    if not targets or len(targets) > MAX_TARGETS:
        raise _invalid("targets", f"1 to {MAX_TARGETS} targets")
    ids = [t.model for t in targets]
    if len(set(ids)) != len(ids):
        raise _invalid("targets", "a model may be a target once per group")
    kinds = await _kinds(conn, ids)
    for i, model_id in enumerate(ids):
        if model_id not in kinds:
            raise ApiError("model_not_found", f"targets[{i}].model: no model {model_id!r}", param="targets")
    if len(set(kinds.values())) > 1:
        raise _invalid("targets", "a group's targets are all text models or all embedding models")
    if not 1 <= data.max_attempts <= MAX_TARGETS:
        raise _invalid("max_attempts", f"1 to {MAX_TARGETS}")
    if not 0 <= data.max_added_ms <= 600_000:
        raise _invalid("max_added_ms", "0 to 600000")
    for i, name in enumerate(data.fallbacks):
        if name == alias:
            raise _invalid("fallbacks", f"fallbacks form a cycle: {alias} -> {alias}")
        found = (await conn.execute(text("SELECT 1 FROM routes WHERE alias = :n UNION ALL"
                                         " SELECT 1 FROM models WHERE id = :n"), {"n": name})).first()
        if found is None:
            raise ApiError("model_not_found", f"fallbacks[{i}]: no route or model {name!r}", param="fallbacks")
    primary = min(targets, key=lambda t: t.priority).model  # min() keeps the first of equals
    single = data.targets is None and not data.fallbacks and data.strategy == "weighted" \
        and data.max_attempts == 3 and data.max_added_ms == 10_000 and not data.context_fallback
    policy = RoutePolicy() if single else RoutePolicy(
        strategy=data.strategy, targets=tuple(targets), fallbacks=tuple(data.fallbacks),
        max_attempts=data.max_attempts, max_added_ms=data.max_added_ms, context_fallback=data.context_fallback)
    return primary, policy


async def save_route(conn: AsyncConnection, alias: str, data: RouteSet) -> tuple[RouteView, dict[str, object]]:
    """Insert or replace the route; returns it and the audit details. The caller audits and bumps."""
    try:
        msgspec.convert(alias, Alias)
    except msgspec.ValidationError:
        raise _invalid("alias", "1-100 characters of letters, digits and . _ : -, starting with a letter or "
                       "digit") from None
    if (await conn.execute(text("SELECT 1 FROM models WHERE id = :a"), {"a": alias})).first():
        raise ApiError("conflict", f"{alias!r} is a model id and cannot also be an alias", param="alias")
    primary, policy = await _policy(conn, alias, data)
    others = {r.alias: policy_of(r.policy) for r in rows_as(_Policy, await conn.execute(
        text(f"SELECT {columns(_Policy)} FROM routes WHERE alias <> :a"), {"a": alias}))}
    cyclic = check_graph(alias, policy, others)
    if cyclic is not None:
        raise _invalid("fallbacks", cyclic)
    encoded = msgspec.json.encode(policy).decode() if policy != RoutePolicy() else "{}"
    now = now_ms()
    await conn.execute(text(
        "INSERT INTO routes (alias, model_id, policy, created_at, updated_at) VALUES (:a, :m, :p, :now, :now)"
        " ON CONFLICT (alias) DO UPDATE SET model_id = excluded.model_id, policy = excluded.policy,"
        " updated_at = excluded.updated_at"),
        {"a": alias, "m": primary, "p": encoded, "now": now})
    details: dict[str, object] = {"model": primary}
    if encoded != "{}":
        details["policy"] = msgspec.to_builtins(policy)
    return view(alias, primary, encoded, now), details
