"""POST /v1/responses in the adapter.

Order of work: validate the request (400 naming the parameter, before any upstream call), refuse
capabilities the model lacks, load the `previous_response_id` conversation (an id the key may not
see, another organization's or another project's for a key limited to some projects, is "not
found"; control_plane/domain/tenant.py), then one of:

- `background: true`: the response, its input and its first events are stored and a job queued
  in one transaction, then `queued` is answered at once (or, with `stream: true`, the stored
  events are streamed as the worker writes them). control_plane/worker.py runs it.
- `stream: true`: events relayed as they are produced; a stored response is written before its
  terminal event goes out, so a client that continues with `previous_response_id` right after
  `response.completed` finds it. The final event carries the metadata as `x_nx`, followed by the
  metadata SSE comment (metering.py).
- otherwise one JSON Response, stored before it is sent.
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.contract import output_cap
from core.db import now_ms, read_tx, write_tx
from core.errors import ERRORS, ApiError
from core.events import record_event
from core.events.catalog import ResponseQueued
from core.ids import new_id
from core.responses import jobs as jobs
from core.responses import store as store
from core.tenant import key_tenant
from proxy_plugins.adapter.context import RequestContext, Usage
from proxy_plugins.adapter.exchange import Exchange
from proxy_plugins.adapter.metering import metadata, metadata_comment
from proxy_plugins.adapter.responses_run import Run, usage_numbers
from proxy_plugins.adapter.services import Services
from proxy_plugins.adapter.translate.events import ResponseStream
from proxy_plugins.adapter.translate.request import (
    CreateResponse,
    Item,
    check_capabilities,
    normalize_input,
    parse_request,
)
from proxy_plugins.adapter.translate.response import skeleton
from proxy_plugins.adapter.translate.types import Response, Status, event_bytes

__all__ = ["handle"]

_encode = msgspec.json.encode


async def handle(svc: Services, ctx: RequestContext, body: bytes, exchange: Exchange) -> None:
    req = parse_request(body)
    if req.max_output_tokens is not None and req.max_output_tokens > output_cap(ctx.model):
        raise ApiError("invalid_request_error", f"'max_output_tokens' is too large: the model "
                       f"'{ctx.requested_model}' produces at most {output_cap(ctx.model)} tokens.", "max_output_tokens")
    # A JSON answer runs to its end even if its client leaves: it is then charged, not lost.
    exchange.detached = not req.stream
    items = normalize_input(req.input if req.input is not None else [])
    check_capabilities(req, items, ctx.capabilities, ctx.requested_model)
    prior: list[Item] = []
    if req.previous_response_id:
        async with read_tx(svc.engine) as conn:
            tenant = await key_tenant(conn, ctx.org_id, ctx.key_id)
            prior = normalize_input(await store.conversation(conn, tenant, req.previous_response_id))
    status: Status = "queued" if req.background else "in_progress"
    response = skeleton(req, response_id=new_id("resp"), model=ctx.requested_model, status=status)
    if req.background:
        await _background(svc, ctx, req, items, response, exchange)
        return
    run = Run(svc.backends, ctx.backend, ctx.model, req, prior + items, response, tenant=ctx.org_id,
              meter=ctx.meter)
    if req.stream:
        ctx.count_input = run.count_input
        await _stream(svc, ctx, req, items, run, exchange)
        return
    final = await run.json()
    _meter(ctx, final)
    if req.store is not False:
        await _save(svc, ctx, req, items, final)
    await exchange.json(_encode(final))


def _meter(ctx: RequestContext, final: dict[str, Any] | None) -> None:
    """The final Response's usage: the backend's, or as the stream's meter completed it."""
    i, c, o = usage_numbers(final)
    ctx.usage = Usage(input_tokens=i, cached_tokens=c, output_tokens=o)
    if i or o:
        ctx.meter.reported = True


def _record(ctx: RequestContext, req: CreateResponse, body: dict[str, Any] | Response) -> store.NewResponse:
    data = body if isinstance(body, dict) else msgspec.to_builtins(body)
    i, c, o = usage_numbers(data)
    return store.NewResponse(
        id=data["id"],
        org_id=ctx.org_id,
        project_id=ctx.project_id,
        key_id=ctx.key_id,
        request_id=ctx.request_id,
        model_id=ctx.model.id,
        backend_id=ctx.backend.id,
        requested_model=ctx.requested_model,
        status=data["status"],
        background=bool(req.background),
        previous_response_id=req.previous_response_id,
        request=_encode(req),
        body=_encode(data),
        input_tokens=i,
        cached_tokens=c,
        output_tokens=o,
    )


async def _save(
    svc: Services, ctx: RequestContext, req: CreateResponse, items: list[Item], final: dict[str, Any]
) -> None:
    async with write_tx(svc.engine) as conn:
        await store.insert(conn, _record(ctx, req, final), items, list(final.get("output") or []))


async def _stream(
    svc: Services, ctx: RequestContext, req: CreateResponse, items: list[Item], run: Run, exchange: Exchange
) -> None:
    events = run.events()
    first = await anext(events)  # an upstream refusal raises here, before any byte is sent
    await exchange.start_stream()
    batch: list[dict[str, Any]] | None = first
    while batch is not None:
        terminal = [e for e in batch if e["type"] in jobs.TERMINAL_EVENTS]
        if terminal:
            _meter(ctx, run.final or terminal[-1].get("response"))
            if req.store is not False and run.final is not None:
                exchange.detached = True  # the client saw the answer; its record must be written
                await _save(svc, ctx, req, items, run.final)
            terminal[-1]["x_nx"] = metadata(ctx)
        await exchange.event(b"".join(event_bytes(e) for e in batch))
        batch = await anext(events, None)
    failed = (run.final or {}).get("status") == "failed"
    await exchange.finish(metadata_comment(ctx), status=ERRORS["upstream_error"].status if failed else None)


async def _background(
    svc: Services,
    ctx: RequestContext,
    req: CreateResponse,
    items: list[Item],
    response: Response,
    exchange: Exchange,
) -> None:
    queued = ResponseStream(response).announce()
    async with write_tx(svc.engine) as conn:
        await store.insert(conn, _record(ctx, req, response), items, [])
        await jobs.enqueue(conn, response.id, queued)
        await record_event(conn, ctx.org_id, "response.queued", ResponseQueued(
            response_id=response.id, model=ctx.requested_model, queued_at=now_ms() // 1000),
            project_id=ctx.project_id or None)
    if not req.stream:
        await exchange.json(_encode(response))
        return
    # The job runs whether or not this client stays: closing the stream only stops the tail.
    await exchange.start_stream()
    async for frame in jobs.tail(svc.engine, response.id, -1):
        await exchange.event(frame)
    await exchange.finish(metadata_comment(ctx))
