"""Route plans, the fallback graph check and the balancer, in-process (no platform)."""

from __future__ import annotations

import random
import time

from core.routeplan import RoutePolicy, Target, check_graph, decode_plan, encode_plan, plan
from proxy_plugins.adapter.balance import Balancer
from proxy_plugins.adapter.health import Health


def _usable(model_id: str) -> str | None:
    return None if model_id.startswith("off/") else model_id


def _plan(name: str, routes: dict[str, RoutePolicy], extra: tuple[str, ...] = ()) -> list[list[str]]:
    return plan(name, extra, {}, routes, _usable)  # type: ignore[arg-type]


def test_weights_split_within_five_percent_over_1000_picks() -> None:
    balancer = Balancer(Health(), rng=random.Random(16))
    weights = {"m/a": 3, "m/b": 1, "m/c": 0}
    firsts = [balancer.order([["m/a", "m/b", "m/c"]], {"m/a": "weighted"}, weights, 0.0)[0] for _ in range(1000)]
    assert abs(firsts.count("m/a") / 1000 - 0.75) < 0.05
    assert abs(firsts.count("m/b") / 1000 - 0.25) < 0.05
    assert firsts.count("m/c") == 0, "weight 0: only a fallback"


def test_ejected_targets_go_last_but_are_never_dropped() -> None:
    health = Health(eject_after=1, eject_s=30)
    balancer = Balancer(health, rng=random.Random(1))
    health.failure("m/a", "upstream_error")
    assert balancer.order([["m/a"], ["m/b"]], {}, {}, 0.0)[-1] == "m/a"
    health.failure("m/b", "upstream_error")
    assert sorted(balancer.order([["m/a"], ["m/b"]], {}, {}, 0.0)) == ["m/a", "m/b"], "all failing: still tried"
    health.success("m/a")
    assert not health.ejected("m/a")


def test_growing_cool_down() -> None:
    health = Health(eject_after=1, eject_s=10)
    health.failure("m/a", "x")
    assert 9 < health.readmits_at("m/a") - time.time() <= 10
    health.state["m/a"].ejected_until = 0  # the cool-down passed: half-open
    health.failure("m/a", "x")  # one failure when half-open ejects again, for twice as long
    assert health.state["m/a"].ejections == 2 and 19 < health.readmits_at("m/a") - time.time() <= 20


def test_least_outstanding_and_latency() -> None:
    balancer = Balancer(Health(), rng=random.Random(2))
    balancer.started("m/a")
    assert balancer.order_tier(["m/a", "m/b"], "least_outstanding", {})[0] == "m/b"
    balancer.measured("m/a", 50)
    balancer.measured("m/b", 500)
    assert balancer.order_tier(["m/a", "m/b"], "latency", {})[0] == "m/a"


def test_plan_tiers_fallbacks_and_request_models() -> None:
    routes = {
        "g": RoutePolicy(targets=(Target(model="m/a"), Target(model="m/b", priority=1), Target(model="off/x")),
                         fallbacks=("h",)),
        "h": RoutePolicy(targets=(Target(model="m/c"), Target(model="m/a"))),
    }
    assert _plan("g", routes, ("m/d", "m/a")) == [["m/a"], ["m/b"], ["m/c"], ["m/d"]]
    assert decode_plan(encode_plan([["m/a", "m/b"], ["m/c:8b"]], 7)) == ([["m/a", "m/b"], ["m/c:8b"]], False, 7)
    assert decode_plan("m/a:1;m/b@latency") == ([["m/a:1"], ["m/b"]], True, 0)


def test_graph_check() -> None:
    routes = {"a": RoutePolicy(fallbacks=("b",)), "b": RoutePolicy(fallbacks=("c",))}
    assert check_graph("c", RoutePolicy(fallbacks=("a",)), routes) is not None
    assert check_graph("c", RoutePolicy(), routes) is None
    deep = {"a": RoutePolicy(fallbacks=("b",)), "b": RoutePolicy(fallbacks=("c",)),
            "c": RoutePolicy(fallbacks=("d",))}
    found = check_graph("d", RoutePolicy(fallbacks=("e",)), deep)
    assert found is not None and "deeper" in found
