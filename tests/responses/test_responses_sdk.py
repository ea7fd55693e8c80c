"""POST /v1/responses and stored responses through the real edge, with the official `openai` SDK
as the client and the provider simulator behind every protocol (Chat-only, OpenAI Responses,
Anthropic Messages). Bodies and stream events are validated against the OpenAPI document."""

from __future__ import annotations

import json
import secrets

import openai
import pydantic
import pytest

from tests.harness import Platform
from tests.responses.oas import validate, validate_events
from tests.responses.sse import read_stream
from tests.simulator.server import SimulatorProcess

MODELS = ["sim/chat", "sim/openai", "sim/claude"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
META = {"x-request-id", "x-model", "x-input-tokens", "x-output-tokens", "x-cache-status", "x-wallet-debit"}


@pytest.mark.parametrize("model", MODELS)
async def test_create_on_every_protocol(sdk: openai.AsyncOpenAI, sim_platform: Platform, model: str) -> None:
    resp = await sdk.responses.create(
        model=model,
        input="Say hello",
        instructions="Be brief.",
        max_output_tokens=64,
        temperature=0.5,
        metadata={"ticket": "T-1"},
    )
    assert resp.status == "completed" and resp.output_text == "Hello from the"
    assert resp.id.startswith("resp_") and resp.model == model and resp.metadata == {"ticket": "T-1"}
    assert (
        resp.usage is not None
        and resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    )
    async with sim_platform.client() as http:
        raw = await http.post("/v1/responses", json={"model": model, "input": "Hi"})
    assert raw.status_code == 200 and set(raw.headers) >= META
    assert raw.headers["x-output-tokens"] == "3" and raw.headers["x-model"] == model
    assert raw.headers["x-request-id"].startswith("req_")
    validate(raw.json(), "Response")


@pytest.mark.parametrize("model", MODELS)
async def test_stream_sdk_assembles_final_response(sdk: openai.AsyncOpenAI, model: str) -> None:
    async with sdk.responses.stream(model=model, input="Stream please [[sim chunks=5]]") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello from the simulator."
    assert final.status == "completed" and final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
async def test_stream_events_are_documented_and_carry_metadata(sim_platform: Platform, model: str) -> None:
    async with sim_platform.client() as http:
        resp, events, meta = await read_stream(
            http, "POST", "/v1/responses", json={"model": model, "input": "Hi", "stream": True}
        )
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    validate_events(events)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert {
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    } <= set(kinds)
    assert all(e["logprobs"] == [] for e in events if e["type"] == "response.output_text.delta")
    assert meta is not None and set(meta) >= META and events[-1]["x_nx"] == meta
    assert int(meta["x-output-tokens"]) == events[-1]["response"]["usage"]["output_tokens"]


class Plan(pydantic.BaseModel):
    title: str
    steps: list[str]


async def test_parse_with_a_schema(sdk: openai.AsyncOpenAI, simulator: SimulatorProcess) -> None:
    marker = secrets.token_hex(4)
    parsed = await sdk.responses.parse(model="sim/chat", input=f"Plan {marker}", text_format=Plan)
    assert isinstance(parsed.output_parsed, Plan) and parsed.output_parsed.title == "simulated"
    sent = simulator.requests(marker)[-1]["body"]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["strict"] is True


@pytest.mark.parametrize("model", MODELS[::2])
async def test_tool_call_round_trip_via_previous_response_id(
    sdk: openai.AsyncOpenAI, simulator: SimulatorProcess, model: str
) -> None:
    marker = secrets.token_hex(4)
    first = await sdk.responses.create(model=model, input=f"Weather in Oslo? {marker}", tools=[WEATHER])  # type: ignore[list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert (
        len(calls) == 1
        and calls[0].name == "get_weather"
        and json.loads(calls[0].arguments) == {"city": "simulated"}
    )
    second = await sdk.responses.create(
        model=model,
        previous_response_id=first.id,
        tools=[WEATHER],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "5C and clear"}],
    )
    assert second.status == "completed" and second.output_text and second.previous_response_id == first.id
    # The backend saw the whole conversation: the first question, the call and its result.
    replayed = simulator.requests(marker)[-1]["raw"]
    assert "5C and clear" in replayed and calls[0].call_id in replayed


