"""Background responses: queued at once, run by an adapter process, polled, streamed with
`starting_after`, cancelled, and not lost when the adapter running them restarts mid-run."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.harness import Platform
from tests.responses.oas import validate, validate_events
from tests.responses.sse import read_stream

TERMINAL = ("completed", "failed", "cancelled", "incomplete")


async def poll(sdk: openai.AsyncOpenAI, rid: str, timeout: float = 30.0) -> openai.types.responses.Response:
    async with asyncio.timeout(timeout):
        while True:
            resp = await sdk.responses.retrieve(rid)
            if resp.status in TERMINAL:
                return resp
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("model", ["sim/chat", "sim/openai", "sim/claude"])
async def test_background_create_then_poll(
    sdk: openai.AsyncOpenAI, sim_platform: Platform, model: str
) -> None:
    created = await sdk.responses.create(
        model=model, input="slow [[sim chunks=6 chunk_ms=50]]", background=True
    )
    assert created.status == "queued" and created.background is True and created.output == []
    done = await poll(sdk, created.id)
    assert done.status == "completed" and done.output_text == "Hello from the simulator. It"
    assert done.usage is not None and done.usage.output_tokens > 0
    async with sim_platform.client() as http:
        validate((await http.get(f"/v1/responses/{created.id}")).json(), "Response")
        # The whole stored stream, then resumed from a cursor: the same events after it.
        _, events, _ = await read_stream(
            http, "GET", f"/v1/responses/{created.id}", params={"stream": "true"}
        )
        validate_events(events)
        kinds = [e["type"] for e in events]
        assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
        assert kinds[-1] == "response.completed" and events[0]["response"]["status"] == "queued"
        cursor = events[4]["sequence_number"]
        _, rest, _ = await read_stream(
            http,
            "GET",
            f"/v1/responses/{created.id}",
            params={"stream": "true", "starting_after": str(cursor)},
        )
    assert rest == [e for e in events if e["sequence_number"] > cursor]


async def test_background_stream_follows_the_runner(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.responses.create(
        model="sim/chat", input="[[sim chunks=8 chunk_ms=30]]", background=True, stream=True
    )
    events = [e async for e in stream]
    assert events[0].type == "response.created" and events[0].response.status == "queued"
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == sorted({e.sequence_number for e in events})
    again = await sdk.responses.retrieve(
        events[0].response.id, stream=True, starting_after=events[-3].sequence_number
    )
    assert [e.type async for e in again] == [events[-2].type, events[-1].type]


async def test_cancel_in_progress(sdk: openai.AsyncOpenAI, sim_platform: Platform) -> None:
    created = await sdk.responses.create(
        model="sim/chat", input="[[sim chunks=200 chunk_ms=50]]", background=True
    )
    async with asyncio.timeout(20):
        while (await sdk.responses.retrieve(created.id)).status != "in_progress":
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    cancelled = await sdk.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert (await sdk.responses.cancel(created.id)).status == "cancelled"  # idempotent
    async with sim_platform.client() as http:
        # The stored stream ends once the runner noticed the cancel and wrote its last word.
        _, events, _ = await read_stream(
            http, "GET", f"/v1/responses/{created.id}", params={"stream": "true"}
        )
    final = await sdk.responses.retrieve(created.id)
    assert final.status == "cancelled" and len(final.output_text) < len("Hello from the simulator.") * 40
    validate_events(events)
    assert events[-1]["type"] == "error" and events[-1]["code"] == "response_cancelled"
    assert not any(e["type"] == "response.completed" for e in events)


async def test_cancel_right_after_create(sdk: openai.AsyncOpenAI, sim_platform: Platform) -> None:
    created = await sdk.responses.create(
        model="sim/openai", input="[[sim chunks=50 chunk_ms=50]]", background=True
    )
    assert (
        await sdk.responses.cancel(created.id)
    ).status == "cancelled"  # queued or just claimed: both end so
    async with sim_platform.client() as http:
        _, events, _ = await read_stream(
            http, "GET", f"/v1/responses/{created.id}", params={"stream": "true"}
        )
    assert events[-1]["type"] == "error" and (await sdk.responses.retrieve(created.id)).status == "cancelled"


async def test_cancel_is_only_for_background_and_own_responses(sdk: openai.AsyncOpenAI) -> None:
    plain = await sdk.responses.create(model="sim/chat", input="x")
    with pytest.raises(openai.BadRequestError):
        await sdk.responses.cancel(plain.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.cancel("resp_01m8aaaaaaaaaaaaaaaaaaaaaa")


async def test_background_survives_an_adapter_restart(sdk: openai.AsyncOpenAI, sim_platform: Platform) -> None:
    created = await sdk.responses.create(
        model="sim/claude", input="[[sim chunks=30 chunk_ms=100]]", background=True
    )
    async with asyncio.timeout(20):
        while (await sdk.responses.retrieve(created.id)).status != "in_progress":
            await asyncio.sleep(0.05)
    await sim_platform.restart("adapter")
    await sim_platform.restart("adapter")
    done = await poll(sdk, created.id, timeout=40)
    assert done.status == "completed"
    assert done.output_text == "".join(
        ["Hello", " from", " the", " simulator", ".", " It", " says", " nothing", " of", " note"] * 3
    )
    async with sim_platform.client() as http:
        _, events, _ = await read_stream(
            http, "GET", f"/v1/responses/{created.id}", params={"stream": "true"}
        )
    validate_events(events)
    assert [e["type"] for e in events].count("response.in_progress") == 1
    assert events[-1]["type"] == "response.completed"
