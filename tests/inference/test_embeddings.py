"""POST /v1/embeddings through the edge against the simulator."""

from __future__ import annotations

import base64
import struct

import pytest

from tests.compat.openapi_schema import validate
from tests.inference.helpers import META, assert_error, marker
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")


def floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def test_float_batch_is_ordered_by_index_with_usage_and_metadata(sp: SimPlatform) -> None:
    m = marker()
    async with sp.platform.client() as c:
        r = await c.post("/v1/embeddings", json={"model": "sim/embed", "encoding_format": "float",
                                                 "input": [f"one {m}", f"two{m}", f"three{m}"]})
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "CreateEmbeddingResponse")
    assert [d["index"] for d in body["data"]] == [0, 1, 2]  # the simulator answers in reverse
    assert all(len(d["embedding"]) == 8 for d in body["data"])
    assert body["model"] == "sim/embed" and body["usage"] == {"prompt_tokens": 4, "total_tokens": 4,
                                                              "prompt_tokens_details": {"cached_tokens": 0}}
    for name in META:
        assert r.headers.get(name), name
    assert r.headers["x-input-tokens"] == "4" and r.headers["x-cache-status"] == "miss"  # inputs never seen
    [seen] = sp.sim.requests(m)
    assert seen["body"]["model"] == "sim-embed-upstream"


async def test_base64_is_little_endian_float32_whichever_form_the_backend_sends(sp: SimPlatform) -> None:
    texts = ["alpha", "beta"]
    async with sp.platform.client() as c:
        as_float = (await c.post("/v1/embeddings", json={"model": "sim/embed", "input": texts})).json()
        passed = (await c.post("/v1/embeddings", json={"model": "sim/embed", "input": texts,
                                                       "encoding_format": "base64"})).json()
        encoded = (await c.post("/v1/embeddings", json={"model": "sim/embed", "encoding_format": "base64",
                                                        "input": [t + " [[sim float_only=1]]" for t in texts]}))
    # The official schema describes only float vectors: validate the decoded form.
    validate({**passed, "data": [{**d, "embedding": floats(d["embedding"])} for d in passed["data"]]},
             "CreateEmbeddingResponse")
    for i, item in enumerate(passed["data"]):
        assert floats(item["embedding"]) == pytest.approx(as_float["data"][i]["embedding"], abs=1e-6)
    # The backend ignored base64 and sent floats: the adapter encoded them itself.
    for item in encoded.json()["data"]:
        assert isinstance(item["embedding"], str) and len(floats(item["embedding"])) == 8


async def test_single_string_and_dimensions(sp: SimPlatform) -> None:
    async with sp.platform.client() as c:
        one = await c.post("/v1/embeddings", json={"model": "sim/embed", "input": "just one",
                                                   "encoding_format": "float", "dimensions": 4})
        fixed_native = await c.post("/v1/embeddings", json={"model": "sim/embed-fixed", "input": "x",
                                                            "dimensions": 8, "encoding_format": "float"})
        fixed_other = await c.post("/v1/embeddings", json={"model": "sim/embed-fixed", "input": "x", "dimensions": 4})
        too_wide = await c.post("/v1/embeddings", json={"model": "sim/embed", "input": "x", "dimensions": 9})
    assert [len(d["embedding"]) for d in one.json()["data"]] == [4]
    assert len(fixed_native.json()["data"][0]["embedding"]) == 8
    assert_error(fixed_other, 400, "unsupported_parameter", "dimensions")
    assert_error(too_wide, 400, "invalid_request_error", "dimensions")


@pytest.mark.parametrize(("body", "code", "param"), [
    ({"model": "sim/embed"}, "missing_required_parameter", "input"),
    ({"model": "sim/embed", "input": []}, "invalid_request_error", "input"),
    ({"model": "sim/embed", "input": ""}, "invalid_request_error", "input"),
    ({"model": "sim/embed", "input": ["a", ""]}, "invalid_request_error", "input"),
    ({"model": "sim/embed", "input": ["a"] * 2049}, "invalid_request_error", "input"),
    ({"model": "sim/embed", "input": [{"x": 1}]}, "invalid_request_error", "input"),
    ({"model": "sim/embed", "input": "a", "encoding_format": "int8"}, "invalid_request_error", "encoding_format"),
    ({"model": "sim/embed", "input": "a", "dimensions": "4"}, "invalid_request_error", "dimensions"),
])
async def test_bad_requests(sp: SimPlatform, body: dict[str, object], code: str, param: str) -> None:
    async with sp.platform.client() as c:
        r = await c.post("/v1/embeddings", json=body)
    assert_error(r, 400, code, param)


async def test_exactly_2048_inputs_are_accepted(sp: SimPlatform) -> None:
    async with sp.platform.client() as c:
        r = await c.post("/v1/embeddings", json={"model": "sim/embed", "input": [f"t{i}" for i in range(2048)]})
    assert r.status_code == 200, r.text
    assert [d["index"] for d in r.json()["data"]] == list(range(2048))


async def test_upstream_failure(sp: SimPlatform) -> None:
    async with sp.platform.client() as c:
        r = await c.post("/v1/embeddings", json={"model": "sim/embed", "input": "[[sim status=500]]"})
    assert_error(r, 502, "upstream_error")
