"""Property: no request to a `/v1` operation of OpenAI's document that this platform serves gets
a 5xx, and every refusal is OpenAI's error shape with a code from the one table. Cases are
generated from the document's own schemas (tests/compat/openapi_schema.py reads it), then made
hostile (tests/hostile/fuzz.py), and sent through the real edge to the provider simulator."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.compat.openapi_schema import document
from tests.hostile.conftest import Hostile
from tests.hostile.fuzz import Schemas, fuzz_settings, hostile_body, hostile_text
from tests.hostile.helpers import assert_shape

SERVED = ("/chat/completions", "/embeddings", "/responses", "/models")
"""The document's path prefixes the platform serves (everything under them, so an operation the
platform does not implement, such as listing stored chat completions, must be a clean 4xx too)."""

MODELS = {"/chat/completions": ["sim-chat", "sim/chat", "sim/claude", "sim/plain"],
          "/embeddings": ["sim/embed", "sim/embed-fixed"], "/responses": ["sim-chat", "sim/claude"]}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    ops = []
    for path, item in document()["paths"].items():
        if path.startswith(SERVED):
            ops += [(method.upper(), path, op) for method, op in item.items()
                    if method in ("get", "post", "delete", "put", "patch")]
    return sorted(ops, key=lambda o: (o[1], o[0]))


OPERATIONS = _operations()


def _ids(hp: Hostile) -> dict[str, list[str]]:
    """Real ids for path parameters, so that cases reach past "not found"."""
    with httpx.Client(base_url=hp.p.edge, headers={"authorization": f"Bearer {hp.p.key}"}, timeout=30) as c:
        r = c.post("/v1/responses", json={"model": "sim-chat", "input": "kept for the fuzz test"})
    assert r.status_code == 200, r.text
    return {"response_id": [r.json()["id"]], "model": ["sim/chat", "sim-chat", "sim/embed"]}


def _request(schemas: Schemas, method: str, path: str, op: dict[str, Any], ids: dict[str, list[str]]) -> Any:
    path_params: dict[str, st.SearchStrategy[Any]] = {}
    query: dict[str, st.SearchStrategy[Any]] = {}
    for param in op.get("parameters", []):
        param = schemas.resolve(param["$ref"]) if "$ref" in param else param
        value = st.one_of(schemas.strategy(param.get("schema", {})), hostile_text())
        if param["in"] == "path":
            path_params[param["name"]] = st.one_of(st.sampled_from(ids.get(param["name"], ["x"])), hostile_text())
        elif param["in"] == "query":
            query[param["name"]] = value
    body = None
    ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if ref is not None:
        models = MODELS.get(path, ["sim-chat"])
        # Mostly a model that exists (three cases in four), so that most cases reach the backend.
        hints = {"model": st.one_of(st.sampled_from(models), st.sampled_from(models), st.sampled_from(models),
                                    hostile_text())}
        if path == "/responses":  # parameters the platform refuses as unsupported, mostly left out
            hints.update({name: st.one_of(st.none(), st.none(), st.none(), hostile_text())
                          for name in ("conversation", "prompt", "include", "top_logprobs", "tools", "reasoning",
                                       "tool_choice", "previous_response_id")})
        body = hostile_body(Schemas(schemas.root, hints, frozenset({"model", "input"})).strategy(ref))
    return st.fixed_dictionaries({
        "path": st.fixed_dictionaries(path_params), "query": st.fixed_dictionaries({}, optional=query),
        "body": body if body is not None else st.none()})


def _url(path: str, values: dict[str, Any]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", _quote(str(value), "/" if name == "model" else ""))
    return "/v1" + path


def _query(values: dict[str, Any]) -> str:
    """The query string, percent-encoded by hand: a generated value may hold a lone surrogate,
    which no client library would encode (its UTF-8 form is sent, as a hostile client could)."""
    pairs = []
    for name, value in values.items():
        for v in value if isinstance(value, list) else [value]:
            text = str(v).lower() if isinstance(v, bool) else str(v)
            pairs.append(f"{_quote(name)}={_quote(text)}")
    return "&".join(pairs)


def _quote(text: str, safe: str = "") -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe=safe)


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
async def test_openai_operations(hp: Hostile, method: str, path: str, op: dict[str, Any]) -> None:
    schemas = Schemas(document())
    ids = _ids(hp)
    client = httpx.Client(base_url=hp.p.edge, timeout=60,
                          headers={"authorization": f"Bearer {hp.p.key}", "content-type": "application/json"})

    @fuzz_settings()
    @given(case=_request(schemas, method, path, op, ids))
    def run(case: dict[str, Any]) -> None:
        headers = {"idempotency-key": os.urandom(8).hex()} if method == "POST" and case["body"] and \
            case["body"][:1] == b"{" and len(case["body"]) % 3 == 0 else {}
        url, query = _url(path, case["path"]), _query(case["query"])
        if query:
            url += ("&" if "?" in url else "?") + query
        r = client.request(method, url, content=case["body"], headers=headers)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert_shape(r.status_code, r.headers.get("content-type", ""), r.content)
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            assert b'"server_error"' not in r.content, r.content[-2000:]

    seen: dict[int, int] = {}
    try:
        run()
    finally:
        client.close()
        print(f"{method} {path}: statuses {dict(sorted(seen.items()))}")  # shown with pytest -s
