"""An endpoint's delivery log, test events and replays.

A replay enqueues a new delivery of the stored event: the same `webhook-id` (the event id) and the
same bytes as the first time, however the underlying objects have changed since. A range replay
first rebuilds the `request.completed` events that were not recorded (no subscriber at the time)
from the usage records (`rebuild.py`), so it covers every request of the range. A test event goes
through the real delivery path (signing, SSRF checks, retries) to this one endpoint only.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.errors import ApiError
from core.events.attempts import INTERRUPTED
from core.events.catalog import WebhookTest
from core.events.endpoints import EndpointView, Scope, get_endpoint
from core.events.fanout import enqueue, matches
from core.events.outbox import insert_event
from core.events.rebuild import rebuild_request_completed
from core.rows import columns, row_as, rows_as

__all__ = [
    "AttemptView",
    "DeliveryView",
    "ReplayRequest",
    "ReplayResult",
    "list_deliveries",
    "replay",
    "send_test",
]

MAX_REPLAY = 1000


class AttemptView(msgspec.Struct, kw_only=True):
    """One attempt, logged when it starts. While it runs `latency_ms`, `status_code` and `error` are
    null; an attempt cut short by a worker crash keeps a null `latency_ms` and says so in `error`."""

    attempt: int
    started_at: int
    status_code: int | None
    latency_ms: int | None
    error: str | None
    response_excerpt: str
    next_attempt_at: int | None


class DeliveryView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    endpoint_id: str
    event_id: str
    event_type: str
    kind: Literal["event", "test", "replay"]
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: int | None
    last_error: str | None
    created_at: int
    attempts: list[AttemptView]


class ReplayRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    event_id: str | None = None
    since: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Unix seconds, inclusive."""
    until: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Unix seconds, exclusive; default now."""


class ReplayResult(msgspec.Struct, kw_only=True):
    object: Literal["webhook_replay"] = "webhook_replay"
    endpoint_id: str
    deliveries: list[str]
    has_more: bool
    """More than MAX_REPLAY events matched: replay again from the last one's time."""
    rebuilt: int = 0
    """How many of them were `request.completed` events rebuilt from usage records: they were not
    recorded when the request completed because no enabled endpoint subscribed then."""


class _EventRow(msgspec.Struct, frozen=True):
    id: str
    type: str
    project_id: str | None


class _DeliveryRow(msgspec.Struct, frozen=True):
    id: str
    event_id: str
    event_type: str
    kind: Literal["event", "test", "replay"]
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: int | None
    last_error: str | None
    created_at: int
    lease_until: int | None


class _AttemptRow(msgspec.Struct, frozen=True):
    delivery_id: str
    attempt: int
    started_at: int
    status_code: int | None
    latency_ms: int | None
    error: str | None
    response_excerpt: str
    next_attempt_at: int | None


def _s(value: object) -> int | None:
    return None if value is None else int(str(value)) // 1000


