"""Envoy's share of routing: an adapter process that refuses connections is skipped for another
(connect-failure retry on the adapter route, envoy/routes.yaml), so no request fails for it."""

from __future__ import annotations

from tests.harness import free_port_run
from tests.inference.helpers import chat_body
from tests.inference.support import start_sim_platform


async def test_a_dead_adapter_process_costs_no_request() -> None:
    sp = await start_sim_platform(env={"NX_ADAPTER_PROCESSES": "2", "NX_ADAPTER_PORT": str(free_port_run(2))})
    try:
        [second] = [c for c in sp.platform.started if c.name == "adapter-2"]
        assert second.proc is not None
        second.proc.kill()
        await second.proc.wait()
        async with sp.platform.client() as c:
            statuses = [(await c.post("/v1/chat/completions", json=chat_body("hi", "sim/chat"))).status_code
                        for _ in range(20)]
        assert statuses == [200] * 20
    finally:
        await sp.stop()
