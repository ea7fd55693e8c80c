"""Hostile bodies, paths and values through the real edge: each is an OpenAI-shaped 4xx from the
one error table, never a 5xx, and never an error of the edge's authorization call (which Envoy
would answer as "sidecar unavailable" for every client)."""

from __future__ import annotations

import json
import os
import random
import string
from typing import Any

import httpx
import pytest

from tests.hostile.conftest import Hostile
from tests.hostile.helpers import assert_error

DEEP = b"[" * 10_000 + b"]" * 10_000
"""Deeper than any parser's recursion limit."""


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def chat(content: bytes = b'"hi"', model: bytes = b'"sim-chat"', extra: bytes = b"") -> bytes:
    return b'{"model":' + model + b',"messages":[{"role":"user","content":' + content + b"}]" + extra + b"}"


# (name, method, path, body, status, code); the body is sent as raw bytes.
V1_CASES: list[tuple[str, str, str, bytes | None, int, str]] = []
for route, valid in (("/v1/chat/completions", chat()),
                     ("/v1/embeddings", b'{"model":"sim/embed","input":"hi"}'),
                     ("/v1/responses", b'{"model":"sim-chat","input":"hi"}'),
                     ("/v1/webhooks/endpoints", b'{"url":"https://93.184.215.14/hook"}')):
    model = b"sim/embed" if "embeddings" in route else b"sim-chat"
    V1_CASES += [
        (f"{route} 10k-deep array", "POST", route, DEEP, 400, "invalid_request_error" if "webhooks" not in route
         else "invalid_json"),
        (f"{route} 10k-deep field", "POST", route, valid[:-1] + b',"x":' + DEEP + b"}", 400, "invalid_json"),
        # Deep enough to pass the sidecar's parser and fail a later one (its stack is deeper).
        (f"{route} 990-deep field", "POST", route, valid[:-1] + b',"x":' + nested(985) + b"}", 400, "invalid_json"),
        (f"{route} invalid UTF-8 in model", "POST", route, b'{"model":"\xff\xfe","url":"https://x.y/"}', 400,
         "invalid_json"),
        (f"{route} invalid UTF-8 elsewhere", "POST", route, valid[:-1] + b',"user":"\xc3\x28"}', 400, "invalid_json"),
        (f"{route} encoded surrogate", "POST", route, valid[:-1] + b',"user":"\xed\xa0\x80"}', 400, "invalid_json"),
        (f"{route} escaped lone surrogate", "POST", route, valid[:-1] + b',"user":"\\ud800"}', 400, "invalid_json"),
        (f"{route} NaN", "POST", route, valid[:-1] + b',"temperature":NaN}', 400, "invalid_json"),
        # The Responses body is decoded into its type at once, which names the parameter.
        (f"{route} 1e400", "POST", route, valid[:-1] + b',"temperature":1e400}', 400,
         "invalid_request_error" if "responses" in route else "invalid_json"),
        (f"{route} array body", "POST", route, b"[1,2]", 400, "invalid_request_error"),
        (f"{route} null body", "POST", route, b"null", 400, "invalid_request_error"),
        (f"{route} trailing garbage", "POST", route, valid + b"}", 400, "invalid_json"),
    ]
