"""What the public edge serves (issue 13, item 4), through the real Envoy: the operator API
(`/api/...`) only on its own listener, never on the edge port, however its path is spelled; every
spelling of a `/v1` path meets the key check (path normalisation before routing and authorization);
the operator listener stamps the client address the admin-token throttle keys on; Envoy's own
refusals of a huge header or a `#fragment` carry OpenAI's error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.harness import Platform
from tests.hostile.helpers import RawResponse, assert_error, assert_shape, raw_request

API_SPELLINGS = ["/api/orgs", "//api/orgs", "/api//orgs", "/%61pi/orgs", "/%61%70%69/orgs", "/api%2forgs",
                 "/api%2Forgs", "/./api/orgs", "/v1/../api/orgs", "/v1/%2e%2e/api/orgs", "/x/..%2fapi/orgs",
                 "/api/orgs/", "/api"]
V1_SPELLINGS = ["/v1/models", "//v1/models", "/v1//models", "/v1%2fmodels", "/v1%2Fmodels", "/%76%31/models",
                "/v1/./models", "/x/../v1/models", "/%2fv1/models", "/v1/%6dodels"]


@pytest.fixture(scope="module")
async def p() -> AsyncIterator[Platform]:
    platform = Platform()
    try:
        yield await platform.start()
    finally:
        await platform.stop()


async def test_the_edge_refuses_the_operator_api_however_spelled(p: Platform) -> None:
    assert p.boot is not None
    admin = {"authorization": f"Bearer {p.admin_token}"}
    async with httpx.AsyncClient(base_url=p.edge, timeout=30, headers=admin) as edge, p.admin() as operator:
        before = len((await operator.get(f"/api/orgs/{p.boot.org_id}/keys")).json()["data"])
        for path in API_SPELLINGS:
            # httpx would tidy some of these; send the path exactly as written
            r = await edge.send(edge.build_request("GET", httpx.URL(p.edge, raw_path=path.encode())))
            assert_error(r, 404, "not_found")
        r = await edge.post(f"/api/orgs/{p.boot.org_id}/keys", json={"name": "through the edge"})
        assert_error(r, 404, "not_found")
        raw = await raw_request(p.s.edge_port, f"POST //%61pi/orgs/{p.boot.org_id}/keys HTTP/1.1\r\nhost: x\r\n"
                                f"authorization: Bearer {p.admin_token}\r\ncontent-type: application/json".encode(),
                                b"{}")
        assert raw.status == 404, raw
        after = len((await operator.get(f"/api/orgs/{p.boot.org_id}/keys")).json()["data"])
        assert after == before  # no key was made through the edge
        # The operator listener serves the API (and only it).
        assert (await operator.get("/api/orgs")).status_code == 200
        assert (await operator.post("/api/orgs", json={"name": "via-operator"})).status_code == 201
        assert_error(await operator.get("/v1/models"), 404, "not_found")
        assert_error(await operator.get("/api/orgs", headers={"authorization": "Bearer wrong"}), 401,
                     "invalid_api_key")


async def test_every_spelling_of_a_v1_path_meets_the_key_check(p: Platform) -> None:
    async with httpx.AsyncClient(base_url=p.edge, timeout=30) as anonymous, p.client() as keyed:
        for path in V1_SPELLINGS:
            url = httpx.URL(p.edge, raw_path=path.encode())
            refused = await anonymous.send(anonymous.build_request("GET", url))
            assert_error(refused, 401, "missing_api_key")
            allowed = await keyed.send(keyed.build_request("GET", url))
            assert allowed.status_code == 200 and allowed.json()["object"] == "list", (path, allowed.text[:200])
        # A model id with a slash, as an SDK escapes it, still reaches its model.
        url = httpx.URL(p.edge, raw_path=b"/v1/models/local%2Fgemma-3-270m")
        r = await keyed.send(keyed.build_request("GET", url))
        assert r.status_code == 200 and r.json()["id"] == "local/gemma-3-270m", r.text


async def test_the_operator_listener_stamps_the_client_address(p: Platform) -> None:
    """The admin-token throttle keys on x-nx-client-ip: a client cannot pick a fresh address per
    guess, since the operator listener overwrites it with the socket's."""
    async with httpx.AsyncClient(base_url=p.operator, timeout=30,
                                 transport=httpx.AsyncHTTPTransport(local_address="127.0.0.9")) as c:
        for i in range(10):
            r = await c.get("/api/orgs", headers={"authorization": "Bearer wrong", "x-nx-client-ip": f"10.9.0.{i}",
                                                  "x-forwarded-for": f"10.8.0.{i}"})
            assert_error(r, 401, "invalid_api_key")
        r = await c.get("/api/orgs", headers={"authorization": "Bearer wrong", "x-nx-client-ip": "10.9.1.1"})
        err = assert_error(r, 429, "rate_limit_exceeded")
        assert "127.0.0.9" in err["message"], err
    async with p.admin() as other:  # another address is not locked out
        assert (await other.get("/api/orgs")).status_code == 200


async def _oversized(port: int) -> RawResponse:
    """A 100 KB Authorization header (Envoy's limit is 60 KiB). Envoy answers and closes as soon as
    the limit is passed; if bytes of ours were still unread, the kernel resets the connection and
    the answer can be lost in transit, so that (and only that) is tried again."""
    for _ in range(5):
        try:
            return await raw_request(port, b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
                                     + b"a" * 100_000)
        except ConnectionResetError:
            continue
    raise AssertionError("every attempt was reset before Envoy's answer arrived")


@pytest.mark.parametrize("listener", ["edge", "operator"])
async def test_envoys_own_refusals_are_openai_shaped(p: Platform, listener: str) -> None:
    port = p.s.edge_port if listener == "edge" else p.s.operator_port
    huge = await _oversized(port)
    err = assert_shape(huge.status, huge.headers.get("content-type", ""), huge.body)
    assert huge.status == 431 and err is not None and err["code"] == "headers_too_large", huge
    for target in (b"/v1/models#x", b"/api/orgs#x", b"/v1/models?a=b#frag"):
        r = await raw_request(port, b"GET " + target + b" HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + p.key.encode())
        err = assert_shape(r.status, r.headers.get("content-type", ""), r.body)
        assert r.status == 400 and err is not None and err["code"] == "invalid_path", (target, r)