async def test_previous_response_id_of_another_org_is_not_found(
    sdk: openai.AsyncOpenAI, sim_platform: Platform
) -> None:
    mine = await sdk.responses.create(model="sim/chat", input="remember me")
    async with sim_platform.admin() as admin:
        org = (await admin.post("/api/orgs", json={"name": f"other-{secrets.token_hex(3)}"})).json()
        created = await admin.post(f"/api/orgs/{org['id']}/keys", json={"name": "k"})
        assert created.status_code == 201, created.text
        grant = await admin.post(
            f"/api/orgs/{org['id']}/ledger/grants",
            json={"amount_usd": "5"},
            headers={"idempotency-key": secrets.token_hex(8)},
        )
        assert grant.status_code == 201, grant.text
    other = openai.AsyncOpenAI(
        base_url=f"{sim_platform.edge}/v1", api_key=created.json()["secret"], max_retries=0
    )
    errors = []
    for rid in (mine.id, "resp_01m8aaaaaaaaaaaaaaaaaaaaaa"):
        with pytest.raises(openai.NotFoundError) as err:
            await other.responses.create(model="sim/chat", input="x", previous_response_id=rid)
        errors.append((err.value.code, err.value.param, err.value.message.replace(rid, "ID")))
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(rid)
        assert err.value.request_id
    assert errors[0] == errors[1] and errors[0][:2] == ("not_found", "previous_response_id")


async def test_missing_capability_is_a_400_naming_it(sdk: openai.AsyncOpenAI) -> None:
    for kwargs, param in [
        ({"tools": [WEATHER]}, "tools"),
        ({"stream": True}, "stream"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),
    ]:
        with pytest.raises(openai.BadRequestError) as err:
            await sdk.responses.create(model="sim/plain", input="x", **kwargs)  # type: ignore[call-overload]
        assert err.value.code == "unsupported_capability" and err.value.param == param
        assert err.value.request_id


async def test_retrieve_input_items_delete(sdk: openai.AsyncOpenAI) -> None:
    resp = await sdk.responses.create(
        model="sim/claude",
        input=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
        ],
    )
    got = await sdk.responses.retrieve(resp.id)
    assert got.id == resp.id and got.output_text == resp.output_text and got.status == "completed"
    page = await sdk.responses.input_items.list(resp.id, order="asc", limit=2)
    assert [i.type for i in page.data] == ["message", "message"] and page.has_more
    rest = await sdk.responses.input_items.list(resp.id, order="asc", after=page.data[-1].id)
    assert len(rest.data) == 1 and not rest.has_more
    assert rest.data[0].content[0].text == "second"  # type: ignore[union-attr]
    await sdk.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.delete(resp.id)


async def test_store_false_is_not_retrievable(sdk: openai.AsyncOpenAI) -> None:
    resp = await sdk.responses.create(model="sim/chat", input="x", store=False)
    assert resp.store is False
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(resp.id)


@pytest.mark.parametrize("model", MODELS)
async def test_upstream_cut_mid_stream_ends_in_response_failed(sim_platform: Platform, model: str) -> None:
    async with sim_platform.client() as http:
        _, events, meta = await read_stream(
            http,
            "POST",
            "/v1/responses",
            json={"model": model, "input": "Long answer [[sim chunks=20 cut_after=6]]", "stream": True},
        )
    validate_events(events)
    assert events[-1]["type"] == "response.failed" and meta is not None
    assert not any(e["type"] == "response.completed" for e in events)
    assert events[-1]["response"]["error"]["code"] == "server_error"


async def test_upstream_cut_raises_in_the_sdk(sdk: openai.AsyncOpenAI) -> None:
    async with sdk.responses.stream(model="sim/chat", input="[[sim chunks=20 cut_after=4]]") as stream:
        kinds = [e.type async for e in stream]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            await stream.get_final_response()
    assert kinds[-1] == "response.failed"


@pytest.mark.parametrize(("status", "exc"), [(429, openai.RateLimitError), (500, openai.InternalServerError)])
async def test_upstream_errors_before_the_stream_are_http_errors(
    sdk: openai.AsyncOpenAI, status: int, exc: type[openai.APIStatusError]
) -> None:
    for stream in (False, True):
        with pytest.raises(exc) as err:
            await sdk.responses.create(model="sim/chat", input=f"[[sim status={status}]]", stream=stream)
        assert err.value.request_id and "sk-sim" not in str(err.value.body)