V1_CASES += [
    ("chat invalid UTF-8 in content", "POST", "/v1/chat/completions", chat(b'"hi \xff"'), 400, "invalid_json"),
    ("chat to Anthropic, invalid UTF-8", "POST", "/v1/chat/completions", chat(b'"hi \xff"', b'"sim/claude"'), 400,
     "invalid_json"),
    ("chat to Anthropic, stop of the wrong type", "POST", "/v1/chat/completions",
     chat(model=b'"sim/claude"', extra=b',"stop":5'), 400, "invalid_request_error"),
    ("chat to Anthropic, tool call of the wrong shape", "POST", "/v1/chat/completions",
     b'{"model":"sim/claude","messages":[{"role":"assistant","tool_calls":[5]},{"role":"user","content":"x"}]}',
     400, "invalid_request_error"),
    ("embeddings invalid UTF-8 in input", "POST", "/v1/embeddings", b'{"model":"sim/embed","input":"hi \xff"}', 400,
     "invalid_json"),
    ("embeddings invalid UTF-8 in a list", "POST", "/v1/embeddings", b'{"model":"sim/embed","input":["\xff"]}', 400,
     "invalid_json"),
    ("responses invalid UTF-8 in input", "POST", "/v1/responses", b'{"model":"sim-chat","input":"hi \xff"}', 400,
     "invalid_json"),
    ("responses text.format of the wrong type", "POST", "/v1/responses",
     b'{"model":"sim-chat","input":"x","text":{"format":5}}', 400, "invalid_request_error"),
    ("responses previous_response_id with NUL", "POST", "/v1/responses",
     b'{"model":"sim-chat","input":"x","previous_response_id":"resp_\\u0000"}', 404, "not_found"),
    ("webhook URL with NUL", "POST", "/v1/webhooks/endpoints", b'{"url":"https://93.184.215.14/\\u0000"}', 400,
     "invalid_request_error"),
    ("webhook description with NUL", "POST", "/v1/webhooks/endpoints",
     b'{"url":"https://93.184.215.14/hook","description":"a\\u0000"}', 400, "invalid_request_error"),
    ("webhook body nested 40 deep", "POST", "/v1/webhooks/endpoints",
     b'{"url":"https://93.184.215.14/hook","x":' + nested(40) + b"}", 400, "invalid_json"),
    ("NUL in a response id", "GET", "/v1/responses/resp_%00", None, 400, "invalid_path"),
    ("NUL in a webhook endpoint id", "GET", "/v1/webhooks/endpoints/whep_%00", None, 400, "invalid_path"),
    ("NUL in a cursor", "GET", "/v1/webhooks/endpoints?after=%00", None, 400, "invalid_request_error"),
    ("NUL in a model id", "GET", "/v1/models/%00", None, 400, "invalid_path"),
    ("NUL in the path of a claimed POST", "POST", "/v1/responses/resp_%00/cancel", b"{}", 400,
     "invalid_path"),
]


async def _send(hp: Hostile, client: httpx.AsyncClient, method: str, path: str, body: bytes | None,
                **headers: str) -> httpx.Response:
    return await client.request(method, path, content=body, headers={"content-type": "application/json", **headers})


async def _authz_errors(hp: Hostile) -> int:
    """Envoy's count of authorization calls that failed (answered 503 sidecar_unavailable)."""
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://127.0.0.1:{hp.p.s.envoy_admin_port}/stats", params={"filter": "ext_authz.error"})
    return sum(int(line.rsplit(":", 1)[1]) for line in r.text.splitlines() if line.strip())


@pytest.mark.parametrize(("name", "method", "path", "body", "status", "code"), V1_CASES,
                         ids=[c[0] for c in V1_CASES])
async def test_v1_hostile_input(hp: Hostile, name: str, method: str, path: str, body: bytes | None, status: int,
                                code: str) -> None:
    before = await _authz_errors(hp)
    async with hp.p.client() as c:
        r = await _send(hp, c, method, path, body, **{"idempotency-key": f"k-{os.urandom(6).hex()}"}
                        if method == "POST" and "cancel" in path else {})
        assert_error(r, status, code)
        # The sidecar is still there for everyone, and was never counted as failing.
        assert (await c.get("/v1/models")).status_code == 200
    assert await _authz_errors(hp) == before


def _org(hp: Hostile) -> str:
    assert hp.p.boot is not None
    return hp.p.boot.org_id


