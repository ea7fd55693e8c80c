"""Stores the control plane's `/v1` answers under the Idempotency-Key the sidecar claimed.

The sidecar claims the key before the request (proxy_plugins/sidecar/idempotency_gate.py) and passes the
record in `x-nx-idem`; this ASGI middleware captures the answer and stores it just before its last
body chunk is sent, so a repeat that arrives after the client saw the answer finds it stored.
Server errors give the key back instead (a retry runs again). The handler's own transaction has
committed by then; a crash in between leaves the claim to expire after its lease, and a retry then
runs again — the operations behind these routes (webhook endpoints, response cancellation) are
safe to run twice, unlike inference, whose answer is stored together with its charge.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from core import idempotency
from core.contract import Header
from core.db import write_tx

__all__ = ["idempotent_answers"]

log = logging.getLogger("nx.control_plane.idempotency")


_IDEM = Header.IDEM.encode()


def idempotent_answers(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        record = None
        if scope["type"] == ScopeType.HTTP:
            record = next((v.decode("latin-1") for k, v in scope["headers"] if k == _IDEM), None)
        if record is None:
            await app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    await _store(scope, record, start, b"".join(chunks))
            await send(message)

        await app(scope, receive, capture)

    return middleware


async def _store(scope: Scope, record: str, start: dict[str, Any], body: bytes) -> None:
    status = int(start.get("status", 500))
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
    try:
        async with write_tx(scope["app"].state.engine) as conn:
            if status >= 500 or status == 429:
                await idempotency.release(conn, record)
            else:
                # Sealed: these answers can carry a secret (a webhook endpoint's, at creation and rotation).
                await idempotency.complete(conn, record, idempotency.StoredResponse(status, headers, body),
                                           pepper=scope["app"].state.secrets.key_pepper)
    except Exception:  # the claim's lease still frees the key; the answer itself is unaffected
        log.exception("could not store the answer for idempotency record %s", record)
