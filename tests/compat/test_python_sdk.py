"""The official `openai` PyPI SDK as a real client against the edge (chat, embeddings, models, errors)."""

from __future__ import annotations

import openai
import pytest

from tests.compat.openapi_schema import validate
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")


def sdk(sp: SimPlatform, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{sp.platform.edge}/v1", api_key=key or sp.platform.key, max_retries=0)


async def test_chat_without_stream(sp: SimPlatform) -> None:
    async with sdk(sp) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="sim-chat", messages=[{"role": "user", "content": "hi"}])
        completion = raw.parse()
    validate(completion.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
    assert completion.model == "sim-chat" and completion.choices[0].message.content == "Hello from the"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert raw.headers["x-request-id"].startswith("req_") and raw.headers["x-model"] == "sim/chat"
    assert raw.headers["x-wallet-debit"] == "0.000007"


async def test_chat_stream_with_usage_and_final_metadata(sp: SimPlatform) -> None:
    async with sdk(sp) as client:
        stream = await client.chat.completions.create(
            model="sim-chat", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "go [[sim chunks=6]]"}])
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the simulator. It"
    last = chunks[-1]
    assert last.usage is not None and last.usage.completion_tokens == 6
    assert last.model_extra is not None and last.model_extra["x_nx"]["x-output-tokens"] == "6"
    for chunk in chunks:
        validate(chunk.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionStreamResponse")


async def test_chat_stream_without_usage_and_helper_stream(sp: SimPlatform) -> None:
    async with sdk(sp) as client:
        stream = await client.chat.completions.create(model="sim-chat", stream=True,
                                                      messages=[{"role": "user", "content": "hey"}])
        chunks = [chunk async for chunk in stream]
        async with client.chat.completions.stream(model="sim-chat",
                                                  messages=[{"role": "user", "content": "hey"}]) as helper:
            final = await helper.get_final_completion()
    assert all(c.choices and c.usage is None for c in chunks)
    assert final.choices[0].message.content == "Hello from the"


async def test_embeddings_default_base64_and_float(sp: SimPlatform) -> None:
    async with sdk(sp) as client:
        default = await client.embeddings.create(model="sim/embed", input=["one", "two", "three"])
        floats = await client.embeddings.create(model="sim/embed", input=["one", "two", "three"],
                                                encoding_format="float")
    validate(floats.model_dump(mode="json"), "CreateEmbeddingResponse")
    assert [d.index for d in default.data] == [0, 1, 2]
    for a, b in zip(default.data, floats.data, strict=True):
        assert len(a.embedding) == 8 and a.embedding == pytest.approx(b.embedding, abs=1e-6)
    assert default.usage.prompt_tokens == 3


async def test_models_list(sp: SimPlatform) -> None:
    async with sdk(sp) as client:
        page = await client.models.list()
    ids = {m.id for m in page.data}
    assert {"sim/chat", "sim/embed", "sim/claude"} <= ids
    validate({"object": "list", "data": [m.model_dump(mode="json") for m in page.data]}, "ListModelsResponse")


@pytest.mark.parametrize(("content", "model", "extra", "exc", "code"), [
    ("[[sim status=429 retry_after=1]]", "sim-chat", {}, openai.RateLimitError, "rate_limit_exceeded"),
    ("[[sim status=500]]", "sim-chat", {}, openai.InternalServerError, "upstream_error"),
    ("x", "sim/plain", {"response_format": {"type": "json_object"}}, openai.BadRequestError,
     "unsupported_capability"),
    ("x", "no-such-model", {}, openai.NotFoundError, "model_not_found"),
    ("x", "dead/chat", {}, openai.InternalServerError, "upstream_unavailable"),
])
async def test_error_statuses_raise_the_matching_exception(sp: SimPlatform, content: str, model: str,
                                                           extra: dict[str, object],
                                                           exc: type[openai.APIStatusError], code: str) -> None:
    async with sdk(sp) as client:
        with pytest.raises(exc) as info:
            await client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                                 **extra)  # type: ignore[call-overload]
    assert info.value.code == code
    assert info.value.request_id is not None and info.value.request_id.startswith("req_")
    validate(info.value.body and {"error": info.value.body}, "ErrorResponse")


async def test_bad_key_and_cut_stream(sp: SimPlatform) -> None:
    async with sdk(sp, key="nx_live_not_a_real_key") as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.models.list()
    assert info.value.request_id is not None
    async with sdk(sp) as client:
        stream = await client.chat.completions.create(
            model="sim-chat", stream=True, messages=[{"role": "user", "content": "[[sim chunks=9 cut_after=3]]"}])
        with pytest.raises(openai.APIError, match="cut off|ended before"):
            async for _ in stream:
                pass
