"""A platform on the provider simulator with route groups made through the management API.

Targets are catalog models on the simulator with their own upstream names, so one request's
`[[sim model=<upstream> ...]]` directive makes one target fail while another answers. Targets are
ejected after 2 failures in a row for 1 s here (NX_ROUTE_EJECT_*), so readmission is seen quickly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.inference.support import SimPlatform, start_sim_platform

CHEAP = {"input_nanos_per_mtok": 1_000_000_000, "cached_input_nanos_per_mtok": 500_000_000,
         "output_nanos_per_mtok": 2_000_000_000}
DEAR = {"input_nanos_per_mtok": 5_000_000_000, "cached_input_nanos_per_mtok": 2_500_000_000,
        "output_nanos_per_mtok": 10_000_000_000}
TARGETS = {
    # model id: (backend, upstream name, price). Each test has targets of its own, so that the
    # health one test leaves behind (an ejection) never changes another's plan.
    "r/a": ("sim", "route-a", CHEAP), "r/b": ("sim", "route-b", DEAR), "r/c": ("sim", "route-c", CHEAP),
    "r/dead": ("dead", "nobody", CHEAP), "r/slow": ("sim_slow", "route-slow", CHEAP),
    "r/f500": ("sim", "route-f500", CHEAP), "r/f429": ("sim", "route-f429", CHEAP),
    "r/d1": ("sim", "route-d1", CHEAP), "r/d2": ("sim", "route-d2", DEAR),
    "r/p1": ("sim", "route-p1", CHEAP), "r/p2": ("sim", "route-p2", CHEAP),
    "r/mc": ("sim", "route-mc", CHEAP), "r/md": ("sim", "route-md", DEAR),
    "r/q1": ("sim", "route-q1", CHEAP), "r/q2": ("sim", "route-q2", CHEAP), "r/q3": ("sim", "route-q3", DEAR),
    "r/s1": ("sim", "route-s1", CHEAP), "r/s2": ("sim", "route-s2", CHEAP),
    "r/m1": ("sim", "route-m1", CHEAP), "r/m2": ("sim", "route-m2", CHEAP),
    "r/w1": ("sim", "route-w1", CHEAP), "r/w2": ("sim", "route-w2", CHEAP), "r/wide": ("sim", "route-wide", DEAR),
}
WIDE = {"r/wide": 100_000}
"""Context windows other than 8192."""


async def put_route(sp: SimPlatform, alias: str, **body: Any) -> dict[str, Any]:
    async with sp.platform.admin() as a:
        r = await a.put(f"/api/routes/{alias}", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
async def rp() -> AsyncIterator[SimPlatform]:
    running = await start_sim_platform(env={"NX_ROUTE_EJECT_AFTER": "2", "NX_ROUTE_EJECT_SECONDS": "1"})
    try:
        async with running.platform.admin() as a:
            for model_id, (backend, upstream, price) in TARGETS.items():
                r = await a.post("/api/models", json={
                    "id": model_id, "display_name": model_id, "backend": backend, "upstream_name": upstream,
                    "kind": "text", "context_window": WIDE.get(model_id, 8192), "max_output_tokens": 256,
                    "capabilities": {"streaming": True}, "price": price})
                assert r.status_code == 201, r.text
        yield running
    finally:
        await running.stop()
