"""Signed requests through the edge: old and future timestamps, reused nonce, tampered body,
wrong secret, and the client helper's happy path."""

from __future__ import annotations

import time

import httpx

from nx_client.signing import SignedRequests, sign_headers
from tests.harness import Platform
from tests.traffic.test_rate_limits_edge import new_key


async def signed_key(platform: Platform) -> tuple[str, str]:
    assert platform.boot is not None
    async with platform.admin() as admin:
        r = await admin.post(f"/api/orgs/{platform.boot.org_id}/keys",
                             json={"name": "signed", "signed_requests": True})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["signing_secret"].startswith("nxsig_") and body["key"]["signed_requests"] is True
    return str(body["secret"]), str(body["signing_secret"])


def code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


async def test_helper_signs_and_the_edge_accepts(platform: Platform) -> None:
    key, secret = await signed_key(platform)
    async with httpx.AsyncClient(base_url=platform.edge, auth=SignedRequests(secret),
                                 headers={"authorization": f"Bearer {key}"}) as c:
        r = await c.get("/v1/models?limit=5")
        assert r.status_code == 200, r.text
        r = await c.post("/v1/chat/completions", json={"model": "no-such-model"})
        assert r.status_code == 404 and code(r) == "model_not_found"  # signature ok, body checked next


async def test_every_refusal_has_its_own_error(platform: Platform) -> None:
    key, secret = await signed_key(platform)
    body = b'{"model":"orion-reason","messages":[]}'
    path = "/v1/chat/completions"
    auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=platform.edge) as c:
        async def send(headers: dict[str, str], payload: bytes = body) -> httpx.Response:
            return await c.post(path, content=payload, headers={**auth, **headers})

        assert code(await send({})) == "signature_required"
        old = sign_headers(secret, "POST", path, body, timestamp=int(time.time()) - 301)
        assert code(await send(old)) == "signature_timestamp_invalid"
        future = sign_headers(secret, "POST", path, body, timestamp=int(time.time()) + 301)
        assert code(await send(future)) == "signature_timestamp_invalid"
        tampered = sign_headers(secret, "POST", path, body)
        assert code(await send(tampered, body.replace(b"orion", b"orioN"))) == "signature_invalid"
        wrong = sign_headers("nxsig_not-the-secret", "POST", path, body)
        assert code(await send(wrong)) == "signature_invalid"
        other_path = sign_headers(secret, "POST", "/v1/embeddings", body)
        assert code(await send(other_path)) == "signature_invalid"
        good = sign_headers(secret, "POST", path, body)
        first = await send(good)
        assert first.status_code != 401, first.text
        replayed = await send(good)
        assert replayed.status_code == 401 and code(replayed) == "nonce_reused"
        # A forged request carrying a fresh nonce does not burn it for the real client.
        nonce = "n" * 20
        forged = sign_headers("nxsig_forger", "POST", path, body, nonce=nonce)
        assert code(await send(forged)) == "signature_invalid"
        real = sign_headers(secret, "POST", path, body, nonce=nonce)
        assert (await send(real)).status_code != 401


async def test_unsigned_keys_ignore_signature_headers(platform: Platform) -> None:
    key = await new_key(platform, name="plain")
    async with platform.client(key) as c:
        r = await c.get("/v1/models", headers={"x-nx-signature": "garbage"})
    assert r.status_code == 200


async def test_signing_can_be_rotated_and_disabled(platform: Platform) -> None:
    key, old_secret = await signed_key(platform)
    assert platform.boot is not None
    async with platform.admin() as admin:
        keys = (await admin.get(f"/api/orgs/{platform.boot.org_id}/keys")).json()["data"]
        key_id = next(k["id"] for k in keys if key.startswith(k["prefix"]))
        rotated = (await admin.post(f"/api/orgs/{platform.boot.org_id}/keys/{key_id}/signing-secret")).json()
    new_secret = rotated["signing_secret"]
    async with httpx.AsyncClient(base_url=platform.edge, headers={"authorization": f"Bearer {key}"}) as c:
        r_old = await c.get("/v1/models", auth=SignedRequests(old_secret))
        r_new = await c.get("/v1/models", auth=SignedRequests(new_secret))
        assert (r_old.status_code, r_new.status_code) == (401, 200)
        async with platform.admin() as admin:
            off = await admin.delete(f"/api/orgs/{platform.boot.org_id}/keys/{key_id}/signing-secret")
        assert off.json()["signing_secret"] is None
        assert (await c.get("/v1/models")).status_code == 200
