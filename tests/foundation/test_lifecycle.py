"""Bootstrap idempotency, restarts keeping data, and the edge's own error replies: body too large,
malformed JSON, sidecar unreachable (fail closed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from control_plane.supervisor import prepare
from tests.foundation.conftest import assert_error, make_org
from tests.harness import Platform


async def test_second_prepare_prints_no_secret(private: Platform) -> None:
    assert private.boot is not None and private.boot.secret
    again = await prepare(private.s)
    assert again.secret is None
    assert (again.org_id, again.project_id, again.key_id, again.key_prefix) == (
        private.boot.org_id, private.boot.project_id, private.boot.key_id, private.boot.key_prefix)
    assert private.key.startswith(again.key_prefix)
    async with private.admin() as a:
        orgs = (await a.get("/api/orgs")).json()["data"]
        keys = (await a.get(f"/api/orgs/{again.org_id}/keys")).json()["data"]
    assert [o["id"] for o in orgs].count(again.org_id) == 1 and len(keys) == 1


async def test_restart_keeps_data(private: Platform) -> None:
    org = await make_org(private, "Survives restarts")
    async with private.admin() as a:
        assert (await a.put("/api/routes/survivor", json={"model": "local/gemma-3-270m"})).status_code == 200
    await private.restart("control-plane")
    await private.restart("sidecar")
    async with private.admin() as a:
        assert org["id"] in {o["id"] for o in (await a.get("/api/orgs")).json()["data"]}
    await prepare(private.s)  # a full restart re-syncs the catalog; an operator's alias stays
    async with private.client() as c:
        listed = {m["id"]: m for m in (await c.get("/v1/models")).json()["data"]}
    assert listed["survivor"]["alias_of"] == "local/gemma-3-270m"


async def test_body_over_limit_is_413(private: Platform) -> None:
    big = b'{"model":"orion-reason","input":"' + b"x" * (private.s.max_body_bytes + 1) + b'"}'
    async with private.client() as c:
        r = await c.post("/v1/responses", content=big, headers={"content-type": "application/json"})
    assert_error(r, 413, "request_too_large")


async def test_malformed_json_is_400(private: Platform) -> None:
    async with private.client() as c:
        for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses"):
            r = await c.post(path, content=b'{"model": "orion-reason",',
                             headers={"content-type": "application/json"})
            assert_error(r, 400, "invalid_json")


async def test_no_route_is_openai_shaped(private: Platform) -> None:
    async with private.client() as c:
        assert_error(await c.get("/v1/does-not-exist"), 404, "not_found")


@pytest.fixture
async def doomed() -> AsyncIterator[Platform]:
    """A platform whose sidecar the test stops."""
    p = Platform()
    try:
        await p.start()
        yield p
    finally:
        await p.stop()


async def test_sidecar_unreachable_fails_closed(doomed: Platform) -> None:
    p = doomed
    sidecars = [c for c in p.started if c.name.startswith("sidecar")]
    for child in sidecars:
        assert child.proc is not None
        child.proc.terminate()
        await child.proc.wait()
    async with p.client() as c:
        assert_error(await c.get("/v1/models"), 503, "sidecar_unavailable")
        assert_error(await c.post("/v1/chat/completions", json={"model": "orion-reason", "messages": []}),
                     503, "sidecar_unavailable")
