"""Parse and validate `/v1/usage` query parameters into a `UsageQuery`.

Accepted like OpenAI's organization usage API: `start_time` (required, unix seconds, inclusive),
`end_time` (exclusive; default: the end of the bucket holding "now"), `bucket_width` (`1m`, `1h`,
`1d`; default `1d`), `group_by`, `limit` (buckets per page), `page` (the previous `next_page`).
List parameters (`group_by`, `project_ids`, `models`, `api_key_ids`, `endpoints`, `statuses`) may be
repeated, written with brackets (`group_by[]=model`, what the official SDKs send) or comma-separated.
Every error is a 400 in OpenAI's shape naming the parameter.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from control_plane.usage.model import FILTERS, GROUPS, LIMITS, WIDTH_MS, UsageQuery, Width
from core.errors import ApiError

__all__ = ["MAX_FILTER_VALUES", "decode_page", "encode_page", "parse_query"]

MAX_TIME_S = 4_102_444_800  # 2100-01-01: anything later is a mistake, and keeps ms far from overflow
MAX_FILTER_VALUES = 200
MAX_VALUE_LEN = 256
SCALARS = ("start_time", "end_time", "bucket_width", "limit", "page")
UNSUPPORTED = {"user_ids": "users", "batch": "batch jobs", "service_tier": "service tiers"}


def encode_page(start_ms: int) -> str:
    return "page_" + base64.urlsafe_b64encode(str(start_ms // 1000).encode()).decode().rstrip("=")


def decode_page(token: str) -> int:
    """Unix ms of the bucket a page starts at; ApiError if the token was not one we issued."""
    try:
        raw = token.removeprefix("page_")
        seconds = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        if not token.startswith("page_") or not seconds.isdigit() or len(seconds) > 12:
            raise ValueError(token)
        return int(seconds) * 1000
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError("invalid_request_error", "'page' is not a cursor from a previous 'next_page'.",
                       param="page") from None


def _int(name: str, value: str, lo: int, hi: int) -> int:
    if not value.strip().lstrip("-").isdigit() or len(value) > 20:
        raise ApiError("invalid_request_error", f"'{name}' must be an integer.", param=name)
    number = int(value)
    if not lo <= number <= hi:
        raise ApiError("invalid_request_error", f"'{name}' must be between {lo} and {hi}.", param=name)
    return number


def _collect(items: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    scalars: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for raw_name, value in items:
        name = raw_name.removesuffix("[]")
        if name in SCALARS:
            if name in scalars:
                raise ApiError("invalid_request_error", f"'{name}' was given more than once.", param=name)
            scalars[name] = value
        elif name == "group_by" or name in FILTERS:
            values = lists.setdefault(name, [])
            values.extend(v.strip() for v in value.split(",") if v.strip())
            if len(values) > MAX_FILTER_VALUES or any(len(v) > MAX_VALUE_LEN for v in values):
                raise ApiError("invalid_request_error", f"'{name}' accepts at most {MAX_FILTER_VALUES} "
                               f"values of at most {MAX_VALUE_LEN} characters.", param=name)
        elif name in UNSUPPORTED:
            raise ApiError("unsupported_parameter", f"'{name}': this platform has no {UNSUPPORTED[name]}.",
                           param=name)
        else:
            raise ApiError("unsupported_parameter", f"Unrecognized query parameter '{name}'.", param=name)
    return scalars, lists


def _filters(lists: dict[str, list[str]]) -> dict[str, tuple[str, ...] | tuple[int, ...]]:
    out: dict[str, tuple[str, ...] | tuple[int, ...]] = {}
    for name, column in FILTERS.items():
        if name not in lists:
            continue
        values = sorted(set(lists[name]))
        if name == "statuses":
            out[column] = tuple(_int(name, v, 100, 599) for v in values)
        else:
            out[column] = tuple(values)
    return out


def parse_query(items: Iterable[tuple[str, str]], now_ms: int) -> UsageQuery:
    scalars, lists = _collect(items)
    if "start_time" not in scalars:
        raise ApiError("missing_required_parameter", "'start_time' (unix seconds) is required.",
                       param="start_time")
    start_ms = _int("start_time", scalars["start_time"], 0, MAX_TIME_S - 1) * 1000
    width_name = scalars.get("bucket_width", "1d")
    if width_name not in WIDTH_MS:
        raise ApiError("invalid_request_error", "'bucket_width' must be one of '1m', '1h', '1d'.",
                       param="bucket_width")
    width: Width = width_name  # type: ignore[assignment]
    w = WIDTH_MS[width]
    if "end_time" in scalars:
        end_ms = _int("end_time", scalars["end_time"], 1, MAX_TIME_S) * 1000
    else:
        end_ms = max((start_ms // w + 1) * w, -(-now_ms // w) * w)
    if end_ms <= start_ms:
        raise ApiError("invalid_request_error", "'end_time' must be after 'start_time'.", param="end_time")
    default, most = LIMITS[width]
    limit = _int("limit", scalars["limit"], 1, most) if "limit" in scalars else default
    groups = lists.get("group_by", [])
    for g in groups:
        if g not in GROUPS:
            raise ApiError("invalid_request_error", f"'group_by' value {g!r} is not one of "
                           f"{', '.join(GROUPS)}.", param="group_by")
    first = start_ms // w * w
    page_start = first
    if "page" in scalars:
        page_start = decode_page(scalars["page"])
        if page_start % w or not first < page_start < end_ms:
            raise ApiError("invalid_request_error",
                           "'page' does not belong to this time range and bucket width.", param="page")
    return UsageQuery(start_ms=start_ms, end_ms=end_ms, width=width,
                      group_by=tuple(c for g, c in GROUPS.items() if g in groups), filters=_filters(lists),
                      limit=limit, page_start_ms=page_start)
