"""Rebuilding `request.completed` events for a range replay from the usage records.

`request.completed` is opt-in and high volume, so the outbox records it only while an enabled
endpoint subscribes (`outbox.record_event`); after an endpoint was disabled (a 410, say) and
enabled again, the requests in between have no event. Their usage records, written in the same
transaction as the charge, hold every field of the payload (the price card id through the
append-only `(model, version)` of `price_cards`), so a range replay rebuilds the missing events:
the data the live event would have carried, `created_at` the time the request completed, and a
new event id (it was never sent, so no receiver has seen another id for it). A rebuilt event is
stored under the request's dedup key, so later replays send the same bytes again and a request
never has two events.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.events.catalog import RequestCompleted
from core.events.outbox import insert_event, request_completed_key

__all__ = ["rebuild_request_completed"]

# The dedup key's prefix, inlined (`request_completed_key` builds the same string in Python).
_PREFIX = request_completed_key("")


async def rebuild_request_completed(conn: AsyncConnection, org_id: str, project_id: str | None,
                                    since_ms: int, until_ms: int, limit: int) -> int:
    """Store the missing `request.completed` events of `[since_ms, until_ms)`, oldest first, at
    most `limit`; return how many were rebuilt. `project_id` limits them to one project."""
    project = " AND u.project_id = :p" if project_id is not None else ""
    rows = (await conn.execute(text(
        "SELECT u.request_id, u.project_id, u.key_id, u.model_id, u.endpoint, u.status, u.input_tokens, "
        "u.cached_tokens, u.output_tokens, u.cost_nanos, pc.id, u.latency_ms, u.created_at "
        "FROM usage_records u LEFT JOIN price_cards pc ON pc.model_id = u.model_id "
        "AND pc.version = u.price_version "
        "WHERE u.org_id = :o AND u.created_at >= :since AND u.created_at < :until "
        f"AND u.endpoint IN ('responses', 'chat', 'embeddings'){project} "
        "AND NOT EXISTS (SELECT 1 FROM events ev WHERE ev.org_id = u.org_id "
        f"AND ev.dedup_key = '{_PREFIX}' || u.request_id) "
        "ORDER BY u.created_at, u.request_id LIMIT :n"),
        {"o": org_id, "since": since_ms, "until": until_ms, "p": project_id, "n": limit})).all()
    rebuilt = 0
    for (request_id, project, key_id, model, endpoint, status, input_tokens, cached, output_tokens, cost,
         card_id, latency, created) in rows:
        # The same fields, from the same values, as the live event (core/ledger/settle.py).
        data = RequestCompleted(
            request_id=str(request_id), endpoint=endpoint, model=str(model), key_id=str(key_id),
            project_id=project, status_code=int(status), input_tokens=int(input_tokens),
            cached_input_tokens=int(cached), output_tokens=int(output_tokens), cost_nanos=int(cost),
            price_card_id=None if card_id is None else str(card_id), latency_ms=int(latency or 0),
            completed_at=int(created) // 1000)
        if await insert_event(conn, org_id, "request.completed", data, project,
                              request_completed_key(str(request_id)), fanned_out=True, created=int(created)):
            rebuilt += 1
    return rebuilt
