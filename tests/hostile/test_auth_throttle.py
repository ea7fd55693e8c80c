"""Failed authentication with a shared secret is throttled per client: the admin token on the
management API, the internal token on the control plane's `/v1` door. After ten failures a client
is answered 429 with Retry-After, 1 s, then 2 s, 4 s ... after each further failure; while it waits
its attempts are not compared at all (a right token answers like a wrong one); a success forgets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from core.auth_attempts import FailureThrottle, same_secret
from core.secrets import load_secrets
from tests.harness import Platform
from tests.hostile.helpers import assert_error


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_and_success_forgets() -> None:
    clock = Clock()
    throttle = FailureThrottle(free_failures=3, base_seconds=1, max_seconds=8, forget_after=60, clock=clock)
    for _ in range(2):
        throttle.failed("a")
        assert throttle.retry_after("a") is None
    throttle.failed("a")
    assert throttle.retry_after("a") == 1 and throttle.retry_after("b") is None
    waits = []
    for _ in range(5):
        clock.now += throttle.retry_after("a") or 0
        assert throttle.retry_after("a") is None
        throttle.failed("a")
        waits.append(throttle.retry_after("a"))
    assert waits == [2, 4, 8, 8, 8]  # doubling, capped
    clock.now += 8
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.retry_after("a") is None  # counting starts again after a success


def test_failures_are_forgotten_and_memory_is_bounded() -> None:
    clock = Clock()
    throttle = FailureThrottle(free_failures=2, forget_after=60, max_clients=100, clock=clock)
    throttle.failed("a")
    clock.now += 61
    throttle.failed("a")
    assert throttle.retry_after("a") is None  # the first failure was forgotten
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._clients) == 100


def test_same_secret() -> None:
    assert same_secret(b"token", b"token")
    assert not same_secret(b"token", b"tokeN") and not same_secret(b"", b"token")
    assert not same_secret(b"token" * 1000, b"token")


@pytest.fixture(scope="module")
async def plane() -> AsyncIterator[Platform]:
    """The control plane behind Envoy, nothing else: fresh throttles of its own."""
    p = Platform(names=("control-plane", "envoy"))
    try:
        yield await p.start()
    finally:
        await p.stop()


def _operator(p: Platform) -> str:
    return p.operator  # the management API's own listener (never the public edge)


async def _orgs(c: httpx.AsyncClient, token: str) -> httpx.Response:
    return await c.get("/api/orgs", headers={"authorization": f"Bearer {token}"})


async def test_admin_token_failures_are_throttled(plane: Platform) -> None:
    right = plane.admin_token
    async with httpx.AsyncClient(base_url=_operator(plane), timeout=30) as c:
        for _ in range(10):
            assert_error(await _orgs(c, "wrong"), 401, "invalid_api_key")
        r = await _orgs(c, "wrong")
        assert_error(r, 429, "rate_limit_exceeded")
        assert r.headers["retry-after"] == "1"
        # No oracle: while blocked, the right token gets the same answer as a wrong one.
        blocked = await _orgs(c, right)
        assert_error(blocked, 429, "rate_limit_exceeded")
        waits = []
        for _ in range(2):
            await asyncio.sleep(int(r.headers["retry-after"]) + 0.1)  # the back-off under test
            assert_error(await _orgs(c, "wrong"), 401, "invalid_api_key")  # checked again, and failed
            r = await _orgs(c, "wrong")
            assert_error(r, 429, "rate_limit_exceeded")
            waits.append(int(r.headers["retry-after"]))
        assert waits == [2, 4]
        await asyncio.sleep(waits[-1] + 0.1)
        assert (await _orgs(c, right)).status_code == 200
        assert_error(await _orgs(c, "wrong"), 401, "invalid_api_key")  # a success forgot the failures


async def test_clients_are_throttled_apart(plane: Platform) -> None:
    """Straight to the control plane, from two loopback addresses: one client's failures never
    lock out another."""
    base = plane.s.control_plane_url
    first = httpx.AsyncClient(base_url=base, timeout=30, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.3"))
    other = httpx.AsyncClient(base_url=base, timeout=30, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.4"))
    async with first, other:
        for _ in range(10):
            assert (await _orgs(first, "wrong")).status_code == 401
        assert_error(await _orgs(first, plane.admin_token), 429, "rate_limit_exceeded")
        assert (await _orgs(other, plane.admin_token)).status_code == 200


async def test_internal_token_failures_are_throttled(plane: Platform) -> None:
    """The control plane's `/v1` door (reached without the edge's check): guessing the internal
    token is throttled the same way, and a right guess while blocked is not told apart."""
    internal = load_secrets(plane.s).internal_token
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.5")
    async with httpx.AsyncClient(base_url=plane.s.control_plane_url, timeout=30, transport=transport) as c:
        async def models(token: str) -> httpx.Response:
            return await c.get("/v1/models", headers={"x-nx-internal": token, "x-nx-org": "org_x"})

        for _ in range(10):
            assert_error(await models("wrong"), 401, "invalid_api_key")
        r = await models(internal)
        assert_error(r, 429, "rate_limit_exceeded")
        assert r.headers["retry-after"] == "1"
