"""Hypothesis strategies for the fuzz tests: a request body generated from a JSON Schema (OpenAI's
document for the inference routes, msgspec's schema of a handler's own type for the control
plane), then often made hostile: a field replaced by a value of the wrong type, out of range,
too long or holding NUL; raw bytes no encoder would write (invalid UTF-8, an encoded surrogate,
NaN, a number beyond float range, nesting beyond any parser's limit, duplicate keys); the body
truncated, or not an object at all.

Bounded and deterministic: at most `examples()` cases per operation (NX_FUZZ_EXAMPLES, default
20), derandomized (the same cases on every run, so a failure in CI reproduces locally), no example
database, no deadline (each case is a real request through the edge).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["Schemas", "examples", "fuzz_settings", "hostile_body", "hostile_text"]

Strategy = st.SearchStrategy[Any]
MAX_NEST = 6
"""Objects and arrays deep; a reference or a choice between schemas adds no level."""
HOLE = "__nx_fuzz_hole__"


def examples() -> int:
    return int(os.environ.get("NX_FUZZ_EXAMPLES", "20"))


def fuzz_settings() -> settings:
    return settings(max_examples=examples(), derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


RAW_VALUES = [
    b'"\xff\xfe"', b'"a\xc3\x28b"', b'"\xed\xa0\x80"', b'"\\ud800"', b'"\\u0000"', b"NaN", b"-Infinity",
    b"1e400", b"-1e400", b"1" + b"0" * 400, b"-0", b"0.0000000000000000000000001e-400", _deep(40),
    _deep(990), _deep(5000), b'{"a":1,"a":{"a":[]}}', b"[" * 3 + b"1" + b"]" * 3, b'"' + b"x" * 100_000 + b'"',
]
"""Values as raw JSON text, each one something a client could send and a library would not."""

HOSTILE_VALUES: list[Any] = [
    2**63, -(2**63) - 1, 2**64 + 7, 10**30, -1, 0, 1e308, -1e308, 5e-324, True, False, None, "", " ",
    "\x00", "a\x00b", "\ud800", "é" * 3, "‮", "%00", "../../etc/passwd", "x" * 5000, [], {}, [None], {"": None},
    {"a": [{"b": [{"c": []}]}]}, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
]


def hostile_text() -> Strategy:
    return st.one_of(st.sampled_from([v for v in HOSTILE_VALUES if isinstance(v, str)]),
                     st.text(max_size=30), st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300))


def scalar() -> Strategy:
    return st.one_of(st.sampled_from(HOSTILE_VALUES), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                     hostile_text())


class Schemas:
    """Strategies from the JSON Schemas in `root`; `hints` overrides the strategy of a property
    by its name (a real model name, a public URL), and `always` makes properties present even where
    the schema has them optional, so that cases get past the first check."""

    def __init__(self, root: dict[str, Any], hints: dict[str, Strategy] | None = None,
                 always: frozenset[str] = frozenset()) -> None:
        self.root = root
        self.hints = hints or {}
        self.always = always

    def resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.root
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node  # type: ignore[no-any-return]

    def strategy(self, schema: dict[str, Any], depth: int = 0) -> Strategy:
        if depth > MAX_NEST:
            return st.none()
        if "$ref" in schema:
            return self.strategy(self.resolve(schema["$ref"]), depth)
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        if "allOf" in schema:
            return self._object(self._merged(schema["allOf"]), depth)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return st.one_of([self.strategy(s, depth) for s in schema[key][:8]])
        kind = schema.get("type")
        if isinstance(kind, list):
            return st.one_of([self.strategy({**schema, "type": k}, depth) for k in kind])
        return self._typed(kind, schema, depth)

    def _typed(self, kind: Any, schema: dict[str, Any], depth: int) -> Strategy:
        if kind == "string":
            return st.text(max_size=min(int(schema.get("maxLength", 40)), 40))
        if kind == "integer":
            lo, hi = schema.get("minimum"), schema.get("maximum")
            return st.integers(min_value=int(lo) if lo is not None else -5,
                               max_value=int(hi) if hi is not None else 5000)
        if kind == "number":
            return st.floats(min_value=schema.get("minimum"), max_value=schema.get("maximum"),
                             allow_nan=False, allow_infinity=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        if kind == "array":
            items = self.strategy(schema.get("items", {}), depth + 1)
            return st.lists(items, min_size=min(int(schema.get("minItems", 0)), 2), max_size=3)
        if kind == "object" or "properties" in schema:
            return self._object(schema, depth)
        return scalar()

    def _merged(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in parts:
            while "$ref" in part:
                part = self.resolve(part["$ref"])
            if "allOf" in part:
                part = self._merged(part["allOf"])
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        return merged

    def _object(self, schema: dict[str, Any], depth: int) -> Strategy:
        props: dict[str, Any] = schema.get("properties", {})
        if not props:
            extra = schema.get("additionalProperties")
            values = self.strategy(extra, depth + 1) if isinstance(extra, dict) else scalar()
            return st.dictionaries(st.text(max_size=10), values, max_size=3)
        required = set(schema.get("required", [])) | self.always

        def field(name: str) -> Strategy:
            return self.hints[name] if name in self.hints else self.strategy(props[name], depth + 1)

        return st.fixed_dictionaries({n: field(n) for n in props if n in required},
                                     optional={n: field(n) for n in props if n not in required})


@st.composite
def hostile_body(draw: Callable[[Strategy], Any], base: Strategy) -> bytes:
    """A body from `base`, then (about two cases in three) made hostile in one way."""
    obj = draw(base)
    how = draw(st.sampled_from(["as is"] * 5 + ["value", "value", "raw", "raw", "raw", "drop", "add", "top",
                                                "truncate", "dup key", "trailing"]))
    keys = sorted(obj) if isinstance(obj, dict) else []
    if how in ("value", "raw", "drop") and keys:
        key = draw(st.sampled_from(keys))
        if how == "drop":
            del obj[key]
        else:
            obj[key] = draw(st.sampled_from(HOSTILE_VALUES)) if how == "value" else HOLE
    elif how == "add" and isinstance(obj, dict):
        obj[draw(hostile_text())] = draw(scalar())
    elif how == "raw" and isinstance(obj, dict):
        obj["x"], how = HOLE, "raw"
    body = json.dumps(obj, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if how == "raw":
        body = body.replace(json.dumps(HOLE).encode(), draw(st.sampled_from(RAW_VALUES)), 1)
    elif how == "top":
        body = draw(st.sampled_from([b"[]", b"null", b'"x"', b"1", b"", b" ", b"{", _deep(10_000), b"\xff"]))
    elif how == "truncate" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif how == "dup key" and body.startswith(b"{"):
        body = b'{"model":"sim/plain",' + body[1:] if len(body) > 2 else body
    elif how == "trailing":
        body += draw(st.sampled_from([b"}", b",", b"\x00", b" garbage", b"\n{}"]))
    return body
