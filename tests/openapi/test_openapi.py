"""The published OpenAPI document (issue 14): complete, well-formed, rendered offline, and true:
every control-plane operation is called for real (`/v1` through the edge, `/api` on the control
plane's own port) and its answers are validated against the document."""

from __future__ import annotations

import re
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest
from litestar.testing import TestClient

from control_plane.api.openapi_ops import OPERATIONS
from control_plane.app import create_app
from core.errors import ERRORS
from core.settings import load_settings
from tests.harness import Platform
from tests.openapi.contract import Contract
from tests.responses.conftest import SIM_ANTHROPIC_KEY, SIM_KEY, catalog
from tests.simulator.server import SimulatorProcess


@pytest.fixture(scope="module")
def local() -> Iterator[TestClient[Any]]:
    with tempfile.TemporaryDirectory(prefix="nx-openapi-") as tmp, \
            TestClient(create_app(load_settings({"NX_DATA_DIR": tmp}))) as client:
        yield client


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_every_route_is_documented_with_id_summary_and_errors(local: TestClient[Any]) -> None:
    doc = local.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    operations = Contract(doc).operations()
    assert operations == set(OPERATIONS), (operations ^ set(OPERATIONS))
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values() if "operationId" in op]
    assert len(ids) == len(set(ids)) == len(OPERATIONS)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["tags"], (method, path)
            statuses = set(op["responses"])
            assert any(s.startswith("2") for s in statuses), (method, path)
            if path.startswith(("/v1/", "/api/")):
                assert {"400", "401", "500"} <= statuses and op["security"], (method, path)
                for status, answer in op["responses"].items():
                    if not status.startswith("2"):
                        codes = answer["content"]["application/json"]["schema"]["properties"]["error"][
                            "properties"]["code"]["enum"]
                        assert codes and all(ERRORS[c].status == int(status) for c in codes)
            if "{" in path and path.startswith(("/v1/", "/api/")):
                assert "404" in statuses, (method, path)


def test_document_is_well_formed(local: TestClient[Any]) -> None:
    doc = local.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for ref in set(_refs(doc)):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
    assert "KeyViewList" in schemas and "EndpointViewPage" in schemas  # generic lists, readably named


