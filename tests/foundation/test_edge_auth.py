"""Every 401 and 403 through the real Envoy and sidecar, with OpenAI-shaped bodies."""

from __future__ import annotations

import time

import httpx

from core.apikeys import generate_key
from tests.foundation.conftest import assert_error, make_key, make_org
from tests.harness import Platform


async def _models(p: Platform, authorization: str | None, **headers: str) -> httpx.Response:
    async with p.client() as c:
        hdrs = dict(headers)
        hdrs["authorization"] = authorization or ""
        return await c.get("/v1/models", headers=hdrs)


async def test_missing_key(platform: Platform) -> None:
    assert_error(await _models(platform, None), 401, "missing_api_key")


async def test_malformed_authorization_headers(platform: Platform) -> None:
    for header in (f"Basic {platform.key}", "Bearer", "Bearer nx_live_", f"Token {platform.key}",
                   platform.key):
        err = assert_error(await _models(platform, header), 401, "invalid_api_key")
        assert platform.key not in err["message"]


async def test_bad_checksum_and_unknown_key(platform: Platform) -> None:
    key = platform.key
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert_error(await _models(platform, f"Bearer {flipped}"), 401, "invalid_api_key")
    unknown = assert_error(await _models(platform, f"Bearer {generate_key()}"), 401,
                           "invalid_api_key")
    assert unknown["message"] == "Incorrect API key provided."


async def test_revocation_applies_at_once(platform: Platform) -> None:
    assert platform.boot is not None
    key_id, secret = await make_key(platform, name="to-revoke")
    assert (await _models(platform, f"Bearer {secret}")).status_code == 200
    # The sidecar now has the key cached; revocation must not wait for the cache TTL.
    async with platform.admin() as a:
        r = await a.post(f"/api/orgs/{platform.boot.org_id}/keys/{key_id}/revoke")
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert_error(await _models(platform, f"Bearer {secret}"), 401, "invalid_api_key",
                 mentions="revoked")


async def test_disabled_key_applies_at_once_and_can_be_reenabled(platform: Platform) -> None:
    assert platform.boot is not None
    key_id, secret = await make_key(platform, name="to-disable")
    assert (await _models(platform, f"Bearer {secret}")).status_code == 200
    async with platform.admin() as a:
        assert (await a.patch(f"/api/orgs/{platform.boot.org_id}/keys/{key_id}",
                              json={"disabled": True})).status_code == 200
        assert_error(await _models(platform, f"Bearer {secret}"), 401, "invalid_api_key",
                     mentions="disabled")
        assert (await a.patch(f"/api/orgs/{platform.boot.org_id}/keys/{key_id}",
                              json={"disabled": False})).status_code == 200
    assert (await _models(platform, f"Bearer {secret}")).status_code == 200


async def test_expired_key(platform: Platform) -> None:
    # A key cannot be created expired (tests/hostile/test_small_leaks.py); one can be expired now.
    assert platform.boot is not None
    key_id, secret = await make_key(platform, name="expired", expires_at=int(time.time()) + 3600)
    async with platform.admin() as a:
        r = await a.patch(f"/api/orgs/{platform.boot.org_id}/keys/{key_id}", json={"expires_at": int(time.time()) - 60})
        assert r.status_code == 200, r.text
    assert_error(await _models(platform, f"Bearer {secret}"), 401, "invalid_api_key",
                 mentions="expired")


async def test_endpoint_scope(platform: Platform) -> None:
    _, secret = await make_key(platform, endpoints=["chat", "embeddings"])
    assert_error(await _models(platform, f"Bearer {secret}"), 403, "endpoint_not_allowed",
                 mentions="scope: endpoints")


async def test_model_scope(platform: Platform) -> None:
    _, secret = await make_key(platform, models=["local/all-minilm-*"])
    async with platform.client(secret) as c:
        r = await c.post("/v1/chat/completions", json={"model": "orion-reason", "messages": []})
        assert_error(r, 403, "model_not_allowed", mentions="scope: models")
        # the listing shows only what the key may use
        listed = {m["id"] for m in (await c.get("/v1/models")).json()["data"]}
    assert listed == {"local/all-minilm-l6-v2"}


async def test_project_scope(platform: Platform) -> None:
    assert platform.boot is not None
    async with platform.admin() as a:
        r = await a.post(f"/api/orgs/{platform.boot.org_id}/projects", json={"name": f"p-{time.time_ns()}"})
    other_project = r.json()["id"]
    _, secret = await make_key(platform, projects=[platform.boot.project_id])
    ok = await _models(platform, f"Bearer {secret}", **{"openai-project": platform.boot.project_id})
    assert ok.status_code == 200
    denied = await _models(platform, f"Bearer {secret}", **{"openai-project": other_project})
    assert_error(denied, 403, "project_not_allowed", mentions="scope: projects")
    # another organization's project id is refused exactly like a made-up one
    foreign = await make_org(platform, "Foreign projects")
    async with platform.admin() as a:
        foreign_project = (await a.get(f"/api/orgs/{foreign['id']}/projects")).json()["data"][0]["id"]
    a_err = assert_error(await _models(platform, f"Bearer {platform.key}",
                                       **{"openai-project": foreign_project}), 403, "project_not_allowed")
    b_err = assert_error(await _models(platform, f"Bearer {platform.key}",
                                       **{"openai-project": "proj_made_up"}), 403, "project_not_allowed")
    assert a_err["message"].replace(foreign_project, "X") == b_err["message"].replace("proj_made_up", "X")


async def test_ip_scope_names_the_scope(platform: Platform) -> None:
    _, secret = await make_key(platform, ip_ranges=["10.0.0.0/8", "2001:db8::/32"])
    assert_error(await _models(platform, f"Bearer {secret}"), 403, "ip_not_allowed",
                 mentions="scope: ip_ranges")


async def test_identity_is_checked_before_scopes(platform: Platform) -> None:
    # An unauthenticated caller learns nothing about paths, models or projects.
    async with platform.client(generate_key()) as c:
        assert_error(await c.get("/v1/no-such-path"), 401, "invalid_api_key")
        assert_error(await c.post("/v1/chat/completions", json={"model": "nope"}), 401, "invalid_api_key")
