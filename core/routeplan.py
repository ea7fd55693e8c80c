"""Route groups: a public model name -> ordered targets, and the plan one request may follow.

A route group is an alias (a platform-branded name) whose `policy` lists targets. A target is a
catalog model, i.e. a backend plus the upstream model name, with its own price card, context
window and capabilities; each has a `weight` and a `priority`. The adapter tries the lowest
priority first, balancing between the targets of one priority by the group's `strategy`
(proxy_plugins/adapter/balance.py), then falls back to the next priority, then to the groups named
in `fallbacks`, then to the request's own `models` array. Nothing here is random or stateful: the
sidecar and the adapter compute the same plan from the same snapshot, the sidecar's hold covers
every target in it (the priciest), and the adapter orders each tier by health and load.

`check_graph` refuses, at save time, a fallback graph with a cycle or deeper than `MAX_DEPTH`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

if TYPE_CHECKING:
    from core.snapshot import ModelRecord

__all__ = ["LATENCY_SUFFIX", "MAX_DEPTH", "MAX_TARGETS", "PLAN_SEPARATORS", "RoutePolicy", "Strategy", "Target",
           "check_graph", "decode_plan", "encode_plan", "plan"]

Strategy = Literal["weighted", "least_outstanding", "latency"]
MAX_DEPTH = 4
"""Groups one request may pass through by `fallbacks` (the group itself counts as one)."""
MAX_TARGETS = 16
"""Targets in one plan: the hold covers each, so a plan is kept short."""
PLAN_SEPARATORS = (";", ",")
"""`x-nx-plan`: tiers separated by `;`, the model ids of one tier by `,` (neither is in a model id)."""
LATENCY_SUFFIX = "@latency"
"""Ends an `x-nx-plan` whose request asked for `provider.sort: latency`: the adapter orders its one
tier by recent time to first byte, whatever the groups' strategies."""


class Target(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    """A catalog model id: its backend, upstream name and price card are the target's."""
    weight: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 1
    """Share of traffic within its priority (weighted strategy); 0: only when the others fail."""
    priority: Annotated[int, msgspec.Meta(ge=0, le=100)] = 0
    """Lower is tried first; a higher priority is a fallback."""


class RoutePolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    strategy: Strategy = "weighted"
    targets: tuple[Target, ...] = ()
    """Empty: the route's single model (routes.model_id), as before route groups existed."""
    fallbacks: tuple[str, ...] = ()
    """Other public names (aliases or model ids) tried after every target of this group."""
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=MAX_TARGETS)] = 3
    """Backend calls one request may make, all targets together (each target at most once)."""
    max_added_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 10_000
    """After a failure, no further attempt starts once this much time has passed."""
    context_fallback: bool = False
    """A context-length refusal moves on to a target with a larger context window."""


_NO_POLICY = RoutePolicy()


def _group_tiers(name: str, aliases: Mapping[str, str], routes: Mapping[str, RoutePolicy]) -> list[list[str]]:
    """One name's own tiers of model ids (no fallbacks): a group's targets by priority, else the
    name's single model."""
    policy = routes.get(name)
    if policy is None or not policy.targets:
        return [[aliases.get(name, name)]]
    by_priority: dict[int, list[str]] = {}
    for t in policy.targets:
        by_priority.setdefault(t.priority, []).append(t.model)
    return [by_priority[p] for p in sorted(by_priority)]


def plan(name: str, extra: Sequence[str], aliases: Mapping[str, str], routes: Mapping[str, RoutePolicy],
         usable: Callable[[str], ModelRecord | None]) -> list[list[str]]:
    """The tiers of model ids a request for `name` (then its `models` array, `extra`) may try, in
    order, each model once, unusable ones (unknown, disabled, unpriced, wrong kind) left out, at
    most MAX_TARGETS in all. Fallback groups are followed breadth-first to MAX_DEPTH."""
    tiers: list[list[str]] = []
    seen_models: set[str] = set()
    seen_groups: set[str] = set()
    count = 0
    queue: list[tuple[str, int]] = [(name, 1)] + [(n, 1) for n in extra]
    while queue and count < MAX_TARGETS:
        group, depth = queue.pop(0)
        if group in seen_groups or depth > MAX_DEPTH:
            continue
        seen_groups.add(group)
        for tier in _group_tiers(group, aliases, routes):
            kept = []
            for model_id in tier:
                if model_id not in seen_models and usable(model_id) is not None and count < MAX_TARGETS:
                    seen_models.add(model_id)
                    kept.append(model_id)
                    count += 1
            if kept:
                tiers.append(kept)
        policy = routes.get(group, _NO_POLICY)
        # A group's own fallbacks come before the names after it in the queue.
        queue[0:0] = [(f, depth + 1) for f in policy.fallbacks]
    return tiers


def encode_plan(tiers: list[list[str]], version: int = 0) -> str:
    """`<config version>:<tiers>`: the adapter reloads a snapshot older than the sidecar's, so
    both follow the same route policy (fallbacks, budget) right after a change."""
    return f"{version}:" + ";".join(",".join(t) for t in tiers)


def decode_plan(value: str) -> tuple[list[list[str]], bool, int]:
    """(tiers, whether to order by latency, the config version it was planned at)."""
    latency = value.endswith(LATENCY_SUFFIX)
    value = value.removesuffix(LATENCY_SUFFIX)
    # A model id has no ':' before its '/', so the first ':' ends the version when there is one.
    head, _, rest = value.partition(":")
    version = 0
    if head.isdigit():
        version, value = int(head), rest
    return [[m for m in tier.split(",") if m] for tier in value.split(";") if tier], latency, version


def check_graph(name: str, policy: RoutePolicy, routes: Mapping[str, RoutePolicy]) -> str | None:
    """Why saving `policy` under `name` would make a cyclic or too-deep fallback graph, or None.
    `routes`: every other saved group."""
    graph = {**routes, name: policy}

    def walk(node: str, path: list[str]) -> str | None:
        if node in path:
            return f"fallbacks form a cycle: {' -> '.join([*path[path.index(node):], node])}"
        if len(path) >= MAX_DEPTH:
            return f"fallbacks are deeper than {MAX_DEPTH} groups: {' -> '.join([*path, node])}"
        for nxt in graph.get(node, _NO_POLICY).fallbacks:
            found = walk(nxt, [*path, node])
            if found is not None:
                return found
        return None

    # Every group that can reach `name` (or `name` itself) may now close a cycle through it.
    for start in graph:
        found = walk(start, [])
        if found is not None and (start == name or name in found):
            return found
    return None
