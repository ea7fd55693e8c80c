"""The money check in the sidecar: reserve a request's maximum cost before any backend call.

`place` runs through a group commit (many requests' holds share one transaction; each request is
answered only after the transaction with its hold committed): a batch is placed set-based by
`ledger.place_holds`, or hold by hold by `ledger.place_hold` when it is not plain, and `place`
turns a refusal into the decision the client gets (402 `insufficient_quota`). Money never fails
open: if the database cannot be reached the request is refused with 503 `billing_unavailable`,
unlike rate limits. The adapter settles the hold by request id when the answer is complete.
"""

from __future__ import annotations

import logging
import time

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import ledger
from core.contract import hold_price
from core.errors import ERRORS, ApiError, error_json
from core.groupcommit import GroupCommit
from core.snapshot import BackendRecord, KeyRecord, ModelRecord, PriceRecord
from proxy_plugins.sidecar.estimate import Estimate

__all__ = [ "Holds"]

log = logging.getLogger("nx.sidecar.hold")

PLACE_WITHIN_S = 1.5
"""A hold not placed within this long is refused: Envoy's ext_authz timeout is 2 s
(control_plane/envoy_config.py), after which nobody would be waiting for the request."""



class _Item(msgspec.Struct, frozen=True, kw_only=True):
    key: KeyRecord
    project: str
    model: ModelRecord
    endpoint: str
    request_id: str
    client_ip: str
    est: Estimate
    cover: int = 0
    """A routed request's priciest target's maximum cost (0: one target)."""
    expires_at_ms: int
    place_by: float
    """time.monotonic() after which Envoy has given up on this check (its ext_authz timeout)."""


async def _place(conn: AsyncConnection, item: _Item) -> str:
    """One hold on its own (a batch that was not plain is rerun this way, each in a savepoint)."""
    if time.monotonic() > item.place_by:
        raise _too_late()
    hold = await ledger.place_hold(
        conn, org_id=item.key.org_id, project_id=item.project, key_id=item.key.id,
        request_id=item.request_id, model_id=item.model.id, endpoint=item.endpoint,
        backend_id=item.model.backend_id, max_input_tokens=item.est.input_tokens,
        max_output_tokens=item.est.output_tokens, expires_at_ms=item.expires_at_ms, client_ip=item.client_ip,
        cover_nanos=item.cover)
    return await _header(conn, item, hold)


async def _place_many(conn: AsyncConnection, items: list[_Item]) -> list[str | BaseException]:
    """The batch set-based (`ledger.place_holds`: a fixed number of statements per batch, not per
    hold); it raises when the batch is not plain, and the group commit reruns it with `_place`."""
    late = time.monotonic()
    outcomes: list[str | BaseException] = []
    placing = [i for i, item in enumerate(items) if late <= item.place_by]
    placed = await ledger.place_holds(conn, [_request(items[i]) for i in placing])
    by_index = dict(zip(placing, placed, strict=True))
    for i, item in enumerate(items):
        hold = by_index.get(i)
        if hold is None:
            outcomes.append(_too_late())
        elif isinstance(hold, BaseException):
            outcomes.append(hold)
        else:
            outcomes.append(await _header(conn, item, hold))
    return outcomes


def _request(item: _Item) -> ledger.HoldRequest:
    return ledger.HoldRequest(
        org_id=item.key.org_id, project_id=item.project, key_id=item.key.id, request_id=item.request_id,
        model_id=item.model.id, endpoint=item.endpoint, backend_id=item.model.backend_id,
        max_input_tokens=item.est.input_tokens, max_output_tokens=item.est.output_tokens,
        expires_at_ms=item.expires_at_ms, client_ip=item.client_ip, cover_nanos=item.cover)


def _too_late() -> ApiError:
    # Under overload the queue outgrew Envoy's patience: placing the hold now would reserve
    # money for a request Envoy has already answered with an error, until the hold expired.
    return ApiError("server_busy", "The platform is busy; the request was not run. Please retry.")


async def _header(conn: AsyncConnection, item: _Item, hold: ledger.Hold) -> str:
    price = item.model.price
    if price is not None and price.version == hold.price_version:
        # The snapshot's card, the usual case: its header text is formatted once per card.
        header = _PRICE_HEADERS.get(price)
        if header is None:
            if len(_PRICE_HEADERS) > 10_000:
                _PRICE_HEADERS.clear()
            header = _PRICE_HEADERS[price] = _price_header(price.version, price.input_nanos_per_mtok,
                                                           price.cached_input_nanos_per_mtok,
                                                           price.output_nanos_per_mtok)
        return header
    # The snapshot lags a new card: price with the card the hold was placed at.
    card = await ledger.card_version(conn, item.model.id, hold.price_version)
    return _price_header(hold.price_version, card.input_nanos_per_mtok, card.cached_input_nanos_per_mtok,
                         card.output_nanos_per_mtok)


_PRICE_HEADERS: dict[PriceRecord, str] = {}
"""Price card -> its `x-nx-hold-price` text (cards are immutable; bounded against churn)."""


_price_header = hold_price


class Holds:
    def __init__(self, engine: AsyncEngine, grace_s: float = 300.0) -> None:
        self.grace_ms = int(grace_s * 1000)
        """`hold_grace_seconds`: a hold lives this long past its backend's timeout, unless renewed."""
        # Sorted by organization within a batch: concurrent batches lock wallets in one order.
        self.commits: GroupCommit[_Item, str] = GroupCommit(engine, _place, work_many=_place_many,
                                                               order=lambda i: i.key.org_id)

    async def place(self, *, key: KeyRecord, project: str, model: ModelRecord, backend: BackendRecord | None,
                    endpoint: str, request_id: str, client_ip: str, est: Estimate,
                    cover: int = 0) -> str | tuple[int, bytes]:
        """The hold's price card as `version,input,cached,output` (nano-dollars per million tokens),
        which the adapter prices the answer with, so its `x-wallet-debit` is exactly the charge
        settlement posts; or (status, error body) to refuse with."""
        timeout = backend.timeout_ms if backend is not None else 300_000
        item = _Item(key=key, project=project, model=model, endpoint=endpoint, request_id=request_id,
                     client_ip=client_ip, est=est, cover=cover,
                     expires_at_ms=int(time.time() * 1000) + timeout + self.grace_ms,
                     place_by=time.monotonic() + PLACE_WITHIN_S)
        try:
            return await self.commits.submit(item)
        except ledger.LedgerError as exc:  # e.g. InsufficientFunds: the table gives its status
            return ERRORS[exc.code].status, error_json(exc.code, exc.message, exc.param)
        except ApiError as exc:
            return exc.status, error_json(exc.code, exc.message, exc.param)
        except Exception:
            log.exception("request %s: could not place the hold", request_id)
            return 503, error_json("billing_unavailable", "Billing is temporarily unavailable; the request "
                                   "was not run. Please retry.")

    async def close(self) -> None:
        await self.commits.close()
