"""A caller that reaches the control plane's port without passing Envoy (a neighbour on its
network) cannot name its own client address: `x-nx-client-ip` is believed only from a peer inside
NX_TRUSTED_PROXIES (control_plane/api/guards.py), so the admin-token throttle, like the sign-in
lockout, keys on that caller's socket address however many addresses it claims."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.harness import Platform
from tests.hostile.helpers import assert_error

# The edge (Envoy) reaches the control plane from 127.0.0.1; any other loopback address stands for a
# host on the control plane's network that is not the edge.
TRUSTED = {"NX_TRUSTED_PROXIES": "127.0.0.1/32"}


@pytest.fixture(scope="module")
async def p() -> AsyncIterator[Platform]:
    platform = Platform(extra_env=TRUSTED)
    try:
        yield await platform.start()
    finally:
        await platform.stop()


async def _guess(c: httpx.AsyncClient, i: int) -> httpx.Response:
    return await c.get("/api/orgs", headers={"authorization": "Bearer wrong", "x-nx-client-ip": f"10.7.{i}.1"})


async def test_a_direct_caller_is_known_by_its_socket_address(p: Platform) -> None:
    direct = httpx.AsyncHTTPTransport(local_address="127.0.0.8")
    async with httpx.AsyncClient(base_url=p.s.control_plane_url, timeout=30, transport=direct) as c:
        for i in range(10):  # ten addresses claimed, one caller: the throttle counts all ten
            assert_error(await _guess(c, i), 401, "invalid_api_key")
        err = assert_error(await _guess(c, 99), 429, "rate_limit_exceeded")
        assert "127.0.0.8" in err["message"] and "10.7." not in err["message"], err


async def test_the_edge_still_names_the_client(p: Platform) -> None:
    via_edge = httpx.AsyncHTTPTransport(local_address="127.0.0.6")
    async with httpx.AsyncClient(base_url=p.operator, timeout=30, transport=via_edge) as c:
        for i in range(10):
            assert_error(await _guess(c, i), 401, "invalid_api_key")
        err = assert_error(await _guess(c, 99), 429, "rate_limit_exceeded")
        assert "127.0.0.6" in err["message"], err  # Envoy's stamp, from the socket it accepted
    async with p.admin() as operator:  # neither Envoy's own address nor another client is locked out
        assert (await operator.get("/api/orgs")).status_code == 200
