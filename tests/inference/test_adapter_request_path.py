"""The adapter's own request path, in process (no server, backend or database): body reading, the
metadata headers, and disconnect handling with the handler running in the server's task."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from core.snapshot import BackendRecord, ModelRecord, PriceRecord
from proxy_plugins.adapter import app as adapter_app
from proxy_plugins.adapter.context import RequestContext, Usage
from proxy_plugins.adapter.exchange import Exchange
from proxy_plugins.adapter.metering import metadata, metadata_headers

PRICE = PriceRecord(3, 1_000_000_000, 500_000_000, 2_000_000_000)


def _ctx(**kwargs: Any) -> RequestContext:
    model = ModelRecord(id="sim/chat", backend_id="sim", upstream_name="up", kind="text", context_window=8192,
                        max_output_tokens=1024, capabilities={}, status="active", price=PRICE)
    backend = BackendRecord(id="sim", protocol="openai", base_url="http://127.0.0.1:1/v1", api_key_env=None,
                            timeout_ms=1000)
    return RequestContext(request_id="req_1", org_id="o", project_id="p", key_id="k", requested_model="sim/chat",
                          model=model, backend=backend, received_ns=0, hold_price=PRICE, **kwargs)


def _messages(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
    return receive


async def test_read_body_single_message_chunks_and_limit() -> None:
    one = _messages({"type": "http.request", "body": b"abc", "more_body": False})
    assert await adapter_app._read_body(one, 10) == b"abc"
    parts = _messages({"type": "http.request", "body": b"ab", "more_body": True},
                      {"type": "http.request", "body": b"cd", "more_body": False})
    assert await adapter_app._read_body(parts, 10) == b"abcd"
    assert await adapter_app._read_body(_messages({"type": "http.request", "body": b"x" * 11}), 10) is None
    over = _messages({"type": "http.request", "body": b"x" * 6, "more_body": True},
                     {"type": "http.request", "body": b"x" * 6, "more_body": False})
    assert await adapter_app._read_body(over, 10) is None


def test_metadata_headers_match_the_metadata_values() -> None:
    ctx = _ctx(usage=Usage(input_tokens=7, cached_tokens=2, output_tokens=8), cache_status="partial")
    expected = [(k.encode(), v.encode()) for k, v in metadata(ctx).items()]
    assert metadata_headers(ctx) == expected
    start = [(k, v) for k, v in expected if k in (b"x-request-id", b"x-model", b"x-cache-status")]
    assert metadata_headers(ctx, final=False) == start
    cut = _ctx()
    for _ in range(3):
        cut.meter.produce()  # a cut stream is billed for what it produced
    assert dict(metadata_headers(cut))[b"x-output-tokens"] == b"3"


def test_hold_price_is_parsed_once_per_card() -> None:
    assert adapter_app._hold_price("3,1000000000,500000000,2000000000") == PRICE
    assert adapter_app._hold_price("3,1000000000,500000000,2000000000") is adapter_app._hold_price(
        "3,1000000000,500000000,2000000000")
    assert adapter_app._hold_price(None) is None and adapter_app._hold_price("") is None


def _adapter() -> adapter_app.Adapter:
    """Only what `_serve` uses: a commit that renders the headers (no database)."""
    adapter = object.__new__(adapter_app.Adapter)

    async def commit(_ctx: RequestContext, _status: int, _body: bytes, headers: Any) -> Any:
        return headers()
    adapter.committer = commit  # type: ignore[assignment]
    adapter.svc = None  # type: ignore[assignment]
    return adapter


async def test_disconnect_cancels_the_handler_and_the_stream_is_still_settled() -> None:
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []
    committed: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def commit(_ctx: RequestContext, _status: int, body: bytes, headers: Any) -> Any:
        committed.append(body)
        return headers()

    async def handler(_svc: Any, _ctx: RequestContext, _body: bytes, exchange: Exchange) -> None:
        await exchange.start_stream()
        await exchange.event(b"data: {}\n\n")
        gone.set()
        await asyncio.sleep(30)  # an upstream call that the disconnect must abort

    adapter = _adapter()
    adapter.committer = commit  # type: ignore[assignment]
    ctx = _ctx(idempotency_record="idem_1")
    await asyncio.wait_for(adapter._serve(handler, ctx, b"{}", receive, send), 5)
    assert committed == [b"data: {}\n\n"], "the cut stream is settled for what it produced"
    assert sent[-1]["body"] == b"data: {}\n\n", "nothing more goes to a client that left"
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_the_answer_completing_is_not_taken_for_a_disconnect() -> None:
    sent: list[dict[str, Any]] = []
    after: list[str] = []

    async def receive() -> dict[str, Any]:
        while not sent or sent[-1].get("more_body", False):
            await asyncio.sleep(0)
        return {"type": "http.disconnect"}  # what uvicorn reports once the answer went out

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def handler(_svc: Any, _ctx: RequestContext, _body: bytes, exchange: Exchange) -> None:
        await exchange.json(msgspec.json.encode({"ok": True}))
        await asyncio.sleep(0.05)  # work after the answer (e.g. a stored record) must not be cut
        after.append("ran")

    adapter = _adapter()
    await asyncio.wait_for(adapter._serve(handler, _ctx(), b"{}", receive, send), 5)
    assert after == ["ran"]
    assert sent[0]["status"] == 200


async def test_a_cancellation_not_from_the_watcher_propagates() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(_message: dict[str, Any]) -> None:
        return None

    async def handler(_svc: Any, _ctx: RequestContext, _body: bytes, _exchange: Exchange) -> None:
        await asyncio.sleep(30)

    adapter = _adapter()
    task = asyncio.create_task(adapter._serve(handler, _ctx(), b"{}", receive, send))
    await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("a server shutdown's cancellation must not be swallowed")
