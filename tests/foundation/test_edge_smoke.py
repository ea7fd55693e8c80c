"""The request path end to end through a real Envoy: the bootstrap key lists models."""

from __future__ import annotations

from tests.harness import Platform


async def test_models_through_edge(platform: Platform) -> None:
    async with platform.client() as c:
        r = await c.get("/v1/models")
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"].startswith("req_")
    ids = {m["id"] for m in r.json()["data"]}
    assert {"local/gemma-3-270m", "orion-reason", "local/all-minilm-l6-v2"} <= ids


async def test_missing_key_is_401_openai_shape(platform: Platform) -> None:
    async with platform.client() as c:
        r = await c.get("/v1/models", headers={"authorization": ""})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    assert r.headers["x-request-id"].startswith("req_")
