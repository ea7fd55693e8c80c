"""`[[sim key=value ...]]` directives found in a request body."""

from __future__ import annotations

import re

import msgspec

__all__ = ["Directives", "parse"]

_PATTERN = re.compile(rb"\[\[sim ([^\]]*)\]\]")


class Directives(msgspec.Struct, kw_only=True):
    status: int | None = None
    message: str | None = None
    retry_after: str | None = None
    echo_key: bool = False
    first_byte_ms: int = 0
    chunk_ms: int = 0
    chunks: int = 3
    cut_after: int | None = None
    float_only: bool = False


def parse(body: bytes) -> Directives:
    found: dict[str, str] = {}
    for match in _PATTERN.finditer(body):
        for pair in match.group(1).decode("utf-8", "replace").split():
            key, _, value = pair.partition("=")
            found[key] = value.replace("_", " ") if key == "message" else value
    return msgspec.convert(found, Directives, strict=False)
