"""The event catalog: one versioned msgspec schema per event type.

Every event is delivered as the same envelope (`Envelope`) around a type-specific `data` payload.
The envelope is serialized once, when the event is recorded, and those exact bytes are what every
delivery, retry and replay sends: a payload is a historical snapshot, never a fresh read.

Times in payloads are Unix seconds (OpenAI style); money is integer nano-dollars (1 USD = 10^9).
Changing a payload incompatibly means a new `SCHEMA_VERSION` entry, never editing a shipped one.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "EVENT_TYPES",
    "OPT_IN_TYPES",
    "SCHEMA_VERSION",
    "Envelope",
    "EventData",
    "EventError",
    "InvoicePaid",
    "KeyRevoked",
    "RequestCompleted",
    "RequestRateLimited",
    "ResponseCancelled",
    "ResponseCompleted",
    "ResponseFailed",
    "ResponseQueued",
    "ResponseUsage",
    "UsageThresholdReached",
    "WalletRecharged",
    "WebhookTest",
]


class EventData(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every payload: immutable, keyword-only, strict on decode."""


class InvoicePaid(EventData, kw_only=True, frozen=True):
    invoice_id: str
    number: str | None = None
    amount_paid_nanos: int
    currency: str = "usd"
    period_start: int | None = None
    period_end: int | None = None
    paid_at: int


class WalletRecharged(EventData, kw_only=True, frozen=True):
    wallet_id: str
    transaction_id: str
    amount_nanos: int
    balance_nanos: int
    """Wallet balance right after the recharge."""
    source: Literal["grant", "checkout", "auto_recharge", "manual"]
    grant_id: str | None = None
    expires_at: int | None = None


class KeyRevoked(EventData, kw_only=True, frozen=True):
    key_id: str
    prefix: str
    name: str
    revoked_at: int
    revoked_by: str


class UsageThresholdReached(EventData, kw_only=True, frozen=True):
    rule_id: str
    scope: Literal["organization", "project", "key", "wallet"]
    scope_id: str
    period: str
    """The budget period the crossing belongs to, e.g. `2026-05`."""
    threshold_nanos: int
    observed_nanos: int
    limit_nanos: int | None = None


class RequestCompleted(EventData, kw_only=True, frozen=True):
    """The usage record of one inference request (opt-in per endpoint: high volume)."""

    request_id: str
    endpoint: Literal["responses", "chat", "embeddings"]
    model: str
    key_id: str
    project_id: str | None = None
    status_code: int
    input_tokens: int
    cached_input_tokens: int = 0
    output_tokens: int
    cost_nanos: int
    price_card_id: str | None = None
    latency_ms: int
    completed_at: int


class RequestRateLimited(EventData, kw_only=True, frozen=True):
    request_id: str
    key_id: str
    project_id: str | None = None
    limit: Literal["requests", "tokens", "concurrency"]
    limit_value: int
    window_seconds: int
    retry_after_seconds: int
    path: str
    model: str | None = None


class ResponseUsage(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class EventError(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    code: str
    message: str


class ResponseQueued(EventData, kw_only=True, frozen=True):
    response_id: str
    model: str
    queued_at: int


class ResponseCompleted(EventData, kw_only=True, frozen=True):
    response_id: str
    model: str
    usage: ResponseUsage | None = None
    completed_at: int


class ResponseFailed(EventData, kw_only=True, frozen=True):
    response_id: str
    model: str
    error: EventError
    failed_at: int


class ResponseCancelled(EventData, kw_only=True, frozen=True):
    response_id: str
    model: str
    cancelled_at: int


class WebhookTest(EventData, kw_only=True, frozen=True):
    """Sent by `POST /v1/webhooks/endpoints/{id}/test` through the real delivery path."""

    endpoint_id: str
    message: str = "This is a test event from the platform."


EVENT_TYPES: dict[str, type[EventData]] = {
    "invoice.paid": InvoicePaid,
    "wallet.recharged": WalletRecharged,
    "key.revoked": KeyRevoked,
    "usage.threshold_reached": UsageThresholdReached,
    "request.completed": RequestCompleted,
    "request.rate_limited": RequestRateLimited,
    "response.queued": ResponseQueued,
    "response.completed": ResponseCompleted,
    "response.failed": ResponseFailed,
    "response.cancelled": ResponseCancelled,
    "webhook.test": WebhookTest,
}

SCHEMA_VERSION: dict[str, int] = {name: 1 for name in EVENT_TYPES}

OPT_IN_TYPES = frozenset({"request.completed"})
"""Types an endpoint receives only when it lists them by name (`*` does not include them)."""

SUBSCRIBABLE = frozenset(EVENT_TYPES) - {"webhook.test"}


class Envelope(msgspec.Struct, kw_only=True, frozen=True):
    """What a receiver gets as the request body (Standard Webhooks `{type, timestamp, data}` plus ids)."""

    id: str
    object: Literal["event"] = "event"
    type: str
    version: int
    created_at: int
    timestamp: str
    """`created_at` as ISO 8601 UTC, as the Standard Webhooks payload convention asks."""
    organization: str
    project: str | None
    data: EventData
