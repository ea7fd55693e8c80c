"""Operator ledger API under `/api` (admin token): grant, adjust, reverse, balance, statement,
low-balance alert, reconcile.

Money-moving POSTs require an `Idempotency-Key` header (at most 255 visible ASCII characters):
resubmitted with the same body they return the original transaction, with another body 422
`idempotency_key_reused`, while the original is still being written 409 `idempotency_key_in_use`.
Amounts are integer nano-dollars (`amount_nanos`) or an exact decimal string (`amount_usd`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import provide_tx, require_org
from control_plane.api.guards import admin_guard
from core import ledger
from core.errors import ApiError
from core.money import parse_usd

__all__ = ["AdjustBody", "AlertBody", "GrantBody", "LedgerController", "Reconciliation", "ReverseBody"]


class GrantBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    amount_nanos: int | None = None
    amount_usd: str | None = None
    promotional: bool = False
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class AdjustBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    amount_nanos: int | None = None
    amount_usd: str | None = None
    """Signed: positive credits the account, negative debits it."""
    reason: Annotated[str, msgspec.Meta(max_length=500)]
    account: Literal["wallet", "promo"] = "wallet"


class ReverseBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)]


class AlertBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    low_balance_nanos: int | None


class Reconciliation(ledger.ReconcileReport, frozen=True, kw_only=True):
    ok: bool
    """No drift and a zero journal sum."""


def amount_of(nanos: int | None, usd: str | None) -> int:
    if (nanos is None) == (usd is None):
        raise ApiError("invalid_request_error", "Give exactly one of 'amount_nanos' and 'amount_usd'.",
                       param="amount_nanos")
    if usd is not None:
        try:
            return parse_usd(usd)
        except ValueError as exc:
            raise ApiError("invalid_request_error", str(exc), param="amount_usd") from None
    assert nanos is not None
    return nanos


def idempotency_key(request: Request[Any, Any, Any]) -> str:
    key = request.headers.get("idempotency-key", "").strip().strip('"')
    if not key:
        raise ApiError("missing_required_parameter", "This operation moves money: send an 'Idempotency-Key' "
                       "header (e.g. a UUID) so a retry cannot apply it twice.", param="Idempotency-Key")
    if len(key) > 255 or not all(33 <= ord(ch) <= 126 for ch in key):
        raise ApiError("invalid_request_error", "'Idempotency-Key' must be 1-255 visible ASCII characters.",
                       param="Idempotency-Key")
    return key



class LedgerController(Controller):
    path = "/api"
    guards = [admin_guard]
    dependencies = {"conn": Provide(provide_tx)}

    @post("/orgs/{org_id:str}/ledger/grants", status_code=201)
    async def grant(self, conn: AsyncConnection, request: Request[Any, Any, Any], org_id: str,
                    data: GrantBody) -> ledger.TransactionView:
        key = idempotency_key(request)
        amount = amount_of(data.amount_nanos, data.amount_usd)
        return await ledger.grant(conn, await require_org(conn, org_id), amount,
                                  idempotency_key=key, actor="admin", reason=data.reason,
                                  promotional=data.promotional)

    @post("/orgs/{org_id:str}/ledger/adjustments", status_code=201)
    async def adjust(self, conn: AsyncConnection, request: Request[Any, Any, Any], org_id: str,
                     data: AdjustBody) -> ledger.TransactionView:
        key = idempotency_key(request)
        amount = amount_of(data.amount_nanos, data.amount_usd)
        return await ledger.adjust(conn, await require_org(conn, org_id), amount, reason=data.reason,
                                   idempotency_key=key, actor="admin", account=data.account)

    @post("/orgs/{org_id:str}/ledger/transactions/{txn_id:str}/reverse", status_code=201)
    async def reverse(self, conn: AsyncConnection, request: Request[Any, Any, Any], org_id: str, txn_id: str,
                      data: ReverseBody) -> ledger.TransactionView:
        key = idempotency_key(request)
        return await ledger.reverse(conn, await require_org(conn, org_id), txn_id, reason=data.reason,
                                    idempotency_key=key, actor="admin")

    @get("/orgs/{org_id:str}/ledger/transactions/{txn_id:str}")
    async def transaction(self, conn: AsyncConnection, org_id: str, txn_id: str) -> ledger.TransactionView:
        found = await ledger.get_transaction(conn, await require_org(conn, org_id), txn_id)
        if found is None:
            raise ApiError("not_found", f"No ledger transaction {txn_id!r}.")
        return found

    @get("/orgs/{org_id:str}/ledger/balance")
    async def balance(self, conn: AsyncConnection, org_id: str) -> ledger.BalanceView:
        return await ledger.balance(conn, await require_org(conn, org_id))

    @put("/orgs/{org_id:str}/ledger/alerts")
    async def alerts(self, conn: AsyncConnection, org_id: str, data: AlertBody) -> ledger.BalanceView:
        return await ledger.set_low_balance(conn, await require_org(conn, org_id), data.low_balance_nanos)

    @get("/orgs/{org_id:str}/ledger/statement")
    async def statement(self, conn: AsyncConnection, org_id: str,
                        account: Literal["wallet", "promo", "receivable"] = "wallet",
                        after: Annotated[int, Parameter(ge=0)] = 0,
                        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
                        since: Annotated[int | None, Parameter(ge=0)] = None,
                        until: Annotated[int | None, Parameter(ge=0)] = None) -> ledger.StatementPage:
        """`since`/`until`: unix milliseconds; `after`: the `next_after` of the previous page."""
        return await ledger.statement(conn, await require_org(conn, org_id), account, after=after, limit=limit,
                                      since_ms=since, until_ms=until)

    @get("/ledger/reconcile")
    async def reconcile(self, conn: AsyncConnection, state: State, org_id: str | None = None) -> Reconciliation:
        # The adapters' journal is read when it shares this data directory (one machine, `nx up`).
        report = await ledger.reconcile(conn, None if org_id is None else await require_org(conn, org_id),
                                        journal_dir=state.settings.data_path / "journal")
        return Reconciliation(**msgspec.structs.asdict(report), ok=report.ok)
