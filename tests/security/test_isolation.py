"""The isolation matrix: every `/v1` resource route x (own key, the organization's unlimited key,
a key of another project of the same organization, a key of another organization), through the
real edge, asserting the exact status. Resources are created with organization A's key limited to
project P1; a resource another key may not see must answer exactly like a missing one (404)."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.harness import Platform, free_port
from tests.security.conftest import World

OWN, ORG_WIDE, OTHER_PROJECT, OTHER_ORG = "own", "org-wide", "other-project", "other-org"
EXPECTED = {OWN: 200, ORG_WIDE: 200, OTHER_PROJECT: 404, OTHER_ORG: 404}


def callers(world: World) -> dict[str, str]:
    return {OWN: world.key_p1, ORG_WIDE: world.key_a, OTHER_PROJECT: world.key_p2, OTHER_ORG: world.key_b}


@dataclass
class Probe:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


async def call(platform: Platform, key: str, probe: Probe) -> httpx.Response:
    async with platform.client(key) as c:
        return await c.request(probe.method, probe.path, json=probe.json, params=probe.params)


async def create_resources(platform: Platform, world: World) -> dict[str, str]:
    """As P1's key: a stored response, a finished background response, a webhook endpoint."""
    async with platform.client(world.key_p1) as c:
        r = await c.post("/v1/responses", json={"model": "sim/chat", "input": f"p1 secret {secrets.token_hex(4)}"})
        assert r.status_code == 200, r.text
        fg = r.json()["id"]
        r = await c.post("/v1/responses", json={"model": "sim/chat", "input": "p1 background", "background": True})
        assert r.status_code == 200, r.text
        bg = r.json()["id"]
        async with asyncio.timeout(30):
            while (await c.get(f"/v1/responses/{bg}")).json()["status"] != "completed":
                await asyncio.sleep(0.1)
        r = await c.post("/v1/webhooks/endpoints", json={
            "url": f"http://127.0.0.1:{free_port()}/hook", "project": world.p1, "event_types": ["*"]})
        assert r.status_code == 200, r.text
        endpoint = r.json()["id"]
    return {"fg": fg, "bg": bg, "endpoint": endpoint}


async def test_every_resource_route_answers_only_its_tenant(sec: Platform, world: World) -> None:
    ids = await create_resources(sec, world)
    fg, bg, ep = ids["fg"], ids["bg"], f"/v1/webhooks/endpoints/{ids['endpoint']}"
    probes = [
        Probe("GET", f"/v1/responses/{fg}"),
        Probe("GET", f"/v1/responses/{bg}", params={"stream": "true"}),
        Probe("GET", f"/v1/responses/{fg}/input_items"),
        Probe("POST", f"/v1/responses/{bg}/cancel"),
        Probe("POST", "/v1/responses", json={"model": "sim/chat", "input": "go on", "previous_response_id": fg}),
        Probe("POST", "/v1/responses", json={"model": "sim/chat", "input": "go on", "previous_response_id": bg,
                                             "background": True}),
        Probe("GET", ep),
        Probe("POST", ep, json={"description": "touched"}),
        Probe("PATCH", ep, json={"description": "touched again"}),
        Probe("POST", f"{ep}/rotate_secret"),
        Probe("POST", f"{ep}/test"),
        Probe("GET", f"{ep}/deliveries"),
        Probe("POST", f"{ep}/replay", json={"since": int(time.time()) - 60}),
    ]
    # Destroying: the other keys first (they must not succeed), the owner last.
    destroying = [Probe("DELETE", ep), Probe("DELETE", f"/v1/responses/{fg}")]
    keys = callers(world)
    wrong: list[str] = []
    for probe in probes:
        for who, key in keys.items():
            r = await call(sec, key, probe)
            if r.status_code != EXPECTED[who]:
                wrong.append(f"{probe} as {who}: {r.status_code} (expected {EXPECTED[who]}) {r.text[:120]}")
            elif r.status_code == 404:
                assert r.json()["error"]["code"] == "not_found", r.text
    for probe in destroying:
        for who in (OTHER_ORG, OTHER_PROJECT, OWN):
            r = await call(sec, keys[who], probe)
            if r.status_code != EXPECTED[who]:
                wrong.append(f"{probe} as {who}: {r.status_code} (expected {EXPECTED[who]}) {r.text[:120]}")
    assert wrong == [], "\n".join(wrong)
    # Gone for everyone afterwards, the owner included.
    for probe in (Probe("GET", ep), Probe("GET", f"/v1/responses/{fg}")):
        for who, key in keys.items():
            assert (await call(sec, key, probe)).status_code == 404, f"{probe} as {who}"


async def test_lists_show_only_what_the_key_may_see(sec: Platform, world: World) -> None:
    ids = await create_resources(sec, world)
    t0 = int(time.time()) - 5
    keys = callers(world)
    for who, key in keys.items():
        async with sec.client(key) as c:
            r = await c.get("/v1/webhooks/endpoints", params={"limit": "100"})
            assert r.status_code == 200, r.text
            listed = ids["endpoint"] in {e["id"] for e in r.json()["data"]}
            assert listed == (EXPECTED[who] == 200), f"webhook list as {who}"
            r = await c.get("/v1/usage", params={"start_time": str(t0), "group_by": "project_id"})
            assert r.status_code == 200, r.text
            p1_requests = sum(x["num_model_requests"] for b in r.json()["data"] for x in b["results"]
                              if x["project_id"] == world.p1)
            assert (p1_requests > 0) == (EXPECTED[who] == 200), f"usage as {who}: {p1_requests}"


async def test_the_embedding_cache_is_not_shared_across_projects(sec: Platform, world: World) -> None:
    text = f"only project one embedded this {secrets.token_hex(6)}"
    body = {"model": "sim/embed", "input": text}
    async with sec.client(world.key_p1) as c:
        first = await c.post("/v1/embeddings", json=body)
        assert first.status_code == 200 and first.headers["x-cache-status"] == "miss", first.text
    statuses = {}
    for who, key, project in ((OTHER_ORG, world.key_b, None), (OTHER_PROJECT, world.key_p2, None),
                              (ORG_WIDE, world.key_a, world.p1), (OWN, world.key_p1, None)):
        async with sec.client(key) as c:
            r = await c.post("/v1/embeddings", json=body, headers={"openai-project": project} if project else {})
        assert r.status_code == 200, r.text
        statuses[who] = r.headers["x-cache-status"]
    # The unlimited key acting for P1 shares P1's entries; nobody outside P1 learns it was embedded.
    assert statuses == {OTHER_ORG: "miss", OTHER_PROJECT: "miss", ORG_WIDE: "hit", OWN: "hit"}


async def test_an_idempotency_key_replays_only_for_the_key_that_used_it(sec: Platform, world: World) -> None:
    body = {"model": "sim/chat", "messages": [{"role": "user", "content": f"idem {secrets.token_hex(4)}"}]}
    idem = {"idempotency-key": secrets.token_hex(8)}
    async with sec.client(world.key_p1) as c:
        first = await c.post("/v1/chat/completions", json=body, headers=idem)
        assert first.status_code == 200, first.text
        again = await c.post("/v1/chat/completions", json=body, headers=idem)
        assert again.headers.get("idempotent-replayed") == "true" and again.content == first.content
    for key in (world.key_a, world.key_p2, world.key_b):
        async with sec.client(key) as c:
            r = await c.post("/v1/chat/completions", json=body, headers=idem)
        assert r.status_code == 200 and "idempotent-replayed" not in r.headers, r.text
        assert r.headers["x-request-id"] != first.headers["x-request-id"]
