"""Property: no request to any route of the control plane gets a 5xx, and every refusal is
OpenAI's error shape with a code from the one table. The routes are read from the Litestar app
itself (so a new route is fuzzed without touching this file): path parameters, query parameters
and the body type of each handler, whose msgspec JSON Schema generates the cases (the types are
the handlers' own, so this is their contract), made hostile as in tests/hostile/fuzz.py. `/api`
goes with the admin token, `/v1` with an API key, both through the real edge.

A platform of this module's own: the management API changes global state (routes, backends,
models, plans) that other tests rely on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.app import create_app
from control_plane.usage.model import FILTERS, GROUPS
from control_plane.usage.params import SCALARS
from tests.hostile.conftest import Hostile, start_hostile
from tests.hostile.fuzz import Schemas, fuzz_settings, hostile_body, hostile_text, scalar
from tests.hostile.helpers import assert_shape

RESERVED = {"self", "state", "request", "socket", "headers", "cookies", "query", "scope", "body", "data"}
EXTRA_QUERY = {
    # Handlers that read their query parameters themselves (not from their signature).
    "/v1/usage": [*SCALARS, "group_by", *FILTERS, "user_ids"],
    "/api/orgs/{org_id:str}/exports": ["format", "account", "from", "to", "project_ids", "models"],
}
PUBLIC_URLS = ["https://93.184.215.14/hook", "https://[2606:4700:4700::1111]/h?x=1", "https://example.invalid/"]


def _routes() -> list[tuple[str, str, Any]]:
    from core.settings import load_settings
    app = create_app(load_settings({"NX_DATA_DIR": "/nonexistent-not-started"}))
    found = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                if route.path != "/healthz":
                    found.append((method, route.path, handler))
    return sorted(found, key=lambda r: (r[1], r[0]))


ROUTES = _routes()


def _schema(annotation: Any) -> dict[str, Any] | None:
    try:
        return msgspec.json.schema(annotation)  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        return None


def _query(path: str, handler: Any) -> dict[str, st.SearchStrategy[Any]]:
    deps = set(handler.resolve_dependencies())
    params: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in handler.parsed_fn_signature.parameters.items():
        if name in deps or name in RESERVED or "{" + name + ":" in path:
            continue
        schema = _schema(field.annotation)
        params[name] = st.one_of(Schemas(schema).strategy(schema), hostile_text()) if schema else scalar()
    for prefix, names in EXTRA_QUERY.items():
        if path.startswith(prefix):
            values = st.one_of(st.sampled_from(["0", "1700000000", "1d", "1h", "csv", "jsonl", "wallet",
                                                *GROUPS, "99999999999999999999", "-1"]), hostile_text())
            params.update({n: values for n in names})
    return params


@pytest.fixture(scope="module")
async def own() -> AsyncIterator[tuple[Hostile, dict[str, list[str]], str]]:
    running = await start_hostile()
    try:
        yield running, await _seed(running), await _v1_key(running)
    finally:
        await running.stop()


async def _seed(h: Hostile) -> dict[str, list[str]]:
    """Real ids for path parameters, so that cases reach past "not found"."""
    async with h.p.admin() as a:
        org = (await a.post("/api/orgs", json={"name": "fuzzed"})).json()["id"]
        project = (await a.post(f"/api/orgs/{org}/projects", json={"name": "fuzzed"})).json()["id"]
        user = (await a.post("/api/users", json={"email": "fuzz@example.com"})).json()["id"]
        await a.post(f"/api/orgs/{org}/members", json={"user_id": user, "role": "member"})
        key = (await a.post(f"/api/orgs/{org}/keys", json={"name": "fuzzed"})).json()
        txn = (await a.post(f"/api/orgs/{org}/ledger/grants", json={"amount_nanos": 10**9})).json()
    async with h.p.client(key["secret"]) as c:
        endpoint = (await c.post("/v1/webhooks/endpoints", json={"url": PUBLIC_URLS[0]})).json()["id"]
    return {"org_id": [org], "project_id": [project], "user_id": [user], "key_id": [key["key"]["id"]],
            "txn_id": [str(txn.get("id") or txn.get("transaction", {}).get("id", "txn_x"))],
            "endpoint_id": [endpoint], "backend_id": ["sim"], "model_id": ["sim/chat"], "alias": ["fuzz-alias"],
            "response_id": ["resp_00000000000000000000000000"]}


async def _v1_key(h: Hostile) -> str:
    """A key of its own for /v1 cases: the fuzzed management API may revoke the seeded one."""
    assert h.p.boot is not None
    async with h.p.admin() as a:
        return str((await a.post(f"/api/orgs/{h.p.boot.org_id}/keys", json={"name": "v1"})).json()["secret"])


def _case(method: str, path: str, handler: Any, ids: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    names = [part.split(":")[0].strip("{") for part in path.split("/") if part.startswith("{")]
    path_values = st.fixed_dictionaries({n: st.one_of(st.sampled_from(ids.get(n, ["x"])), st.sampled_from(
        ids.get(n, ["x"])), hostile_text()) for n in names})
    data = handler.parsed_fn_signature.parameters.get("data")
    body: st.SearchStrategy[Any] = st.none()
    if data is not None and (schema := _schema(data.annotation)) is not None:
        hints = {"url": st.one_of(st.sampled_from(PUBLIC_URLS), hostile_text()), "project": st.none(),
                 "email": st.one_of(st.emails(), hostile_text())}
        body = hostile_body(Schemas(schema, hints).strategy(schema))
    elif method in ("POST", "PUT", "PATCH"):
        body = st.one_of(st.none(), hostile_body(st.dictionaries(st.text(max_size=8), scalar(), max_size=3)))
    return st.fixed_dictionaries({"path": path_values, "body": body,
                                  "query": st.fixed_dictionaries({}, optional=_query(path, handler))})


def _url(path: str, values: dict[str, str]) -> str:
    for part in path.split("/"):
        if part.startswith("{"):
            name, _, kind = part.strip("{}").partition(":")
            path = path.replace(part, quote(values[name].encode("utf-8", "surrogatepass"),
                                            safe="/" if kind == "path" else ""))
    return path


def _q(values: dict[str, Any]) -> str:
    pairs = []
    for name, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        pairs.append(quote(name) + "=" + quote(text.encode("utf-8", "surrogatepass"), safe=""))
    return "&".join(pairs)


@pytest.mark.parametrize(("method", "path", "handler"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
async def test_control_plane_routes(own: tuple[Hostile, dict[str, list[str]], str], method: str, path: str,
                                    handler: Any) -> None:
    h, ids, v1_key = own
    token = h.p.admin_token if path.startswith("/api") else v1_key
    client = httpx.Client(base_url=h.p.edge if path.startswith("/v1") else _admin_base(h), timeout=60,
                          headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    seen: dict[int, int] = {}

    @fuzz_settings()
    @given(case=_case(method, path, handler, ids))
    def run(case: dict[str, Any]) -> None:
        url, query = _url(path, case["path"]), _q(case["query"])
        r = client.request(method, url + ("?" + query if query else ""), content=case["body"])
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        if r.headers.get("content-type", "").startswith(("text/csv", "application/x-ndjson")):
            assert r.status_code == 200, r.text[:500]  # an export: its errors come before the stream
            return
        assert_shape(r.status_code, r.headers.get("content-type", ""), r.content)

    try:
        run()
    finally:
        client.close()
        print(f"{method} {path}: statuses {dict(sorted(seen.items()))}")  # shown with pytest -s


def _admin_base(h: Hostile) -> str:
    """Where the management API is served: its own listener (never the public edge)."""
    return h.p.operator

