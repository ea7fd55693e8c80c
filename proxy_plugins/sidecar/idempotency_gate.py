"""The sidecar's half of idempotency keys (the rules are in core/idempotency.py).

For a POST carrying `Idempotency-Key`, the claim is taken in the pre-request check, after the key
and its scopes passed and before rate limits and the money hold, so a replay or a refused repeat
costs neither. A replay is routed to the adapter, which sends the stored answer byte for byte
(an ext_authz reply cannot be a 200 without letting the request through).
"""

from __future__ import annotations

from typing import Literal

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from core import idempotency
from core.db import write_tx
from core.errors import ERRORS, error_json

__all__ = ["Gate", "Ticket"]


class Ticket(msgspec.Struct, frozen=True):
    record_id: str
    mode: Literal["run", "replay"]


class Refusal(msgspec.Struct, frozen=True):
    status: int
    body: bytes


class Gate:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def enter(self, *, org_id: str, key_id: str, method: str, path: str, idem_key: str | None,
                    body: bytes, request_id: str) -> Ticket | Refusal | None:
        if idem_key is None or method != "POST":
            return None
        if not idempotency.valid_key(idem_key):
            return _refuse("invalid_request_error", "Idempotency-Key must be 1-255 printable ASCII characters.")
        async with write_tx(self.engine) as conn:
            claim = await idempotency.claim(conn, org_id=org_id, key_id=key_id, method=method,
                                            path=path.split("?", 1)[0], idem_key=idem_key, body=body,
                                            request_id=request_id)
        if claim.outcome == "run":
            return Ticket(claim.record_id, "run")
        if claim.outcome == "replay":
            return Ticket(claim.record_id, "replay")
        if claim.outcome == "in_use":
            return _refuse("idempotency_key_in_use", "A request with this Idempotency-Key is still in progress; "
                           "retry after it completes.")
        return _refuse("idempotency_key_reused", "This Idempotency-Key was already used with a different "
                       "request body; use a new key for a new request.")

    async def release(self, ticket: Ticket) -> None:
        """The request was refused after the claim (rate limit, funds): it never ran."""
        if ticket.mode == "run":
            async with write_tx(self.engine) as conn:
                await idempotency.release(conn, ticket.record_id)


def _refuse(code: str, message: str) -> Refusal:
    return Refusal(ERRORS[code].status, error_json(code, message, "Idempotency-Key"))
