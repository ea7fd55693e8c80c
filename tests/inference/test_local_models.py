"""The real local models through the edge (skipped only when the weights are absent and cannot be
fetched: see support.models_dir)."""

from __future__ import annotations

import base64
import math
import struct

import pytest

from tests.compat.openapi_schema import validate
from tests.inference.helpers import final_metadata, read_sse
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def local(sp: SimPlatform) -> SimPlatform:
    if sp.local is None:
        pytest.skip(sp.local_unavailable or "local models unavailable")
    return sp


async def test_local_text_model_chat_and_stream(local: SimPlatform) -> None:
    body = {"model": "orion-reason", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "The capital of France is"}]}
    async with local.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=body)
        async with c.stream("POST", "/v1/chat/completions", json={
                **body, "model": "local/gemma-3-270m", "stream": True,
                "stream_options": {"include_usage": True}}) as s:
            events, comments, done = await read_sse(s)
    assert r.status_code == 200, r.text
    answer = r.json()
    validate(answer, "CreateChatCompletionResponse")
    assert answer["model"] == "orion-reason" and r.headers["x-model"] == "local/gemma-3-270m"
    assert answer["usage"]["completion_tokens"] >= 1
    assert int(r.headers["x-input-tokens"]) == answer["usage"]["prompt_tokens"] > 0
    assert done and events[-1]["usage"]["completion_tokens"] >= 1
    for e in events:
        validate(e, "CreateChatCompletionStreamResponse")
        assert e["model"] == "local/gemma-3-270m"
    assert int(final_metadata(comments)["x-output-tokens"]) == events[-1]["usage"]["completion_tokens"]


async def test_local_embeddings_float_and_base64(local: SimPlatform) -> None:
    texts = ["a cat sits on the mat", "stock markets fell today"]
    async with local.platform.client() as c:
        as_float = await c.post("/v1/embeddings", json={"model": "local/all-minilm-l6-v2", "input": texts,
                                                        "encoding_format": "float"})
        as_b64 = await c.post("/v1/embeddings", json={"model": "local/all-minilm-l6-v2", "input": texts,
                                                      "encoding_format": "base64"})
    assert as_float.status_code == 200, as_float.text
    validate(as_float.json(), "CreateEmbeddingResponse")
    vectors = [d["embedding"] for d in as_float.json()["data"]]
    assert [len(v) for v in vectors] == [384, 384]
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[0])), 1.0, abs_tol=1e-3)
    for item, expected in zip(as_b64.json()["data"], vectors, strict=True):
        raw = base64.b64decode(item["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(expected, abs=1e-5)
    assert int(as_float.headers["x-input-tokens"]) > 0
