"""What one inference request is about, built once from the headers the sidecar set.

Handlers receive a `RequestContext` and fill in `usage` (and `cache_status`) as they learn them;
the metadata headers and the wallet debit are computed from it (metering.py), so a handler never
formats those itself.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from core.snapshot import BackendRecord, ModelRecord, PriceRecord

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
    cache_control: str = ""
    """The request's Cache-Control header (`no-store` bypasses the embedding cache)."""
    hold_price: PriceRecord | None = None
    """The price card the sidecar's hold was placed at (`x-nx-hold-price`); settlement charges at
    exactly this card, so pricing the answer with it makes `x-wallet-debit` the exact charge."""
    idempotency_record: str | None = None
    """`x-nx-idem`: the claimed Idempotency-Key record this answer is stored under."""
    charged: int | None = None
    """Nano-dollars posted by settlement, once it ran."""
    first_byte_ns: int | None = None
    produced_chunks: int = 0
    """Content-carrying stream chunks relayed so far: the measure of what was produced when a
    stream is cut or abandoned before the backend reported its usage (one token per chunk, as
    OpenAI-compatible servers stream)."""
    input_estimate: int = 0
    """Input tokens assumed for such a stream: the request body at 4 bytes per token."""

    def account_produced(self) -> None:
        """A stream that ended without the backend's usage (cut, abandoned) is billed for what it
        produced; called wherever usage is read for metadata or settlement."""
        if self.usage.total_tokens == 0 and self.produced_chunks:
            self.usage = Usage(input_tokens=self.input_estimate, output_tokens=self.produced_chunks)

    @property
    def capabilities(self) -> dict[str, object]:
        return self.model.capabilities

    def can(self, capability: str) -> bool:
        """True when the catalog grants the model `capability` (tools, vision, json_schema, ...)."""
        return bool(self.model.capabilities.get(capability, False))
