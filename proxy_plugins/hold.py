"""The money check in the sidecar: reserve a request's maximum cost before any backend call.

`place` runs `ledger.place_hold` in its own write transaction and turns a refusal into the
decision the client gets (402 `insufficient_quota`). Money never fails open: if the database
cannot be reached the request is refused with 503 `billing_unavailable`, unlike rate limits.
The adapter settles the hold by request id when the answer is complete.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane import ledger
from control_plane.db import write_tx
from control_plane.errors import ApiError, error_json
from proxy_plugins.estimate import Estimate
from proxy_plugins.snapshot import BackendRecord, KeyRecord, ModelRecord

__all__ = ["Holds", "HOLD_MARGIN_MS"]

log = logging.getLogger("nx.sidecar.hold")

HOLD_MARGIN_MS = 5 * 60 * 1000
"""A hold outlives its backend's timeout by this much, so a slow answer still settles; the worker
expires it only when the process carrying the request is gone."""


class Holds:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def place(self, *, key: KeyRecord, project: str, model: ModelRecord, backend: BackendRecord | None,
                    endpoint: str, request_id: str, client_ip: str, est: Estimate) -> str | tuple[int, bytes]:
        """The hold's price card as `version,input,cached,output` (nano-dollars per million tokens),
        which the adapter prices the answer with, so its `x-wallet-debit` is exactly the charge
        settlement posts; or (status, error body) to refuse with."""
        timeout = backend.timeout_ms if backend is not None else 300_000
        try:
            async with write_tx(self.engine) as conn:
                hold = await ledger.place_hold(
                    conn, org_id=key.org_id, project_id=project, key_id=key.id, request_id=request_id,
                    model_id=model.id, endpoint=endpoint, backend_id=model.backend_id,
                    max_input_tokens=est.input_tokens, max_output_tokens=est.output_tokens,
                    expires_at_ms=int(time.time() * 1000) + timeout + HOLD_MARGIN_MS, client_ip=client_ip)
                price = model.price
                if price is None or price.version != hold.price_version:  # the snapshot lags a new card
                    card = await ledger.card_version(conn, model.id, hold.price_version)
                    figures = (card.input_nanos_per_mtok, card.cached_input_nanos_per_mtok,
                               card.output_nanos_per_mtok)
                else:
                    figures = (price.input_nanos_per_mtok, price.cached_input_nanos_per_mtok,
                               price.output_nanos_per_mtok)
        except ApiError as exc:
            return exc.status, error_json(exc.code, exc.message, exc.param)
        except Exception:
            log.exception("request %s: could not place the hold", request_id)
            return 503, error_json("billing_unavailable", "Billing is temporarily unavailable; the request "
                                   "was not run. Please retry.")
        return ",".join(str(x) for x in (hold.price_version, *figures))
