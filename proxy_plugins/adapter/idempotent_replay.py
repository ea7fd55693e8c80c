"""Serving a stored answer for a repeated Idempotency-Key (the sidecar decided it is a replay).

The stored status, headers and body go out byte for byte, plus `idempotent-replayed: true`; a
stored stream is sent whole as one body (the client gets every event at once). Nothing runs
upstream and nothing is charged.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import error_json
from core.idempotency import stored_body
from core.rows import columns, row_as
from proxy_plugins.adapter.exchange import Send

__all__ = ["serve_replay"]


async def serve_replay(engine: AsyncEngine, pepper: str, record_id: str, send: Send) -> None:
    async with engine.connect() as conn:
        row = (await conn.execute(text(
            f"SELECT {columns(_Stored)} FROM idempotency_keys WHERE id = :id AND state = 'completed'"),
            {"id": record_id})).first()
    if row is None:  # pruned between the sidecar's check and now: tell the client to retry
        body = error_json("idempotency_key_in_use", "The stored response is not available; retry the request.",
                          "Idempotency-Key")
        status, headers = 409, [("content-type", "application/json")]
    else:
        stored = row_as(_Stored, row)
        status = stored.response_status
        headers = msgspec.json.decode(stored.response_headers, type=list[tuple[str, str]])
        body = stored_body(stored.response_body, pepper)  # the control plane's answers are stored sealed
    out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers
           if k.lower() not in ("content-length", "x-request-id")]
    out += [(b"content-length", str(len(body)).encode()), (b"idempotent-replayed", b"true")]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


class _Stored(msgspec.Struct, frozen=True):
    response_status: int
    response_headers: str
    response_body: str
