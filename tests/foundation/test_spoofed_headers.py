"""Clients cannot inject the headers the sidecar adds: Envoy strips every client-sent `x-nx-*`.

The platform here runs without its control plane; a header-recording HTTP server listens on the
control plane's port instead, so the test sees exactly what Envoy forwards upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from control_plane.domain.keys import KeyScopes, create_key
from core.apikeys import generate_key
from core.db import make_engine, write_tx
from core.secrets import load_secrets
from tests.foundation.conftest import assert_error
from tests.harness import Platform, free_port

SPOOFED = {"x-nx-org": "org_attacker", "x-nx-project": "proj_attacker", "x-nx-key": "key_attacker",
           "x-nx-internal": "guessed-token", "x-nx-route": "backend.local", "x-nx-client-ip": "10.1.2.3",
           "x-nx-model": "local/gemma-3-270m", "x-nx-backend": "local", "x-nx-anything": "1",
           "x-envoy-auth-headers-to-remove": "x-request-id"}


class Recorder:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/healthz":
            self.seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"object":"list","data":[]}'})


@pytest.fixture(scope="module")
async def recorded() -> AsyncIterator[tuple[Platform, Recorder]]:
    port = free_port()
    recorder = Recorder()
    server = uvicorn.Server(uvicorn.Config(recorder, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    p = Platform(extra_env={"NX_CONTROL_PLANE_PORT": str(port)}, names=("sidecar", "worker", "envoy"))
    try:
        await p.start()
        yield p, recorder
    finally:
        await p.stop()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_spoofed_headers_never_reach_upstream(recorded: tuple[Platform, Recorder]) -> None:
    p, recorder = recorded
    assert p.boot is not None
    recorder.seen.clear()
    async with p.client() as c:
        r = await c.get("/v1/models", headers=SPOOFED)
    assert r.status_code == 200, r.text
    (seen,) = recorder.seen
    assert seen["x-nx-org"] == p.boot.org_id
    assert seen["x-nx-project"] == p.boot.project_id
    assert seen["x-nx-key"] == p.boot.key_id
    assert seen["x-nx-route"] == "control_plane"
    assert seen["x-nx-client-ip"] == "127.0.0.1"
    assert seen["x-nx-internal"] == load_secrets(p.s).internal_token
    assert "x-nx-model" not in seen and "x-nx-backend" not in seen and "x-nx-anything" not in seen
    assert "authorization" not in seen  # the client's key goes no further than the sidecar
    assert seen["x-request-id"].startswith("req_")


async def test_spoofed_headers_do_not_change_the_decision(recorded: tuple[Platform, Recorder]) -> None:
    p, recorder = recorded
    assert p.boot is not None
    recorder.seen.clear()
    async with p.client(generate_key()) as c:
        assert_error(await c.get("/v1/models", headers=SPOOFED), 401, "invalid_api_key")
    async with p.client() as c:
        assert_error(await c.get("/v1/models", headers={**SPOOFED, "authorization": ""}), 401,
                     "missing_api_key")
    # No control plane here to call the management API: create the key in the database directly.
    engine = make_engine(p.s)
    try:
        async with write_tx(engine) as conn:
            created = await create_key(conn, p.boot.org_id, KeyScopes(ip_ranges=["10.0.0.0/8"]),
                                       load_secrets(p.s).key_pepper, actor="test")
    finally:
        await engine.dispose()
    restricted = created.secret
    async with p.client(restricted) as c:
        assert_error(await c.get("/v1/models", headers=SPOOFED), 403, "ip_not_allowed")
    assert recorder.seen == []  # nothing denied reached the upstream


async def test_control_plane_refuses_v1_without_the_edge(platform: Platform) -> None:
    # Straight to the control plane's port, with a guessed internal token: looks like no key.
    async with platform.client() as c:
        r = await c.get(f"{platform.s.control_plane_url}/v1/models", headers=SPOOFED)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
