"""`GET /v1/models` and `GET /v1/models/{id}` through the edge: OpenAI's Model and list schemas
(from the reference OpenAPI document) plus our extensions."""

from __future__ import annotations

import re
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import msgspec
import pytest
import yaml  # type: ignore[import-untyped]

from control_plane.domain.catalog import load_catalog
from core.money import format_usd
from tests.compat.openapi_schema import SPEC_PATH
from tests.foundation.conftest import assert_error
from tests.harness import Platform

DECIMAL = re.compile(r"^\d+\.\d{2,9}$")


@pytest.fixture(scope="module")
def list_schema() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schemas = yaml.load(SPEC_PATH.read_text(), Loader=loader)["components"]["schemas"]  # noqa: S506
    return {"$ref": "#/components/schemas/ListModelsResponse",
            "components": {"schemas": {"Model": schemas["Model"],
                                       "ListModelsResponse": schemas["ListModelsResponse"]}}}


def _check_extensions(m: dict[str, Any]) -> None:
    pricing = m["pricing"]
    for field in ("input", "cached_input", "output"):
        assert isinstance(pricing[field], str) and DECIMAL.match(pricing[field]), pricing
    assert pricing["currency"] == "USD" and pricing["unit"] == "per_million_tokens"
    assert isinstance(m["capabilities"], dict) and isinstance(m["capabilities"]["streaming"], bool)
    assert isinstance(m["context_window"], int) and m["context_window"] > 0
    assert isinstance(m["max_output_tokens"], int)
    assert m["latency"] is None  # no traffic yet: never invented
    assert m["kind"] in ("text", "embedding")


async def test_list_matches_openai_schema(platform: Platform, list_schema: dict[str, Any]) -> None:
    async with platform.client() as c:
        r = await c.get("/v1/models")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    jsonschema.validate(body, list_schema)
    by_id = {m["id"]: m for m in body["data"]}
    for m in body["data"]:
        _check_extensions(m)
    catalog = load_catalog(platform.s.catalog_path, platform.s)
    for decl in catalog.models:
        m = by_id[decl.id]
        assert decl.price is not None
        assert m["pricing"]["input"] == format_usd(decl.price.input_nanos_per_mtok)
        assert m["pricing"]["output"] == format_usd(decl.price.output_nanos_per_mtok)
        assert (m["context_window"], m["max_output_tokens"]) == (decl.context_window, decl.max_output_tokens)
        assert m["capabilities"] == msgspec.to_builtins(decl.capabilities)
        assert m["alias_of"] is None and m["kind"] == decl.kind
        for alias in decl.aliases:
            assert by_id[alias]["alias_of"] == decl.id


async def test_retrieve_model_alias_and_unknown(platform: Platform, list_schema: dict[str, Any]) -> None:
    model_schema = {**list_schema, "$ref": "#/components/schemas/Model"}
    async with platform.client() as c:
        one = await c.get("/v1/models/local/gemma-3-270m")
        alias = await c.get("/v1/models/orion-reason")
        missing = await c.get("/v1/models/local/no-such-model")
        missing_alias = await c.get("/v1/models/gpt-nope")
    assert one.status_code == 200 and one.json()["id"] == "local/gemma-3-270m"
    jsonschema.validate(one.json(), model_schema)
    _check_extensions(one.json())
    assert alias.status_code == 200
    assert alias.json()["id"] == "orion-reason" and alias.json()["alias_of"] == "local/gemma-3-270m"
    assert alias.json()["pricing"] == one.json()["pricing"]
    err = assert_error(missing, 404, "model_not_found")
    assert err["param"] == "model" and "local/no-such-model" in err["message"]
    assert_error(missing_alias, 404, "model_not_found")
