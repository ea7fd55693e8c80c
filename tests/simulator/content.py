"""What the simulated models say: deterministic text, tool calls, JSON that fits a schema, vectors."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

__all__ = ["count_words", "embed", "sample_for_schema", "reply_words", "tool_call_for"]

WORDS = ["Hello", " from", " the", " simulator", ".", " It", " says", " nothing", " of", " note"]


def count_words(value: Any) -> int:
    """A stand-in tokenizer: words in every string inside `value`."""
    if isinstance(value, str):
        return max(1, len(value.split()))
    if isinstance(value, list):
        return sum(count_words(v) for v in value)
    if isinstance(value, dict):
        return sum(count_words(v) for k, v in value.items() if k in ("content", "text", "input", "output"))
    return 0


def reply_words(n: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(max(1, n))]


def sample_for_schema(schema: Any) -> Any:
    """A value that satisfies a (simple) JSON schema, for structured-output requests."""
    if not isinstance(schema, dict):
        return {}
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return sample_for_schema(schema["anyOf"][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {k: sample_for_schema(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [sample_for_schema(schema.get("items", {}))]
    return {"string": "simulated", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "x")


def tool_call_for(tools: list[dict[str, Any]], choice: Any) -> tuple[str, str]:
    """(name, JSON arguments) for the forced tool, or the first one."""
    name = None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
    for tool in tools:
        fn = tool.get("function", tool)
        if name in (None, fn.get("name")):
            schema = fn.get("parameters") or fn.get("input_schema") or {}
            return str(fn.get("name")), json.dumps(sample_for_schema(schema))
    return str(name), "{}"


def embed(text: str, dims: int) -> list[float]:
    raw = b""
    counter = 0
    while len(raw) < dims:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    vector = [(b - 127.5) / 127.5 for b in raw[:dims]]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
