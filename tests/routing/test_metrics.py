"""Issue 19 over issue 16: routed requests' attempts and their targets' circuits on the adapter's
/metrics (docs/observability.md), from the real edge, adapter and simulator."""

from __future__ import annotations

from tests.inference.helpers import chat_body, marker
from tests.inference.support import SimPlatform
from tests.observability.scrape import sample, scrape
from tests.routing.conftest import put_route


async def test_attempts_and_circuit_states_are_exposed(rp: SimPlatform) -> None:
    await put_route(rp, "obs-route", targets=[{"model": "r/m1", "priority": 0}, {"model": "r/m2", "priority": 1}])
    body = chat_body(f"{marker()} [[sim model=route-m1 status=500]]", "obs-route")
    async with rp.platform.client() as c:
        for _ in range(2):  # two failures in a row eject r/m1 here (NX_ROUTE_EJECT_AFTER=2)
            r = await c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200 and r.headers["x-model"] == "r/m2", r.text
    s = rp.platform.s
    exposed = await scrape(f"http://{s.adapter_host}:{s.adapter_port}")
    assert sample(exposed, "nx_routing_attempts_total", model="r/m2", backend="sim", outcome="answered") == 2
    failed = sample(exposed, "nx_routing_attempts_total", model="r/m1", backend="sim")
    assert failed == 2 and sample(exposed, "nx_routing_attempts_total", model="r/m1", outcome="answered") == 0
    # Ejected for 1 s here, then half-open: either way no longer closed.
    assert sample(exposed, "nx_routing_circuit_state", target="r/m1") in (1, 2)
    assert sample(exposed, "nx_routing_circuit_state", target="r/m2") == 0
