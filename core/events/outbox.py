"""The transactional outbox: producers write an event row inside their own transaction.

`record_event` only INSERTs into `events` on the caller's connection, so the event commits or rolls
back with the state change that caused it. The worker fans committed events out to matching
endpoints (`fanout.py`) and delivers them, so a crash right after the commit still ends in delivery.
"""

from __future__ import annotations

import datetime as dt

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.events.catalog import (
    EVENT_TYPES,
    OPT_IN_TYPES,
    SCHEMA_VERSION,
    Envelope,
    EventData,
    RequestCompleted,
)
from core.ids import new_id
from core.rawsql import memo_of, sql

__all__ = ["encode_envelope", "insert_event", "record_event", "request_completed_key"]


def request_completed_key(request_id: str) -> str:
    """The dedup key of a request's `request.completed`: one event per request, recorded live or
    rebuilt for a replay (`rebuild.py`), never both."""
    return f"request.completed:{request_id}"


def encode_envelope(event_id: str, org_id: str, project_id: str | None, event_type: str,
                    data: EventData, created_ms: int) -> bytes:
    seconds = created_ms // 1000
    stamp = dt.datetime.fromtimestamp(created_ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")
    return msgspec.json.encode(Envelope(
        id=event_id, type=event_type, version=SCHEMA_VERSION[event_type], created_at=seconds,
        timestamp=stamp.replace("+00:00", "Z"), organization=org_id, project=project_id, data=data))


async def record_event(conn: AsyncConnection, org_id: str, event_type: str, data: EventData,
                       project_id: str | None = None, dedup_key: str | None = None) -> str | None:
    """Write one event in the caller's transaction; return its `evt_` id, or None if not written.

    Not written when `dedup_key` was already used by this organization (e.g. a threshold crossing
    keyed by rule, wallet, period and threshold fires once), or when the type is opt-in and no
    endpoint of the organization subscribes to it (`request.completed` is high volume; a range
    replay rebuilds the ones not recorded from the usage record, see `rebuild.py`).
    The payload is serialized here, once: deliveries and replays send these exact bytes.
    """
    expected = EVENT_TYPES.get(event_type)
    if expected is None:
        raise ValueError(f"unknown event type {event_type!r}")
    if type(data) is not expected:
        raise TypeError(f"{event_type} takes {expected.__name__}, got {type(data).__name__}")
    if event_type in OPT_IN_TYPES and not await _anyone_subscribed(conn, org_id, event_type):
        return None
    if isinstance(data, RequestCompleted) and dedup_key is None:
        dedup_key = request_completed_key(data.request_id)
    return await insert_event(conn, org_id, event_type, data, project_id, dedup_key, fanned_out=False)


async def insert_event(conn: AsyncConnection, org_id: str, event_type: str, data: EventData,
                       project_id: str | None, dedup_key: str | None, fanned_out: bool,
                       created: int | None = None) -> str | None:
    """`fanned_out=True` is for events addressed to one endpoint (tests, rebuilt events for a
    replay), which the caller enqueues. `created` (ms) dates an event rebuilt after the fact."""
    event_id = new_id("evt")
    created = now_ms() if created is None else created
    body = encode_envelope(event_id, org_id, project_id, event_type, data, created)
    result = await conn.execute(
        sql("INSERT INTO events (id, org_id, project_id, type, payload, dedup_key, fanned_out, created_at) "
             "VALUES (:id, :o, :p, :t, :body, :dedup, :fanned, :now) "
             "ON CONFLICT (org_id, dedup_key) DO NOTHING"),
        {"id": event_id, "o": org_id, "p": project_id, "t": event_type, "body": body.decode(),
         "dedup": dedup_key, "fanned": int(fanned_out), "now": created})
    return event_id if result.rowcount == 1 else None


async def _anyone_subscribed(conn: AsyncConnection, org_id: str, event_type: str) -> bool:
    memo = memo_of(conn)
    if memo is not None and ("subscribed", org_id, event_type) in memo:
        return bool(memo[("subscribed", org_id, event_type)])
    # LIKE on the JSON array text is enough: type names contain no quote or wildcard characters.
    row = await conn.execute(
        sql("SELECT 1 FROM webhook_endpoints WHERE org_id = :o AND deleted_at IS NULL AND enabled = 1 "
            "AND event_types LIKE :pat LIMIT 1"),
        {"o": org_id, "pat": f'%"{event_type}"%'})
    subscribed = row.first() is not None
    if memo is not None:
        memo[("subscribed", org_id, event_type)] = subscribed
    return subscribed
