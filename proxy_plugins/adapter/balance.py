"""The order in which a routed request tries its targets: balancing within a tier, health across.

Within one tier (one priority of a group) the group's strategy orders the targets:
- `weighted`: a weighted random order (Efraimidis-Spirakis: each target draws u^(1/weight) and
  the largest goes first), so the first pick follows the weights and the rest are the fallbacks
  in weighted order; a weight of 0 is only a fallback.
- `least_outstanding`: fewest requests this process has in flight to the target first.
- `latency`: lowest recent time to first byte first (EWMA, alpha 0.3), a target with no
  measurement yet first of all, so every target gets measured.
Ties are broken at random. Tiers keep their order (a higher priority is a fallback), and every
target ejected by the health check (health.py) moves behind all admitted ones, soonest
readmission first: it is tried only when everything admitted has failed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from core.routeplan import RoutePolicy, Strategy
from proxy_plugins.adapter.health import Health

__all__ = ["Balancer", "weights_of"]

ALPHA = 0.3


class Balancer:
    def __init__(self, health: Health, rng: random.Random | None = None) -> None:
        self.health = health
        self.rng = rng or random.Random()
        self.outstanding: dict[str, int] = {}
        self.ewma_ms: dict[str, float] = {}

    def started(self, target: str) -> None:
        self.outstanding[target] = self.outstanding.get(target, 0) + 1

    def ended(self, target: str) -> None:
        left = self.outstanding.get(target, 1) - 1
        if left > 0:
            self.outstanding[target] = left
        else:
            self.outstanding.pop(target, None)

    def measured(self, target: str, ms: float) -> None:
        old = self.ewma_ms.get(target)
        self.ewma_ms[target] = ms if old is None else old + ALPHA * (ms - old)

    def order_tier(self, tier: list[str], strategy: Strategy, weights: Mapping[str, int]) -> list[str]:
        rng = self.rng
        if strategy == "least_outstanding":
            return sorted(tier, key=lambda t: (self.outstanding.get(t, 0), rng.random()))
        if strategy == "latency":
            return sorted(tier, key=lambda t: (self.ewma_ms.get(t, -1.0), rng.random()))

        def key(t: str) -> float:
            w = weights.get(t, 1)
            return rng.random() ** (1.0 / w) if w > 0 else -rng.random()

        return sorted(tier, key=key, reverse=True)

    def order(self, tiers: list[list[str]], strategies: Mapping[str, Strategy], weights: Mapping[str, int],
              now: float) -> list[str]:
        """Every target of the plan, in the order to try them."""
        admitted: list[str] = []
        ejected: list[str] = []
        for tier in tiers:
            strategy = strategies.get(tier[0], "weighted")
            for t in self.order_tier(tier, strategy, weights) if len(tier) > 1 else tier:
                (ejected if self.health.ejected(t, now) else admitted).append(t)
        ejected.sort(key=self.health.readmits_at)
        return admitted + ejected


def weights_of(name: str, routes: Mapping[str, RoutePolicy]) -> tuple[dict[str, int], dict[str, Strategy]]:
    """Each target's weight and its group's strategy, from the group `name` and the groups it falls
    back to (the first group naming a target wins)."""
    weights: dict[str, int] = {}
    strategies: dict[str, Strategy] = {}
    queue, seen = [name], set()
    while queue:
        group = queue.pop(0)
        policy = routes.get(group)
        if group in seen or policy is None:
            continue
        seen.add(group)
        for t in policy.targets:
            weights.setdefault(t.model, t.weight)
            strategies.setdefault(t.model, policy.strategy)
        queue.extend(policy.fallbacks)
    return weights, strategies
