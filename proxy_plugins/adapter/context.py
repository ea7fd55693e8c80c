"""What one inference request is about, built once from the headers the sidecar set.

Handlers receive a `RequestContext` and fill in `usage` (and `cache_status`) as they learn them;
the metadata headers and the wallet debit are computed from it (metering.py), so a handler never
formats those itself.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from core.snapshot import BackendRecord, ModelRecord, PriceRecord
from proxy_plugins.adapter.meter import CountInput, Meter

__all__ = ["Attempt", "CacheStatus", "RequestContext", "Usage"]

CacheStatus = Literal["hit", "miss", "partial", "bypass"]


class Usage(msgspec.Struct, kw_only=True):
    """Token counts as OpenAI counts them: `input_tokens` includes `cached_tokens`."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Attempt(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One backend call of a routed request (`x-route-attempts`, the usage record)."""

    target: str
    """The model id tried (a backend and its upstream model)."""
    backend: str
    status: int
    """The status it ended with: 200, the upstream's or the platform's error status."""
    ms: int
    """Until its first byte reached the client, or until it failed."""
    error: str | None = None
    """The error code of a failed attempt."""


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
    meter: Meter = msgspec.field(default_factory=Meter)
    """Output counted as it is relayed, against the output the hold covers (meter.py)."""
    plan: list[list[str]] | None = None
    """A routed request's targets by tier (`x-nx-plan`, core/routeplan.py); None: one target."""
    plan_by_latency: bool = False
    """The request asked for `provider.sort: latency`: its tier is ordered by recent latency."""
    attempts: list[Attempt] = msgspec.field(default_factory=list)
    """The backend calls a routed request made, in order (attempts.py)."""
    count_input: CountInput | None = None
    """Set by a handler once it calls the backend: counts the request's input with the backend
    (counting.py), for a stream that ends before the backend reported its usage."""

    def account_produced(self) -> None:
        """A stream that ended without the backend's usage (cut, failed, abandoned) is billed for
        the output it produced; called wherever usage is read for metadata or settlement.
        `complete_usage` also fills in the input tokens."""
        meter = self.meter
        if not meter.reported and meter.produced > self.usage.output_tokens:
            self.usage = Usage(input_tokens=self.usage.input_tokens, cached_tokens=self.usage.cached_tokens,
                               output_tokens=meter.produced)

    async def complete_usage(self) -> None:
        """Before settlement: the usage of a stream whose backend never reported it, as produced
        (output) and as the backend counts it (input). The backend's own figures win when known."""
        meter = self.meter
        if meter.reported or not meter.produced:
            return
        self.account_produced()
        if not self.usage.input_tokens and self.count_input is not None:
            self.usage = Usage(input_tokens=await self.count_input(), output_tokens=self.usage.output_tokens)
        meter.reported = True

    @property
    def capabilities(self) -> dict[str, object]:
        return self.model.capabilities

    def can(self, capability: str) -> bool:
        """True when the catalog grants the model `capability` (tools, vision, json_schema, ...)."""
        return bool(self.model.capabilities.get(capability, False))
