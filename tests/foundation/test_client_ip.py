"""IP ranges (IPv4 and IPv6) with X-Forwarded-For ignored (default) and trusted for one hop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.foundation.conftest import assert_error, make_key
from tests.harness import Platform


async def _status(p: Platform, secret: str, xff: str | None = None) -> int:
    headers = {"x-forwarded-for": xff} if xff else {}
    async with p.client(secret) as c:
        r = await c.get("/v1/models", headers=headers)
    if r.status_code != 200:
        assert_error(r, 403, "ip_not_allowed", mentions="scope: ip_ranges")
    return r.status_code


async def test_default_uses_socket_peer_and_ignores_forwarded_for(platform: Platform) -> None:
    _, loopback_v4 = await make_key(platform, ip_ranges=["127.0.0.0/8"])
    _, private_v4 = await make_key(platform, ip_ranges=["10.0.0.0/8"])
    _, doc_v6 = await make_key(platform, ip_ranges=["2001:db8::/32"])
    assert await _status(platform, loopback_v4) == 200
    # A client claiming an allowed address is not believed without trusted hops...
    assert await _status(platform, private_v4, xff="10.1.2.3") == 403
    assert await _status(platform, doc_v6, xff="2001:db8::5") == 403
    # ...and cannot get itself refused either: the socket peer decides.
    assert await _status(platform, loopback_v4, xff="10.1.2.3") == 200


async def test_single_addresses_and_mixed_families(platform: Platform) -> None:
    _, exact = await make_key(platform, ip_ranges=["127.0.0.1/32", "::1/128"])
    _, other = await make_key(platform, ip_ranges=["127.0.0.2/32", "::/0"])
    assert await _status(platform, exact) == 200
    assert await _status(platform, other) == 403  # an IPv6 range never matches an IPv4 peer


@pytest.fixture(scope="module")
async def trusting() -> AsyncIterator[Platform]:
    p = Platform(extra_env={"NX_XFF_TRUSTED_HOPS": "1"})
    try:
        await p.start()
        yield p
    finally:
        await p.stop()


async def test_trusted_hop_ipv6(trusting: Platform) -> None:
    _, v6 = await make_key(trusting, ip_ranges=["2001:db8::/32"])
    assert await _status(trusting, v6, xff="2001:db8::5") == 200
    assert await _status(trusting, v6, xff="2001:db9::5") == 403
    assert await _status(trusting, v6, xff="10.1.2.3") == 403
    assert await _status(trusting, v6) == 403  # no header: the peer 127.0.0.1 is the client


async def test_trusted_hop_ipv4(trusting: Platform) -> None:
    _, v4 = await make_key(trusting, ip_ranges=["10.0.0.0/8", "192.168.1.0/24"])
    assert await _status(trusting, v4, xff="10.1.2.3") == 200
    assert await _status(trusting, v4, xff="192.168.1.77") == 200
    assert await _status(trusting, v4, xff="192.168.2.1") == 403


async def test_only_the_trusted_hop_counts(trusting: Platform) -> None:
    # One trusted proxy appends the address it saw; anything left of it came from the client.
    _, v4 = await make_key(trusting, ip_ranges=["10.0.0.0/8"])
    assert await _status(trusting, v4, xff="10.9.9.9, 203.0.113.7") == 403
    assert await _status(trusting, v4, xff="203.0.113.7, 10.9.9.9") == 200
