"""Small leaks: what a refusal tells, IP ranges that could never match, keys dead on arrival."""

from __future__ import annotations

import time

import pytest

from core.events.ssrf import Target, UnsafeUrl, resolve
from core.ipnet import canonical_address, canonical_network
from tests.hostile.conftest import Hostile
from tests.hostile.helpers import assert_error


async def test_ssrf_refusal_does_not_say_where_a_name_points(hp: Hostile) -> None:
    """`localhost` resolves to loopback, `*.invalid` to nothing: the customer learns neither, only
    that the name is refused (so internal names cannot be mapped through the refusal)."""
    messages = []
    async with hp.p.client() as c:
        for host in ("localhost", "nx-no-such-host.invalid"):
            r = await c.post("/v1/webhooks/endpoints", json={"url": f"https://{host}/hook"})
            err = assert_error(r, 400, "invalid_request_error")
            assert err["param"] == "url"
            assert "127.0.0.1" not in err["message"] and "::1" not in err["message"], err
            assert "loopback" not in err["message"] and "resolve:" not in err["message"], err
            messages.append(err["message"].replace(host, "HOST"))
    assert messages[0] == messages[1]


async def test_ssrf_refusal_at_delivery_time_says_nothing_more() -> None:
    """The same guard runs before every delivery attempt, whose error is in the delivery log."""
    for host in ("localhost", "nx-no-such-host.invalid"):
        with pytest.raises(UnsafeUrl) as refused:
            await resolve(Target("https", host, 443, "/"), allow_private=False)
        assert "127.0.0.1" not in str(refused.value) and "loopback" not in str(refused.value)
    # A literal address is the client's own words: its reason may be given.
    with pytest.raises(UnsafeUrl, match="loopback"):
        await resolve(Target("https", "127.0.0.1", 443, "/"), allow_private=False)


def test_mapped_addresses_and_ranges_are_canonical() -> None:
    assert str(canonical_network("::ffff:127.0.0.1/128")) == "127.0.0.1/32"
    assert str(canonical_network("::ffff:10.0.0.0/104")) == "10.0.0.0/8"
    assert str(canonical_network("10.1.2.3/8")) == "10.0.0.0/8"
    assert str(canonical_network("2001:db8::/32")) == "2001:db8::/32"
    assert str(canonical_network("::/0")) == "::/0"  # not inside the mapped range: stays IPv6
    assert str(canonical_address("::ffff:192.0.2.1")) == "192.0.2.1"


async def test_mapped_ip_ranges_match_ipv4_clients(hp: Hostile) -> None:
    """`::ffff:127.0.0.1/128` names the IPv4 client 127.0.0.1: it is stored as `127.0.0.1/32` and
    lets that client in (it was accepted, and then matched no request at all)."""
    assert hp.p.boot is not None
    async with hp.p.admin() as a:
        r = await a.post(f"/api/orgs/{hp.p.boot.org_id}/keys",
                         json={"ip_ranges": ["::ffff:127.0.0.1/128", "::ffff:10.0.0.0/104"]})
        assert r.status_code == 201, r.text
        assert r.json()["key"]["ip_ranges"] == ["127.0.0.1/32", "10.0.0.0/8"]
        allowed = r.json()["secret"]
        r = await a.post(f"/api/orgs/{hp.p.boot.org_id}/keys", json={"ip_ranges": ["::ffff:10.0.0.0/104"]})
        elsewhere = r.json()["secret"]
        key_id = r.json()["key"]["id"]
        r = await a.patch(f"/api/orgs/{hp.p.boot.org_id}/keys/{key_id}",
                          json={"ip_ranges": ["::ffff:127.0.0.0/120"]})
        assert r.status_code == 200 and r.json()["ip_ranges"] == ["127.0.0.0/24"], r.text
        patched = elsewhere
        r = await a.post(f"/api/orgs/{hp.p.boot.org_id}/keys", json={"ip_ranges": ["::ffff:10.0.0.0/104"]})
        refused = r.json()["secret"]
    for secret in (allowed, patched):
        async with hp.p.client(secret) as c:
            assert (await c.get("/v1/models")).status_code == 200
    async with hp.p.client(refused) as c:
        assert_error(await c.get("/v1/models"), 403, "ip_not_allowed")


async def test_keys_cannot_be_created_expired(hp: Hostile) -> None:
    assert hp.p.boot is not None
    async with hp.p.admin() as a:
        for expires in (int(time.time()) - 60, int(time.time()), 0):
            r = await a.post(f"/api/orgs/{hp.p.boot.org_id}/keys", json={"expires_at": expires})
            err = assert_error(r, 400, "invalid_request_error")
            assert err["param"] == "expires_at"
        r = await a.post(f"/api/orgs/{hp.p.boot.org_id}/keys", json={"expires_at": int(time.time()) + 3600})
        assert r.status_code == 201, r.text
        # Expiring an existing key now is an operator's choice (like disabling it): allowed.
        r = await a.patch(f"/api/orgs/{hp.p.boot.org_id}/keys/{r.json()['key']['id']}",
                          json={"expires_at": int(time.time()) - 1})
        assert r.status_code == 200, r.text
