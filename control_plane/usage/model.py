"""`/v1/usage` value types: the validated query and the page it answers (OpenAI's usage envelope)."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["FILTERS", "GROUPS", "LIMITS", "WIDTH_MS", "Latency", "Spend", "UsageBucket", "UsagePage",
           "UsageQuery", "UsageResult", "Width"]

Width = Literal["1m", "1h", "1d"]
WIDTH_MS: dict[str, int] = {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
# (default, maximum) buckets per page, as OpenAI's organization usage API.
LIMITS: dict[str, tuple[int, int]] = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 1440)}
# group_by value -> usage_records / usage_rollups column
GROUPS: dict[str, str] = {"project_id": "project_id", "model": "model_id", "api_key_id": "key_id",
                          "endpoint": "endpoint", "status": "status"}
# filter parameter -> column
FILTERS: dict[str, str] = {"project_ids": "project_id", "models": "model_id", "api_key_ids": "key_id",
                           "endpoints": "endpoint", "statuses": "status"}


class UsageQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A validated query. Times are unix milliseconds; `page_start_ms` is aligned to the width."""

    start_ms: int
    end_ms: int
    width: Width
    group_by: tuple[str, ...]
    """Column names (GROUPS values), in the canonical order of GROUPS."""
    filters: dict[str, tuple[str, ...] | tuple[int, ...]]
    """Column -> allowed values; an absent column is not filtered."""
    limit: int
    page_start_ms: int


class Spend(msgspec.Struct, frozen=True, kw_only=True):
    value: str
    """Exact decimal USD, e.g. '0.000123456'."""
    currency: Literal["usd"] = "usd"
    nanos: int
    """The same amount in integer nano-dollars (1 USD = 10^9)."""


class Latency(msgspec.Struct, frozen=True, kw_only=True):
    """Milliseconds from the latency histogram (within about +-19%, see usage/histogram.py)."""

    p50: int | None
    p95: int | None
    p99: int | None


class UsageResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=False):
    object: Literal["organization.usage.result"] = "organization.usage.result"
    num_model_requests: int
    num_errors: int
    """Requests answered with a status >= 400."""
    input_tokens: int
    """Includes the cached input tokens (OpenAI's convention)."""
    input_cached_tokens: int
    input_uncached_tokens: int
    output_tokens: int
    spend: Spend
    latency_ms: Latency
    project_id: str | None = None
    api_key_id: str | None = None
    model: str | None = None
    endpoint: str | None = None
    status: int | None = None


class UsageBucket(msgspec.Struct, frozen=True, kw_only=True):
    object: Literal["bucket"] = "bucket"
    start_time: int
    end_time: int
    results: list[UsageResult]


class UsagePage(msgspec.Struct, frozen=True, kw_only=True):
    object: Literal["page"] = "page"
    data: list[UsageBucket]
    has_more: bool
    next_page: str | None
