"""Finding 3 of issue 12: a cancelled background response keeps the output it produced before the
cancel (as OpenAI's does: readable by GET, in its stored events and its final snapshot), and is
charged for it: the output counted as the worker produced it, the input counted by the backend."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.faults.metering_support import assert_books, books, cost, eventually, sp, tenant
from tests.inference.helpers import marker
from tests.inference.support import SimPlatform
from tests.responses.sse import read_stream

pytestmark = [pytest.mark.faults]
__all__ = ["sp"]


async def _status(c: httpx.AsyncClient, rid: str) -> dict[str, Any]:
    r = await c.get(f"/v1/responses/{rid}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize("model", ["sim-chat", "sim/claude"])
@pytest.mark.parametrize("after_s", [0.5, 2.0])
async def test_a_cancelled_background_response_is_charged_for_the_output_it_keeps(
        sp: SimPlatform, model: str, after_s: float) -> None:
    org, key = await tenant(sp)
    prompt = f"[[sim chunks=3000 chunk_ms=10]] cancel me {marker()}"
    async with sp.platform.client(key) as c:
        created = (await c.post("/v1/responses", json={"model": model, "input": prompt, "background": True})).json()
        rid = created["id"]

        async def running() -> bool:
            return (await _status(c, rid))["status"] == "in_progress"

        await eventually(running, "the worker runs the response")
        await asyncio.sleep(after_s)
        assert (await c.post(f"/v1/responses/{rid}/cancel")).json()["status"] == "cancelled"

        async def closed() -> bool:
            _, events, _ = await read_stream(c, "GET", f"/v1/responses/{rid}", params={"stream": "true"})
            return bool(events) and events[-1]["type"] == "error"

        await eventually(closed, "the worker wrote the cancelled response's last word")
        _, events, _ = await read_stream(c, "GET", f"/v1/responses/{rid}", params={"stream": "true"})
        final = await _status(c, rid)
    produced = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    deltas = sum(1 for e in events if e["type"] == "response.output_text.delta")
    assert final["status"] == "cancelled" and deltas > 0
    text = "".join(part["text"] for item in final["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")
    assert text == produced  # the output it keeps is exactly what was produced ...
    usage = final["usage"]
    assert usage is not None and usage["output_tokens"] >= deltas  # ... and what is charged
    # The simulator's tokenizer: words; its Messages API counts one more, for the empty system prompt.
    assert usage["input_tokens"] == len(prompt.split()) + (model == "sim/claude")
    b = await assert_books(sp, org, requests=2)  # the create request (nothing to charge) and the run
    [u] = [u for u in b.usage if u.request_id == rid]
    assert (u.input_tokens, u.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
    assert u.status == 499 and u.cost_nanos == cost(u.input_tokens, u.output_tokens) > 0


async def test_a_response_cancelled_before_it_ran_costs_nothing(sp: SimPlatform) -> None:
    org, key = await tenant(sp)
    async with sp.platform.client(key) as c:
        created = (await c.post("/v1/responses", json={
            "model": "sim-chat", "input": f"[[sim first_byte_ms=3000]] {marker()}", "background": True})).json()
        await c.post(f"/v1/responses/{created['id']}/cancel")

        async def closed() -> bool:
            return (await _status(c, created["id"]))["status"] == "cancelled"

        await eventually(closed, "cancelled")
    async def resolved() -> bool:
        return (await books(sp, org)).open_holds == 0

    await eventually(resolved, "no hold left open")
    b = await books(sp, org)
    assert b.charges == 0 and all(u.cost_nanos == 0 for u in b.usage) and b.held == 0
