"""Finance exports in the management API (admin token):

    GET /api/orgs/{org}/exports/usage?from=...&to=...&format=csv|jsonl
    GET /api/orgs/{org}/exports/usage/totals?from=...&to=...
    GET /api/orgs/{org}/exports/ledger?from=...&to=...&format=csv|jsonl&account=all|wallet|promo
    GET /api/orgs/{org}/exports/ledger/totals?from=...&to=...&account=...

`from` (required) and `to` (default: now) are unix seconds, a UTC date or an ISO 8601 date-time;
the period is [from, to). Exports stream (see control_plane/usage/exports.py); a JSON Lines export
ends with its totals line, a CSV export is pure CSV and its totals come from `/totals`.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.response import Stream

from control_plane.api.deps import require_org
from control_plane.api.guards import admin_guard
from control_plane.usage import exports
from control_plane.usage.export_model import LedgerTotals, UsageTotals
from core.db import now_ms, read_tx
from core.errors import ApiError

__all__ = ["ExportsController"]

MEDIA = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


def _format(request: Request[Any, Any, Any]) -> exports.Format:
    value = request.query_params.get("format", "csv")
    if value == "csv" or value == "jsonl":
        return value  # type: ignore[return-value]  # narrowed to the literal by the comparison
    raise ApiError("invalid_request_error", "'format' must be csv or jsonl.", param="format")


def _account(request: Request[Any, Any, Any]) -> exports.Account:
    value = request.query_params.get("account", "all")
    if value == "all" or value == "wallet" or value == "promo":
        return value  # type: ignore[return-value]  # narrowed to the literal by the comparison
    raise ApiError("invalid_request_error", "'account' must be all, wallet or promo.", param="account")


def _period(request: Request[Any, Any, Any]) -> tuple[int, int]:
    q = request.query_params
    return exports.period(q.get("from"), q.get("to"), now_ms())



async def _checked(state: State, org_id: str) -> None:
    async with read_tx(state.engine) as conn:
        await require_org(conn, org_id)


def _stream(body: Any, fmt: str, name: str) -> Stream:
    return Stream(body, media_type=MEDIA[fmt],
                  headers={"content-disposition": f'attachment; filename="{name}.{fmt}"'})


class ExportsController(Controller):
    path = "/api/orgs/{org_id:str}/exports"
    guards = [admin_guard]

    @get("/usage")
    async def usage(self, request: Request[Any, Any, Any], state: State, org_id: str) -> Stream:
        lo, hi = _period(request)
        fmt = _format(request)
        await _checked(state, org_id)
        body = exports.streamed(state.engine, lambda c: exports.export_usage(c, org_id, lo, hi, fmt))
        return _stream(body, fmt, f"usage-{org_id}-{lo // 1000}-{hi // 1000}")

    @get("/usage/totals")
    async def usage_totals(self, request: Request[Any, Any, Any], state: State, org_id: str) -> UsageTotals:
        lo, hi = _period(request)
        async with exports.snapshot(state.engine) as conn:
            await require_org(conn, org_id)
            return await exports.usage_totals(conn, org_id, lo, hi)

    @get("/ledger")
    async def ledger(self, request: Request[Any, Any, Any], state: State, org_id: str) -> Stream:
        lo, hi = _period(request)
        fmt = _format(request)
        account = _account(request)
        await _checked(state, org_id)
        body = exports.streamed(state.engine, lambda c: exports.export_ledger(
            c, org_id, lo, hi, fmt, account))
        return _stream(body, fmt, f"ledger-{org_id}-{lo // 1000}-{hi // 1000}")

    @get("/ledger/totals")
    async def ledger_totals(self, request: Request[Any, Any, Any], state: State, org_id: str) -> LedgerTotals:
        lo, hi = _period(request)
        account = _account(request)
        async with exports.snapshot(state.engine) as conn:
            await require_org(conn, org_id)
            return await exports.ledger_totals(conn, org_id, lo, hi, account)
