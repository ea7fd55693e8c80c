"""Validate bodies and stream events against OpenAI's official OpenAPI document.

`validate(obj, "CreateChatCompletionResponse")` raises `jsonschema.ValidationError` naming the
failing path. The document (tests/data/openai-openapi.yaml, OpenAPI 3.1 = JSON Schema 2020-12; its
source and version are in tests/data/README.md) is parsed once per process; `$ref`s resolve inside
it. The 3.0-style `nullable: true` that the document still uses in places is honoured by widening
the type to include null.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = ["SPEC_PATH", "validate", "validator"]

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "openai-openapi.yaml"
_URI = "urn:openai-openapi"


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items()}
        if out.pop("nullable", False):
            kind = out.get("type")
            if isinstance(kind, str):
                out["type"] = [kind, "null"]
            elif isinstance(kind, list) and "null" not in kind:
                out["type"] = [*kind, "null"]
            elif "type" not in out:
                out = {"anyOf": [out, {"type": "null"}]}
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@functools.cache
def _registry() -> Registry[Any]:
    with SPEC_PATH.open() as f:
        doc = _nullable(yaml.load(f, Loader=yaml.CSafeLoader))
    registry: Registry[Any] = Registry().with_resource(_URI, DRAFT202012.create_resource(doc))
    return registry


@functools.cache
def validator(schema_name: str) -> Any:
    schema = {"$ref": f"{_URI}#/components/schemas/{schema_name}"}
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def validate(obj: Any, schema_name: str) -> None:
    error = jsonschema.exceptions.best_match(validator(schema_name).iter_errors(obj))
    if error is not None:
        raise error


def document() -> dict[str, Any]:
    """The whole document, as `validate` reads it, for tests that generate requests from it."""
    doc: dict[str, Any] = _registry().contents(_URI)
    return doc
