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


def parse(body: bytes, model: str | None = None) -> Directives:
    """Every directive's settings, merged; a directive with `model=X` applies only to a request
    for the upstream model X (so one body can make one route target fail and another answer)."""
    found: dict[str, str] = {}
    for match in _PATTERN.finditer(body):
        pairs = dict(p.partition("=")[::2] for p in match.group(1).decode("utf-8", "replace").split())
        only = pairs.pop("model", None)
        if only is not None and only != model:
            continue
        for key, value in pairs.items():
            found[key] = value.replace("_", " ") if key == "message" else value
    return msgspec.convert(found, Directives, strict=False)
