"""Routing changes through the management API reach a running Envoy and the model list without a
restart; every change is audited and moves config_version; price cards are append-only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from core.db import make_engine, write_tx
from tests.foundation.conftest import assert_error, eventually
from tests.harness import Platform, free_port

MODEL = {"display_name": "Sim", "backend": "sim", "upstream_name": "sim-1", "kind": "text",
         "context_window": 8192, "max_output_tokens": 512,
         "capabilities": {"streaming": True, "tools": True}}
PRICE = {"input_nanos_per_mtok": 150_000_000, "cached_input_nanos_per_mtok": 75_000_000,
         "output_nanos_per_mtok": 600_000_000}


async def _envoy(p: Platform, path: str) -> str:
    async with httpx.AsyncClient(timeout=5) as c:
        return (await c.get(f"http://127.0.0.1:{p.s.envoy_admin_port}{path}")).text


async def _db(p: Platform, sql: str, **params: Any) -> list[Any]:
    engine = make_engine(p.s)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


async def _version(p: Platform) -> int:
    return int((await _db(p, "SELECT version FROM config_version WHERE id = 1"))[0][0])


async def _listed(p: Platform) -> dict[str, dict[str, Any]]:
    async with p.client() as c:
        return {m["id"]: m for m in (await c.get("/v1/models")).json()["data"]}


async def test_new_backend_reaches_running_envoy(private: Platform) -> None:
    before = await _version(private)
    port = free_port()
    async with private.admin() as a:
        r = await a.post("/api/backends", json={"id": "sim", "protocol": "openai",
                                                 "base_url": f"http://127.0.0.1:{port}/v1",
                                                 "api_key_env": "SIM_KEY"})
    assert r.status_code == 201, r.text
    assert r.json()["api_key_env"] == "SIM_KEY" and "secret" not in r.text.lower()

    async def cluster_and_route() -> bool:
        clusters = await _envoy(private, "/clusters")
        routes = await _envoy(private, "/config_dump?resource=dynamic_route_configs")
        return f"backend_sim::127.0.0.1:{port}" in clusters and "backend.sim" in routes

    await eventually(cluster_and_route, "Envoy has the new cluster and route")
    assert await _version(private) > before
    audit = await _db(private, "SELECT actor, action FROM audit_log WHERE target = 'sim'")
    assert ("admin", "backend.created") in [tuple(x) for x in audit]


async def test_model_alias_and_price_cards(private: Platform) -> None:
    async with private.admin() as a:
        r = await a.post("/api/models", json={"id": "sim/one", **MODEL})
        assert r.status_code == 201, r.text
        assert r.json()["price"] is None
        assert "sim/one" not in await _listed(private)  # never listed, never served without a price
        r = await a.post("/api/prices", json={"model": "sim/one", **PRICE})
        assert r.status_code == 201 and r.json()["version"] == 1
        listed = await _listed(private)
        assert listed["sim/one"]["pricing"]["input"] == "0.15"
        assert listed["sim/one"]["capabilities"]["tools"] is True

        r = await a.put("/api/routes/orion-reason", json={"model": "sim/one"})
        assert r.status_code == 200, r.text
        listed = await _listed(private)
        assert listed["orion-reason"]["alias_of"] == "sim/one"
        assert listed["orion-reason"]["pricing"]["output"] == "0.60"
        async with private.client() as c:
            one = (await c.get("/v1/models/orion-reason")).json()
        assert one["alias_of"] == "sim/one" and one["context_window"] == 8192

        r = await a.post("/api/prices", json={"model": "sim/one", **PRICE,
                                              "output_nanos_per_mtok": 700_000_000})
        assert r.status_code == 201 and r.json()["version"] == 2
        assert (await _listed(private))["sim/one"]["pricing"]["output"] == "0.70"
        history = (await a.get("/api/prices", params={"model": "sim/one"})).json()["data"]
        assert [(h["version"], h["output_nanos_per_mtok"]) for h in history] == [(1, 600_000_000), (2,
                                                                                                    700_000_000)]
        assert_error(await a.post("/api/prices", json={"model": "sim/one", **PRICE,
                                                       "effective_at": "2020-01-01"}),
                     400, "invalid_request_error", mentions="effective_at")
        assert_error(await a.post("/api/prices", json={"model": "sim/none", **PRICE}), 404, "model_not_found")
        assert_error(await a.post("/api/prices", json={"model": "sim/one", **PRICE,
                                                       "input_nanos_per_mtok": -1}),
                     400, "invalid_request_error")

        # disabling the model removes it and its alias from the list at once
        r = await a.patch("/api/models/sim/one", json={"status": "disabled"})
        assert r.status_code == 200 and r.json()["status"] == "disabled"
        listed = await _listed(private)
        assert "sim/one" not in listed and "orion-reason" not in listed
        async with private.client() as c:
            assert_error(await c.get("/v1/models/orion-reason"), 404, "model_not_found")
        assert (await a.patch("/api/models/sim/one", json={"status": "active"})).status_code == 200
        # re-point the alias back to the local model
        assert (await a.put("/api/routes/orion-reason",
                            json={"model": "local/gemma-3-270m"})).status_code == 200
    assert (await _listed(private))["orion-reason"]["alias_of"] == "local/gemma-3-270m"


async def test_price_cards_cannot_be_rewritten(private: Platform) -> None:
    engine = make_engine(private.s)
    try:
        with pytest.raises(Exception, match="append-only"):
            async with write_tx(engine) as conn:
                await conn.execute(text("UPDATE price_cards SET output_nanos_per_mtok = 0"))
    finally:
        await engine.dispose()


async def test_routing_validation(private: Platform) -> None:
    bad_backends = [
        ({"base_url": "ftp://example.com/v1"}, "base_url"),
        ({"base_url": "http://user:pw@example.com/v1"}, "base_url"),
        ({"base_url": "http://example.com/v1?key=abc"}, "base_url"),
        ({"base_url": f"http://127.0.0.1:{private.s.envoy_admin_port}/"}, "base_url"),
        ({"base_url": f"http://127.0.0.1:{private.s.operator_port}/"}, "base_url"),
        ({"base_url": "http://exa mple.com"}, "base_url"),
        ({"api_key_env": "NX_ADMIN_TOKEN"}, "api_key_env"),
        ({"api_key_env": "DATABASE_URL"}, "api_key_env"),
        ({"api_key_env": "lower-case"}, "api_key_env"),
        ({"protocol": "grpc"}, "protocol"),
        ({"id": "Bad Id"}, "id"),
    ]
    async with private.admin() as a:
        for override, param in bad_backends:
            body = {"id": "other", "protocol": "openai", "base_url": "https://api.example.com/v1", **override}
            err = assert_error(await a.post("/api/backends", json=body), 400, "invalid_request_error")
            assert param in (err["param"] or "") + err["message"], (override, err)
        assert_error(await a.post("/api/backends", json={"id": "sim", "protocol": "openai",
                                                          "base_url": "https://api.example.com"}), 409,
                                                          "conflict")
        assert_error(await a.post("/api/backends", content=b"{nope",
                                  headers={"content-type": "application/json"}),
                     400, "invalid_json")
        assert_error(await a.get("/api/backends/nope"), 404, "not_found")
        assert_error(await a.post("/api/backends/local/disable"), 409, "conflict",
                     mentions="local/gemma-3-270m")
        assert_error(await a.put("/api/routes/bad alias", json={"model": "sim/one"}), 400,
                     "invalid_request_error")
        assert_error(await a.put("/api/routes/local/gemma-3-270m", json={"model": "sim/one"}), 404,
                     "not_found")
        assert_error(await a.put("/api/routes/x1", json={"model": "sim/nope"}), 404, "model_not_found")
        assert_error(await a.delete("/api/routes/never-made"), 404, "not_found")
        assert_error(await a.post("/api/models", json={"id": "sim/one", **MODEL}), 409, "conflict")
        assert_error(await a.post("/api/models", json={"id": "orion-reason", **MODEL}), 400,
                     "invalid_request_error")
        assert_error(await a.patch("/api/models/sim/one", json={"kind": "embedding"}), 400,
                     "invalid_request_error")
        assert_error(await a.get("/api/models/sim/nope"), 404, "model_not_found")
    async with httpx.AsyncClient(base_url=private.operator,  # a client key is not the admin token
                                 headers={"authorization": f"Bearer {private.key}"}) as c:
        assert_error(await c.get("/api/backends"), 401, "invalid_api_key")
    async with httpx.AsyncClient(base_url=private.operator) as c:
        assert_error(await c.get("/api/backends"), 401, "invalid_api_key")
    async with private.client() as c:  # and the public edge does not serve the operator API at all
        assert_error(await c.get("/api/backends"), 404, "not_found")


async def test_disabled_backend_leaves_envoy_and_alias_delete(private: Platform) -> None:
    async with private.admin() as a:
        assert (await a.put("/api/routes/sim-latest", json={"model": "sim/one"})).status_code == 200
        assert "sim-latest" in await _listed(private)
        assert (await a.delete("/api/routes/sim-latest")).status_code == 200
        assert "sim-latest" not in await _listed(private)
        assert (await a.patch("/api/models/sim/one", json={"status": "disabled"})).status_code == 200
        r = await a.post("/api/backends/sim/disable")
        assert r.status_code == 200 and r.json()["enabled"] is False
        assert_error(await a.patch("/api/models/sim/one", json={"status": "active"}), 409, "conflict")

    async def cluster_gone() -> bool:
        return "backend_sim::" not in await _envoy(private, "/clusters")

    await eventually(cluster_gone, "Envoy dropped the disabled backend's cluster")