async def list_deliveries(conn: AsyncConnection, scope: Scope, endpoint_id: str, limit: int,
                          after: str | None, event_id: str | None) -> tuple[list[DeliveryView], bool]:
    await get_endpoint(conn, scope, endpoint_id)
    cond, params = "d.endpoint_id = :ep AND d.org_id = :o", {"ep": endpoint_id, "o": scope.org_id}
    if after:
        cond += " AND d.id < :after"
        params["after"] = after
    if event_id:
        cond += " AND d.event_id = :ev"
        params["ev"] = event_id
    rows = rows_as(_DeliveryRow, (await conn.execute(
        text(f"SELECT {columns(_DeliveryRow, 'd', event_type='ev.type')} "
             f"FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id WHERE {cond} "
             "ORDER BY d.id DESC LIMIT :n"), {**params, "n": limit + 1})).all())
    # One row past the page says whether there is more; decide before cutting the page.
    has_more = len(rows) > limit
    rows = rows[:limit]
    now = now_ms()
    live = {r.id for r in rows if r.lease_until is not None and r.lease_until >= now}
    attempts: dict[str, list[AttemptView]] = {r.id: [] for r in rows}
    if attempts:
        names = [f":d{i}" for i in range(len(attempts))]
        for a in rows_as(_AttemptRow, await conn.execute(
                text(f"SELECT {columns(_AttemptRow)} FROM webhook_attempts"
                     f" WHERE delivery_id IN ({', '.join(names)}) ORDER BY delivery_id, attempt"),
                {f"d{i}": d for i, d in enumerate(attempts)})):
            unfinished = a.latency_ms is None
            error = a.error
            if unfinished and error is None and a.delivery_id not in live:
                error = INTERRUPTED  # its lease ran out before it finished: the worker stopped
            attempts[a.delivery_id].append(AttemptView(
                attempt=a.attempt, started_at=a.started_at // 1000, status_code=a.status_code,
                latency_ms=a.latency_ms, error=error, response_excerpt=a.response_excerpt,
                next_attempt_at=_s(a.next_attempt_at)))
    views = [DeliveryView(
        id=r.id, endpoint_id=endpoint_id, event_id=r.event_id, event_type=r.event_type, kind=r.kind,
        status=r.status, attempt_count=r.attempts, next_attempt_at=_s(r.next_attempt_at),
        last_error=r.last_error, created_at=r.created_at // 1000, attempts=attempts[r.id]) for r in rows]
    return views, has_more


def _require_enabled(endpoint: EndpointView) -> None:
    if endpoint.status != "enabled":
        raise ApiError("conflict", f"Webhook endpoint {endpoint.id!r} is disabled "
                       f"({endpoint.disabled_reason}); enable it first.")


async def send_test(conn: AsyncConnection, scope: Scope, endpoint_id: str) -> DeliveryView:
    endpoint = await get_endpoint(conn, scope, endpoint_id)
    _require_enabled(endpoint)
    event_id = await insert_event(conn, scope.org_id, "webhook.test", WebhookTest(endpoint_id=endpoint_id),
                                  endpoint.project, None, fanned_out=True)
    assert event_id is not None  # no dedup key, so the insert cannot be skipped
    delivery_id = await enqueue(conn, scope.org_id, endpoint_id, event_id, "test", now_ms())
    views, _ = await list_deliveries(conn, scope, endpoint_id, 1, None, event_id)
    assert views[0].id == delivery_id
    return views[0]


async def replay(conn: AsyncConnection, scope: Scope, endpoint_id: str, body: ReplayRequest) -> ReplayResult:
    endpoint = await get_endpoint(conn, scope, endpoint_id)
    _require_enabled(endpoint)
    now, rebuilt = now_ms(), 0
    if body.event_id is not None:
        if body.since is not None or body.until is not None:
            raise ApiError("invalid_request_error", "Give either event_id or a since/until range, not both.")
        found = (await conn.execute(
            text(f"SELECT {columns(_EventRow)} FROM events WHERE id = :e AND org_id = :o"),
            {"e": body.event_id, "o": scope.org_id})).first()
        row = None if found is None else row_as(_EventRow, found)
        sent_before = (await conn.execute(
            text("SELECT 1 FROM webhook_deliveries WHERE event_id = :e AND endpoint_id = :ep LIMIT 1"),
            {"e": body.event_id, "ep": endpoint_id})).first() is not None
        subscribed = row is not None and matches(endpoint.event_types, endpoint.project, row.type, row.project_id)
        if row is None or not (sent_before or subscribed):
            raise ApiError("not_found", f"No event {body.event_id!r} for this endpoint", param="event_id")
        candidates, has_more = [row.id], False
    else:
        if body.since is None:
            raise ApiError("missing_required_parameter", "Give event_id or since (Unix seconds).",
                           param="since")
        until = now if body.until is None else body.until * 1000
        if matches(endpoint.event_types, endpoint.project, "request.completed", endpoint.project):
            rebuilt = await rebuild_request_completed(conn, scope.org_id, endpoint.project, body.since * 1000,
                                                      until, MAX_REPLAY + 1)
        rows = rows_as(_EventRow, (await conn.execute(
            text(f"SELECT {columns(_EventRow)} FROM events WHERE org_id = :o AND created_at >= :since "
                 "AND created_at < :until AND type <> 'webhook.test' ORDER BY created_at, id LIMIT :n"),
            {"o": scope.org_id, "since": body.since * 1000, "until": until, "n": MAX_REPLAY + 1})).all())
        has_more = len(rows) > MAX_REPLAY
        candidates = [r.id for r in rows[:MAX_REPLAY]
                      if matches(endpoint.event_types, endpoint.project, r.type, r.project_id)]
    deliveries = [await enqueue(conn, scope.org_id, endpoint_id, e, "replay", now) for e in candidates]
    return ReplayResult(endpoint_id=endpoint_id, deliveries=deliveries, has_more=has_more, rebuilt=rebuilt)