def test_reference_page_renders_from_local_files_only(local: TestClient[Any]) -> None:
    page = local.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in page.text and '"operationId":"createWebhookEndpoint"' in page.text.replace(" ", "")
    # Nothing from another origin: a CDN would not load offline.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text), "the page loads from elsewhere"
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert {a.rsplit("/", 1)[1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css",
                                                    "swagger-ui-standalone-preset.js"}
    for asset in assets:
        r = local.get(asset)
        assert r.status_code == 200 and len(r.content) > 0, asset


# ---- real answers against the document ----------------------------------------------------------

@pytest.fixture(scope="module")
async def sim_platform() -> AsyncIterator[Platform]:
    sim = SimulatorProcess(SIM_KEY, SIM_ANTHROPIC_KEY).start()
    try:
        with tempfile.TemporaryDirectory(prefix="nx-openapi-cat-") as tmp:
            path = Path(tmp) / "catalog.toml"
            path.write_text(catalog(sim.url))
            p = Platform(extra_env={"NX_CATALOG_PATH": str(path), "SIM_UPSTREAM_KEY": SIM_KEY,
                                    "SIM_ANTHROPIC_KEY": SIM_ANTHROPIC_KEY, "NX_WEBHOOKS_ALLOW_HTTP": "true",
                                    "NX_WEBHOOKS_ALLOW_PRIVATE": "true"})
            await p.start()
            try:
                yield p
            finally:
                await p.stop()
    finally:
        sim.stop()


@pytest.mark.slow
async def test_every_operation_answers_as_documented(sim_platform: Platform) -> None:
    p = sim_platform
    direct = f"http://127.0.0.1:{p.s.control_plane_port}"
    async with httpx.AsyncClient(base_url=p.edge, timeout=30) as edge:
        published = await edge.get("/openapi.json")  # a customer reads it on the edge's port
    assert published.status_code == 200
    contract = Contract(published.json())
    admin_headers = {"authorization": f"Bearer {p.admin_token}"}
    async with httpx.AsyncClient(base_url=direct, timeout=30, headers=admin_headers) as api, \
            p.client() as v1:
        assert (await api.get("/openapi.json")).json() == contract.doc

        async def call(client: httpx.AsyncClient, method: str, template: str, status: int,
                       path: dict[str, str] | None = None, **kwargs: Any) -> Any:
            url = template.format(**(path or {}))
            r = await client.request(method, url, **kwargs)
            assert r.status_code == status, f"{method} {url}: {r.status_code} {r.text}"
            contract.check(method, template, r)
            return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text

        await operator_api(call, api)
        await customer_api(call, v1)
        await organization_api(call, api, p)
        async with httpx.AsyncClient(base_url=direct, timeout=30) as bare:
            await call(bare, "GET", "/healthz", 200)
            await call(bare, "GET", "/api/orgs", 401)  # no admin token
        async with httpx.AsyncClient(base_url=p.edge, timeout=30) as anonymous:
            await call(anonymous, "GET", "/v1/webhooks/endpoints", 401)  # no API key
        async with httpx.AsyncClient(base_url=p.edge, timeout=30) as browser:
            await identity_api(call, browser, p)
    assert contract.operations() - contract.seen == set()


Call = Any


async def _outbox_token(p: Platform, email: str, subject: str) -> str:
    from sqlalchemy import text

    from core.db import make_engine

    engine = make_engine(p.s)
    try:
        async with engine.connect() as conn:
            body = (await conn.execute(text("SELECT body FROM mail_outbox WHERE to_address = :e AND subject = :s"
                                            " ORDER BY created_at DESC LIMIT 1"),
                                       {"e": email, "s": subject})).scalar_one()
    finally:
        await engine.dispose()
    found = re.search(r'"token": "([^"]+)"', str(body))
    assert found, body
    return found.group(1)


async def identity_api(call: Call, c: httpx.AsyncClient, p: Platform) -> None:
    """`/auth` through the edge without a key, a session cookie kept by the client."""
    email, password = f"oas-{secrets.token_hex(4)}@example.com", "orchid tundra ladder 61"
    await call(c, "POST", "/auth/signup", 202, json={"email": email, "password": password})
    await call(c, "POST", "/auth/signup", 400, json={"email": email, "password": "password1"})
    await call(c, "POST", "/auth/signin", 403, json={"email": email, "password": password})
    token = await _outbox_token(p, email, "Verify your email")
    await call(c, "POST", "/auth/verify", 200, json={"token": token})
    await call(c, "POST", "/auth/verify", 400, json={"token": token})
    await call(c, "POST", "/auth/signin", 401, json={"email": email, "password": "not the password"})
    session = await call(c, "POST", "/auth/signin", 200, json={"email": email, "password": password})
    await call(c, "GET", "/auth/session", 200)
    change = {"current_password": password, "new_password": "saffron glacier pillow 4"}
    await call(c, "POST", "/auth/password", 403, json=change)  # no CSRF token
    changed = await call(c, "POST", "/auth/password", 200, json=change,
                         headers={"x-csrf-token": session["csrf_token"]})
    await call(c, "POST", "/auth/signout", 200, headers={"x-csrf-token": changed["csrf_token"]})
    await call(c, "GET", "/auth/session", 401)
    await call(c, "POST", "/auth/signout_all", 401)
    await call(c, "POST", "/auth/password_reset", 202, json={"email": email})
    reset = await _outbox_token(p, email, "Reset your password")
    complete = {"token": reset, "password": "velvet canyon 8 drum"}
    await call(c, "POST", "/auth/password_reset/complete", 200, json=complete)
    await call(c, "POST", "/auth/password_reset/complete", 400, json=complete)  # spent
    await call(c, "POST", "/auth/webhooks/clerk", 404, content=b"{}")  # no Clerk secret configured here


async def operator_api(call: Call, api: httpx.AsyncClient) -> None:
    org = (await call(api, "POST", "/api/orgs", 201, json={"name": f"oas-{secrets.token_hex(3)}"}))["id"]
    o = {"org_id": org}
    await call(api, "GET", "/api/orgs", 200)
    await call(api, "GET", "/api/orgs/{org_id}", 200, o)
    await call(api, "PATCH", "/api/orgs/{org_id}", 200, o, json={"name": "Renamed"})
    await call(api, "GET", "/api/orgs/{org_id}", 404, {"org_id": "org_00000000000000000000000000"})
    await call(api, "POST", "/api/orgs", 400, json={"name": "x", "colour": "red"})
    project = (await call(api, "POST", "/api/orgs/{org_id}/projects", 201, o, json={"name": "P"}))["id"]
    op = {**o, "project_id": project}
    await call(api, "GET", "/api/orgs/{org_id}/projects", 200, o)
    await call(api, "GET", "/api/orgs/{org_id}/projects/{project_id}", 200, op)
    await call(api, "PATCH", "/api/orgs/{org_id}/projects/{project_id}", 200, op, json={"name": "Q"})
    user = (await call(api, "POST", "/api/users", 201, json={"email": f"{secrets.token_hex(3)}@example.com"}))["id"]
    await call(api, "GET", "/api/users", 200)
    await call(api, "GET", "/api/users/{user_id}", 200, {"user_id": user})
    ou = {**o, "user_id": user}
    await call(api, "POST", "/api/orgs/{org_id}/members", 201, o, json={"user_id": user, "role": "member"})
    await call(api, "GET", "/api/orgs/{org_id}/members", 200, o)
    await call(api, "GET", "/api/orgs/{org_id}/members/{user_id}", 200, ou)
    await call(api, "PATCH", "/api/orgs/{org_id}/members/{user_id}", 200, ou, json={"role": "billing"})
    await call(api, "DELETE", "/api/orgs/{org_id}/members/{user_id}", 200, ou)
    key = (await call(api, "POST", "/api/orgs/{org_id}/keys", 201, o, json={"name": "k"}))["key"]["id"]
    ok = {**o, "key_id": key}
    await call(api, "GET", "/api/orgs/{org_id}/keys", 200, o)
    await call(api, "GET", "/api/orgs/{org_id}/keys/{key_id}", 200, ok)
    await call(api, "PATCH", "/api/orgs/{org_id}/keys/{key_id}", 200, ok, json={"name": "renamed"})
    await call(api, "POST", "/api/orgs/{org_id}/keys/{key_id}/signing-secret", 200, ok)
    await call(api, "DELETE", "/api/orgs/{org_id}/keys/{key_id}/signing-secret", 200, ok)
    await call(api, "POST", "/api/orgs/{org_id}/keys/{key_id}/revoke", 200, ok)
    await call(api, "DELETE", "/api/orgs/{org_id}/keys/{key_id}", 200, ok)
    idem = {"idempotency-key": secrets.token_hex(8)}
    await call(api, "POST", "/api/orgs/{org_id}/ledger/grants", 201, o, json={"amount_usd": "5"}, headers=idem)
    await call(api, "POST", "/api/orgs/{org_id}/ledger/grants", 422, o, json={"amount_usd": "6"}, headers=idem)
    adj = await call(api, "POST", "/api/orgs/{org_id}/ledger/adjustments", 201, o,
                     json={"amount_nanos": -10**8, "reason": "test"}, headers={"idempotency-key": secrets.token_hex(8)})
    ot = {**o, "txn_id": adj["id"]}
    await call(api, "POST", "/api/orgs/{org_id}/ledger/transactions/{txn_id}/reverse", 201, ot,
               json={"reason": "undo"}, headers={"idempotency-key": secrets.token_hex(8)})
    await call(api, "GET", "/api/orgs/{org_id}/ledger/transactions/{txn_id}", 200, ot)
    await call(api, "GET", "/api/orgs/{org_id}/ledger/balance", 200, o)
    await call(api, "PUT", "/api/orgs/{org_id}/ledger/alerts", 200, o, json={"low_balance_nanos": 10**9})
    await call(api, "GET", "/api/orgs/{org_id}/ledger/statement", 200, o)
    await call(api, "GET", "/api/ledger/reconcile", 200, params={"org_id": org})
    await call(api, "GET", "/api/health", 200)  # docs/observability.md
    period = {"from": "0"}
    await call(api, "GET", "/api/orgs/{org_id}/exports/usage", 200, o, params=period)
    await call(api, "GET", "/api/orgs/{org_id}/exports/usage/totals", 200, o, params=period)
    await call(api, "GET", "/api/orgs/{org_id}/exports/ledger", 200, o, params={**period, "format": "jsonl"})
    await call(api, "GET", "/api/orgs/{org_id}/exports/ledger/totals", 200, o, params=period)
    await call(api, "GET", "/api/orgs/{org_id}/exports/usage", 400, o, params={**period, "format": "xml"})
    backend = {"backend_id": f"b{secrets.token_hex(3)}"}
    await call(api, "POST", "/api/backends", 201, json={"id": backend["backend_id"], "protocol": "openai",
                                                         "base_url": "http://127.0.0.1:9/v1"})
    await call(api, "GET", "/api/backends", 200)
    await call(api, "GET", "/api/backends/{backend_id}", 200, backend)
    await call(api, "PATCH", "/api/backends/{backend_id}", 200, backend, json={"timeout_ms": 20000})
    await call(api, "POST", "/api/backends/{backend_id}/disable", 200, backend)
    model = {"model_id": f"oas/{secrets.token_hex(3)}"}
    await call(api, "POST", "/api/models", 201, json={
        "id": model["model_id"], "display_name": "OAS", "backend": "sim_chat", "upstream_name": "sim-1",
        "kind": "text", "context_window": 8192, "max_output_tokens": 512})
    await call(api, "GET", "/api/models", 200)
    await call(api, "GET", "/api/models/{model_id}", 200, model)
    await call(api, "PATCH", "/api/models/{model_id}", 200, model, json={"display_name": "OAS 2"})
    await call(api, "POST", "/api/prices", 201, json={"model": model["model_id"], "input_nanos_per_mtok": 1,
                                                       "cached_input_nanos_per_mtok": 1, "output_nanos_per_mtok": 2})
    await call(api, "GET", "/api/prices", 200, params={"model": model["model_id"]})
    alias = {"alias": f"oas-{secrets.token_hex(3)}"}
    await call(api, "GET", "/api/routes", 200)
    await call(api, "PUT", "/api/routes/{alias}", 200, alias, json={"model": model["model_id"]})
    await call(api, "PUT", "/api/routes/{alias}", 200, alias, json={
        "targets": [{"model": model["model_id"], "weight": 2}, {"model": "sim/chat", "priority": 1}],
        "strategy": "least_outstanding"})
    await call(api, "GET", "/api/routes/health", 200)
    await call(api, "DELETE", "/api/routes/{alias}", 200, alias)


async def customer_api(call: Call, v1: httpx.AsyncClient) -> None:
    models = await call(v1, "GET", "/v1/models", 200)
    await call(v1, "GET", "/v1/models/{model_id}", 200, {"model_id": models["data"][0]["id"]})
    await call(v1, "GET", "/v1/models/{model_id}", 404, {"model_id": "no/such-model"})
    await call(v1, "GET", "/v1/usage", 200, params={"start_time": 0, "group_by[]": "model"})
    await call(v1, "GET", "/v1/usage", 400)
    created = await v1.post("/v1/responses", json={"model": "sim/chat", "input": "hello"})
    assert created.status_code == 200, created.text
    rid = {"response_id": created.json()["id"]}
    await call(v1, "GET", "/v1/responses/{response_id}", 200, rid)
    await call(v1, "GET", "/v1/responses/{response_id}/input_items", 200, rid)
    background = await v1.post("/v1/responses", json={
        "model": "sim/chat", "input": "[[sim chunks=100 chunk_ms=50]]", "background": True})
    assert background.status_code == 200, background.text
    bid = {"response_id": background.json()["id"]}
    await call(v1, "POST", "/v1/responses/{response_id}/cancel", 200, bid)
    await call(v1, "GET", "/v1/responses/{response_id}", 200, bid, params={"stream": "true"})
    await call(v1, "DELETE", "/v1/responses/{response_id}", 200, rid)
    await call(v1, "GET", "/v1/responses/{response_id}", 404, rid)
    hook = "/v1/webhooks/endpoints"
    endpoint = await call(v1, "POST", hook, 200, json={"url": "http://127.0.0.1:9/hook"})
    e = {"endpoint_id": endpoint["id"]}
    one = hook + "/{endpoint_id}"
    await call(v1, "POST", hook, 400, json={"url": "ftp://example.com/x"})
    await call(v1, "GET", hook, 200, params={"limit": 1})
    await call(v1, "GET", one, 200, e)
    await call(v1, "POST", one, 200, e, json={"description": "oas"})
    await call(v1, "PATCH", one, 200, e, json={"event_types": ["key.revoked"]})
    await call(v1, "POST", one + "/rotate_secret", 200, e)
    test = await call(v1, "POST", one + "/test", 200, e)
    await call(v1, "GET", one + "/deliveries", 200, e)
    await call(v1, "POST", one + "/replay", 200, e, json={"event_id": test["event_id"]})
    await call(v1, "POST", one + "/replay", 400, e, json={})
    await call(v1, "DELETE", one, 200, e)
    await call(v1, "GET", one, 404, e)


async def organization_api(call: Call, api: httpx.AsyncClient, p: Platform) -> None:
    """The customer REST API (`/v1/organization/...`) through the edge, with an admin key."""
    org = (await call(api, "POST", "/api/orgs", 201, json={"name": f"oas-org-{secrets.token_hex(3)}"}))["id"]
    secret = (await call(api, "POST", "/api/orgs/{org_id}/admin_api_keys", 201, {"org_id": org}, json={}))["value"]
    user = (await call(api, "POST", "/api/orgs/{org_id}/members", 201, {"org_id": org},
                       json={"email": f"{secrets.token_hex(3)}@example.com", "role": "developer"}))["user_id"]
    base = "/v1/organization"
    async with httpx.AsyncClient(base_url=p.edge, timeout=30, headers={"authorization": f"Bearer {secret}"}) as c:
        project = (await call(c, "POST", f"{base}/projects", 201, json={"name": "P"}))["id"]
        pp = {"project_id": project}
        await call(c, "GET", f"{base}/projects", 200, params={"limit": 1})
        await call(c, "GET", base + "/projects/{project_id}", 200, pp)
        await call(c, "GET", base + "/projects/{project_id}", 404, {"project_id": "proj_00000000000000000000000000"})
        await call(c, "POST", base + "/projects/{project_id}", 200, pp, json={"name": "Q"})
        await call(c, "POST", base + "/projects/{project_id}/budget", 200, pp, json={"monthly_budget_nanos": 10**9})
        keys = base + "/projects/{project_id}/api_keys"
        key = (await call(c, "POST", keys, 201, pp, json={"name": "k", "models": ["sim/*"]}))["key"]["id"]
        pk = {**pp, "key_id": key}
        await call(c, "GET", keys, 200, pp)
        await call(c, "GET", keys + "/{key_id}", 200, pk)
        await call(c, "POST", keys + "/{key_id}", 200, pk, json={"name": "renamed"})
        await call(c, "DELETE", keys + "/{key_id}", 200, pk)
        await call(c, "POST", base + "/projects/{project_id}/archive", 200, pp)
        u = {"user_id": user}
        await call(c, "GET", f"{base}/users", 200)
        await call(c, "GET", base + "/users/{user_id}", 200, u)
        await call(c, "POST", base + "/users/{user_id}", 200, u, json={"role": "reader"})
        await call(c, "DELETE", base + "/users/{user_id}", 200, u)
        invite = (await call(c, "POST", f"{base}/invites", 201, json={"email": "new@example.com", "role": "reader"}))
        i = {"invite_id": invite["id"]}
        await call(c, "GET", f"{base}/invites", 200)
        await call(c, "GET", base + "/invites/{invite_id}", 200, i)
        await call(c, "DELETE", base + "/invites/{invite_id}", 200, i)
        await call(c, "POST", f"{base}/invites/accept", 401, json={"token": "nxinv_x"})  # needs a session
        made = await call(c, "POST", f"{base}/admin_api_keys", 201, json={"name": "second"})
        a = {"key_id": made["id"]}
        await call(c, "GET", f"{base}/admin_api_keys", 200)
        await call(c, "GET", base + "/admin_api_keys/{key_id}", 200, a)
        await call(c, "DELETE", base + "/admin_api_keys/{key_id}", 200, a)
        await call(c, "GET", f"{base}/audit_logs", 200, params={"limit": 5})
        await call(c, "GET", f"{base}/settings", 200)
        await call(c, "POST", f"{base}/settings", 200, json={"name": "Renamed"})
