"""Webhooks end to end on the real processes (Envoy, sidecar, control plane, worker), with the
development settings on so that receivers can listen on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import standardwebhooks

from tests.events.receiver import Receiver
from tests.harness import Platform

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def dev() -> AsyncIterator[Platform]:
    env = {"NX_WEBHOOKS_ALLOW_HTTP": "true", "NX_WEBHOOKS_ALLOW_PRIVATE": "true"}
    p = await Platform(extra_env=env).start()  # Envoy takes a dynamic base id beside the session's
    try:
        yield p
    finally:
        await p.stop()


async def _new_key(p: Platform, org_id: str, name: str) -> dict[str, Any]:
    async with p.admin() as admin:
        r = await admin.post(f"/api/orgs/{org_id}/keys", json={"name": name})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def _revoke(p: Platform, org_id: str, key_id: str) -> None:
    async with p.admin() as admin:
        r = await admin.post(f"/api/orgs/{org_id}/keys/{key_id}/revoke")
    assert r.status_code == 200, r.text


async def _deliveries(c: httpx.AsyncClient, endpoint_id: str, want: int) -> list[dict[str, Any]]:
    """Poll the delivery log until `want` deliveries have finished (the log is written after the send)."""
    for _ in range(100):
        r = await c.get(f"/v1/webhooks/endpoints/{endpoint_id}/deliveries")
        assert r.status_code == 200, r.text
        done = [d for d in r.json()["data"] if d["status"] != "pending"]
        if len(done) >= want:
            return done
        await asyncio.sleep(0.1)
    raise AssertionError(f"deliveries did not finish: {r.json()}")


async def test_operator_sees_signed_key_revoked_and_replays_it(dev: Platform) -> None:
    assert dev.boot is not None
    org = dev.boot.org_id
    async with Receiver() as rx, dev.client() as c:
        r = await c.post("/v1/webhooks/endpoints", json={"url": rx.url, "event_types": ["key.revoked"],
                                                          "description": "security alerts"})
        assert r.status_code == 200, r.text
        endpoint = r.json()
        assert endpoint["id"].startswith("whep_") and endpoint["secret"].startswith("whsec_")
        secret = endpoint["secret"]
        r = await c.get(f"/v1/webhooks/endpoints/{endpoint['id']}")
        assert r.status_code == 200 and "secret" not in r.json()
        key = await _new_key(dev, org, "to-revoke")
        await _revoke(dev, org, key["key"]["id"])
        first = (await rx.wait_for(1))[0]
        event = standardwebhooks.Webhook(secret).verify(first.body, first.headers)
        assert event["type"] == "key.revoked" and event["data"]["key_id"] == key["key"]["id"]
        assert event["id"] == first.headers["webhook-id"] and event["organization"] == org
        [delivery] = await _deliveries(c, endpoint["id"], 1)
        assert delivery["status"] == "succeeded" and delivery["event_id"] == event["id"]
        assert [a["status_code"] for a in delivery["attempts"]] == [200]
        assert delivery["attempts"][0]["response_excerpt"] == "ok"
        r = await c.post(f"/v1/webhooks/endpoints/{endpoint['id']}/replay", json={"event_id": event["id"]})
        assert r.status_code == 200 and len(r.json()["deliveries"]) == 1, r.text
        again = (await rx.wait_for(2))[1]
    assert again.headers["webhook-id"] == first.headers["webhook-id"] and again.body == first.body
    standardwebhooks.Webhook(secret).verify(again.body, again.headers)


async def test_worker_killed_after_commit_still_delivers(dev: Platform) -> None:
    assert dev.boot is not None
    worker = next(ch for ch in dev.started if ch.name == "worker")
    assert worker.proc is not None
    async with Receiver() as rx, dev.client() as c:
        r = await c.post("/v1/webhooks/endpoints", json={"url": rx.url, "event_types": ["key.revoked"]})
        endpoint_id = r.json()["id"]
        worker.proc.kill()  # SIGKILL: no graceful shutdown
        await worker.proc.wait()
        key = await _new_key(dev, dev.boot.org_id, "while-worker-is-down")
        await _revoke(dev, dev.boot.org_id, key["key"]["id"])  # committed, nothing running to send it
        await asyncio.sleep(0.5)
        assert rx.received == []
        worker.proc = await asyncio.create_subprocess_exec(*worker.argv, env=dev.env)
        received = await rx.wait_for(1)
        [delivery] = await _deliveries(c, endpoint_id, 1)
    assert delivery["status"] == "succeeded" and received[0].headers["webhook-id"] == delivery["event_id"]


async def test_crud_test_event_rotation_and_isolation(dev: Platform) -> None:
    async with Receiver() as rx, dev.client() as c, dev.admin() as admin:
        r = await c.post("/v1/webhooks/endpoints", json={"url": rx.url})
        endpoint = r.json()
        assert endpoint["event_types"] == ["*"] and endpoint["status"] == "enabled"
        r = await c.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test")
        assert r.status_code == 200 and r.json()["kind"] == "test", r.text
        test = (await rx.wait_for(1))[0]
        verified = standardwebhooks.Webhook(endpoint["secret"]).verify(test.body, test.headers)
        assert verified["type"] == "webhook.test"
        r = await c.post(f"/v1/webhooks/endpoints/{endpoint['id']}/rotate_secret")
        rotated = r.json()
        assert rotated["secret"] != endpoint["secret"] and rotated["previous_secret_expires_at"] > time.time()
        await c.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test")
        second = (await rx.wait_for(2))[1]
        for secret in (endpoint["secret"], rotated["secret"]):
            standardwebhooks.Webhook(secret).verify(second.body, second.headers)
        r = await c.post(f"/v1/webhooks/endpoints/{endpoint['id']}",
                         json={"description": "renamed", "event_types": ["request.completed", "key.revoked"]})
        assert r.json()["description"] == "renamed"
        assert r.json()["event_types"] == ["key.revoked", "request.completed"]
        r = await c.get("/v1/webhooks/endpoints", params={"limit": 1})
        page = r.json()
        assert page["object"] == "list" and len(page["data"]) == 1 and page["has_more"] is True

        # Another organization's key sees this endpoint exactly like a missing one.
        org2 = (await admin.post("/api/orgs", json={"name": "other"})).json()["id"]
        key2 = (await admin.post(f"/api/orgs/{org2}/keys", json={"name": "k"})).json()["secret"]
        async with dev.client(key=key2) as other:
            theirs = await other.get(f"/v1/webhooks/endpoints/{endpoint['id']}")
            missing = await other.get("/v1/webhooks/endpoints/whep_00000000000000000000000000")
            for path in ("", "/deliveries"):
                r = await other.get(f"/v1/webhooks/endpoints/{endpoint['id']}{path}")
                assert r.status_code == 404
            assert (await other.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test")).status_code == 404
            assert (await other.delete(f"/v1/webhooks/endpoints/{endpoint['id']}")).status_code == 404
            assert (await other.get("/v1/webhooks/endpoints")).json()["data"] == []
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"

        r = await c.delete(f"/v1/webhooks/endpoints/{endpoint['id']}")
        assert r.json() == {"id": endpoint["id"], "object": "webhook_endpoint.deleted", "deleted": True}
        assert (await c.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).status_code == 404


@pytest.mark.parametrize(("body", "param"), [
    ({"url": "ftp://example.com/hook"}, "url"),
    ({"url": "https://user:pw@example.com/hook"}, "url"),
    ({"url": "https://93.184.215.14/hook", "event_types": ["key.exploded"]}, "event_types"),
    ({"url": "https://93.184.215.14/hook", "event_types": ["webhook.test"]}, "event_types"),
    ({"url": "https://93.184.215.14/hook", "project": "proj_00000000000000000000000000"}, "project"),
    ({"url": "https://93.184.215.14/hook", "colour": "red"}, None),
    ({}, None),
])
async def test_bad_input_is_a_clear_400(dev: Platform, body: dict[str, Any], param: str | None) -> None:
    async with dev.client() as c:
        r = await c.post("/v1/webhooks/endpoints", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param


async def test_malformed_json_is_invalid_json(dev: Platform) -> None:
    async with dev.client() as c:
        r = await c.post("/v1/webhooks/endpoints", content=b'{"url": ',
                         headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["message"]
