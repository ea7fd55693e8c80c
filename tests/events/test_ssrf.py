"""SSRF: with the development settings off (the session platform), every URL that points at a
non-public address is refused at creation, through the real edge; the guard's address rules."""

from __future__ import annotations

import ipaddress

import pytest

from core.events.ssrf import vet_address
from tests.harness import Platform

REFUSED = [
    "http://example.com/hook",                # plain http
    "https://127.0.0.1/hook", "https://127.1.2.3:8443/hook", "https://localhost/hook",
    "https://10.0.0.1/hook", "https://172.16.5.4/hook", "https://192.168.1.1/hook",
    "https://100.64.0.1/hook", "https://169.254.169.254/latest/meta-data", "https://0.0.0.0/hook",
    "https://[::1]/hook", "https://[::ffff:127.0.0.1]/hook", "https://[::ffff:10.0.0.1]/hook",
    "https://[::127.0.0.1]/hook", "https://[fd00:ec2::254]/hook", "https://[fc00::1]/hook",
    "https://[fe80::1]/hook", "https://[64:ff9b::a00:1]/hook", "https://[2002:a00:1::]/hook",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_private_and_loopback_urls_are_refused(platform: Platform, url: str) -> None:
    async with platform.client() as c:
        r = await c.post("/v1/webhooks/endpoints", json={"url": url})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "url"


async def test_public_address_is_accepted(platform: Platform) -> None:
    # An IP literal needs no DNS: the guard itself, not the network, decides.
    async with platform.client() as c:
        r = await c.post("/v1/webhooks/endpoints", json={"url": "https://93.184.215.14/hook"})
        assert r.status_code == 200, r.text
        assert (await c.delete(f"/v1/webhooks/endpoints/{r.json()['id']}")).status_code == 200


def test_address_rules() -> None:
    def why(ip: str, allow_private: bool = False) -> str | None:
        return vet_address(ipaddress.ip_address(ip), allow_private)
    assert why("8.8.8.8") is None and why("2606:4700:4700::1111") is None
    for ip in ("127.0.0.1", "10.1.1.1", "192.168.0.1", "172.31.255.255", "100.127.0.1", "169.254.1.1",
               "::1", "fe80::1", "fd12::1", "::ffff:8.8.8.8", "::a00:1", "224.0.0.1", "0.0.0.0"):  # noqa: S104
        assert why(ip) is not None, ip
    # The development setting opens private ranges but never cloud metadata or mapped addresses.
    assert why("127.0.0.1", allow_private=True) is None
    for ip in ("169.254.169.254", "fd00:ec2::254", "::ffff:127.0.0.1"):
        assert why(ip, allow_private=True) is not None, ip
