"""What one inference request is about, built once from the headers the sidecar set.

Handlers receive a `RequestContext` and fill in `usage` (and `cache_status`) as they learn them;
the metadata headers and the wallet debit are computed from it (metering.py), so a handler never
formats those itself.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from proxy_plugins.snapshot import BackendRecord, ModelRecord

__all__ = ["CacheStatus", "RequestContext", "Usage"]

CacheStatus = Literal["hit", "miss", "partial", "bypass"]


class Usage(msgspec.Struct, kw_only=True):
    """Token counts as OpenAI counts them: `input_tokens` includes `cached_tokens`."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class RequestContext(msgspec.Struct, kw_only=True):
    request_id: str
    """`req_...`, stamped by Envoy; echoed as `x-request-id` and used as the completion id suffix."""
    org_id: str
    project_id: str
    key_id: str
    requested_model: str
    """The name the client sent (an alias or the canonical id); responses echo it back as `model`."""
    model: ModelRecord
    backend: BackendRecord
    received_ns: int
    """`time.monotonic_ns()` when the adapter received the request (latency accounting)."""
    usage: Usage = msgspec.field(default_factory=Usage)
    cache_status: CacheStatus = "bypass"
    """Nothing is cached yet; the embedding cache sets hit, miss or partial."""

    @property
    def capabilities(self) -> dict[str, object]:
        return self.model.capabilities

    def can(self, capability: str) -> bool:
        """True when the catalog grants the model `capability` (tools, vision, json_schema, ...)."""
        return bool(self.model.capabilities.get(capability, False))