def _noise(n: int) -> str:
    """Random text that does not compress (a long value PostgreSQL must store or index as it is)."""
    rng = random.Random(n)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def _api_cases(org: str) -> list[tuple[str, str, str, Any, int, str]]:
    deep = DEEP
    return [
        ("org 10k-deep", "POST", "/api/orgs", deep, 400, "invalid_json"),
        ("org invalid UTF-8", "POST", "/api/orgs", b'{"name":"\xff"}', 400, "invalid_json"),
        ("org name with NUL", "POST", "/api/orgs", b'{"name":"a\\u0000"}', 400, "invalid_request_error"),
        ("user email with NUL", "POST", "/api/users", b'{"email":"a\\u0000@example.com"}', 400,
         "invalid_request_error"),
        ("key project with NUL", "POST", f"/api/orgs/{org}/keys", b'{"projects":["\\u0000"]}', 400,
         "invalid_request_error"),
        ("key expiry beyond 64-bit milliseconds", "POST", f"/api/orgs/{org}/keys", b'{"expires_at":99999999999999999}',
         400, "invalid_request_error"),
        ("key budget beyond 64 bits", "POST", f"/api/orgs/{org}/keys",
         b'{"monthly_budget_nanos":99999999999999999999}', 400, "invalid_request_error"),
        ("key rpm beyond 64 bits", "POST", f"/api/orgs/{org}/keys", b'{"rate_limits":{"rpm":99999999999999999999}}',
         400, "invalid_request_error"),
        ("grant beyond 64 bits", "POST", f"/api/orgs/{org}/ledger/grants", b'{"amount_nanos":99999999999999999999}',
         400, "invalid_request_error"),
        ("NUL in an org id", "GET", "/api/orgs/org_%00", None, 400, "invalid_path"),
        ("NUL in a key id", "GET", f"/api/orgs/{org}/keys/key_%00", None, 400, "invalid_path"),
        ("array body", "POST", "/api/orgs", b"[]", 400, "invalid_request_error"),
    ]


async def test_api_hostile_input(hp: Hostile) -> None:
    async with hp.p.admin() as a:
        for name, method, path, body, status, code in _api_cases(_org(hp)):
            r = await _send(hp, a, method, path, body)
            try:
                assert_error(r, status, code)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None
        assert (await a.get("/api/orgs")).status_code == 200


async def test_long_random_values_are_refused_or_stored(hp: Hostile) -> None:
    """Values too long for a PostgreSQL index entry (~2.7 kB, and random text does not compress)
    in the places that are indexed: never a 5xx."""
    long = _noise(9000)
    async with hp.p.client() as c:
        # The Idempotency-Key claim stores the path in a unique index: refused before it.
        r = await c.post(f"/v1/responses/resp_{long}/cancel", json={}, headers={"idempotency-key": "long-path"})
        assert_error(r, 400, "invalid_request_error")
    async with hp.p.admin() as a:
        for path, body in (("/api/orgs", {"name": long}), ("/api/users", {"email": f"{long}@example.com"}),
                           (f"/api/orgs/{_org(hp)}/projects", {"name": long})):
            r = await a.post(path, json=body)
            assert r.status_code == 400, (path, r.status_code, r.text[:300])
            assert_error(r, 400, r.json()["error"]["code"])


async def test_echoed_values_are_bounded(hp: Hostile) -> None:
    """An error message quotes a client's value, but never all of a long one."""
    async with hp.p.client() as c:
        r = await c.post("/v1/chat/completions", json=json.loads(chat(model=json.dumps("m" * 100_000).encode())))
        assert_error(r, 404, "model_not_found")
        assert len(r.content) < 2_000
        r = await c.get("/v1/models", headers={"openai-project": "p" * 50_000})
        assert_error(r, 403, "project_not_allowed")
        assert len(r.content) < 2_000


async def test_control_plane_answers_every_refusal_in_shape(hp: Hostile) -> None:
    """Straight to the control plane (wherever the edge routes its pages): a static file name
    longer than a file system allows was a 500, a framework's own 404 page was HTML."""
    async with httpx.AsyncClient(base_url=hp.p.s.control_plane_url, timeout=30) as c:
        assert_error(await c.get("/docs/assets/" + "x" * 300), 404, "not_found")
        assert_error(await c.get("/docs/no-such-page"), 404, "not_found")
        assert (await c.get("/docs/assets/swagger-ui.css")).status_code == 200
