"""A signed request refused as `nonce_reused` stays refused after Redis restarts (compose runs it
without persistence) and after the sidecar restarts: nonces live in the database for the whole
window. Redis here is a private redis-server on an ephemeral port, never the shared one."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from nx_client.signing import sign_headers
from tests.harness import Platform, free_port
from tests.security.conftest import new_org, sim_platform

PATH = "/v1/chat/completions"
BODY = json.dumps({"model": "sim/chat", "messages": [{"role": "user", "content": "replay me"}]}).encode()


class RedisServer:
    """redis-server without persistence, as compose runs it, on a port of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


async def signed_key(platform: Platform) -> tuple[str, str, str]:
    org = await new_org(platform, "signed")
    async with platform.admin() as admin:
        r = await admin.post(f"/api/orgs/{org}/keys", json={"name": "signed", "signed_requests": True})
    assert r.status_code == 201, r.text
    return org, r.json()["secret"], r.json()["signing_secret"]


async def send(platform: Platform, key: str, signature: dict[str, str]) -> httpx.Response:
    async with platform.client(key) as c:
        return await c.post(PATH, content=BODY, headers={"content-type": "application/json", **signature})


async def send_settled(platform: Platform, key: str, signature: dict[str, str]) -> httpx.Response:
    """The answer once the sidecar's stores answer again (a check that cannot run is a 503)."""
    async with asyncio.timeout(20):
        while True:
            r = await send(platform, key, signature)
            if r.status_code != 503:
                return r
            await asyncio.sleep(0.2)


def code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


async def test_a_replay_stays_refused_after_redis_restarts(redis_server: RedisServer) -> None:
    async with sim_platform(REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0") as platform:
        _, key, secret = await signed_key(platform)
        signature = sign_headers(secret, "POST", PATH, BODY)
        first = await send(platform, key, signature)
        assert first.status_code == 200, first.text
        replayed = await send(platform, key, signature)
        assert replayed.status_code == 401 and code(replayed) == "nonce_reused"
        redis_server.stop()
        redis_server.start()
        again = await send_settled(platform, key, signature)
        assert again.status_code == 401 and code(again) == "nonce_reused", again.text


async def test_a_replay_stays_refused_after_the_sidecar_restarts(sec: Platform) -> None:
    _, key, secret = await signed_key(sec)
    signature = sign_headers(secret, "POST", PATH, BODY)
    assert (await send(sec, key, signature)).status_code == 200
    await sec.restart("sidecar", crash=True)
    again = await send_settled(sec, key, signature)
    assert again.status_code == 401 and code(again) == "nonce_reused", again.text
