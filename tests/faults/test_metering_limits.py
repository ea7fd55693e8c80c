"""Finding 1 of issue 12: a request can never be served for more than its hold.

Every output limit (`max_output_tokens` on /v1/responses, `max_tokens` and
`max_completion_tokens` on chat) is checked against the model's cap in the sidecar, before the
hold; the adapter always asks the backend for at most what was held, and stops a stream whose
backend produces more; a settlement above its hold charges what the hold covers and books the rest
as a receivable, never nothing. The simulator plays a backend that ignores output limits.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.faults.metering_support import CREDIT, assert_books, books, cost, debit, sp, tenant
from tests.inference.helpers import chat_body, final_metadata, marker, read_sse
from tests.inference.support import SimPlatform
from tests.responses.oas import validate_events
from tests.responses.sse import read_stream

pytestmark = [pytest.mark.faults]
__all__ = ["sp"]

CAP = 1024  # sim/chat's max_output_tokens (tests/inference/support.py)


@pytest.mark.parametrize(("path", "field", "stream"), [
    ("/v1/responses", "max_output_tokens", True),
    ("/v1/responses", "max_output_tokens", False),
    ("/v1/chat/completions", "max_tokens", True),
    ("/v1/chat/completions", "max_completion_tokens", False),
])
async def test_an_output_limit_above_the_models_cap_is_refused_before_the_hold(
        sp: SimPlatform, path: str, field: str, stream: bool) -> None:
    org, key = await tenant(sp)
    needle = marker()
    prompt = f"[[sim chunks=3000]] over the cap {needle}"
    body: dict[str, Any] = ({"model": "sim-chat", "input": prompt} if path == "/v1/responses"
                            else chat_body(prompt))
    body.update({field: 3000, "stream": stream})
    async with sp.platform.client(key) as c:
        r = await c.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request_error", field), error
    assert str(CAP) in error["message"]
    assert sp.sim.requests(needle) == []  # the backend was never asked
    b = await books(sp, org)
    assert (b.wallet, b.held, b.open_holds, b.usage) == (CREDIT, 0, 0, [])


async def test_a_chat_request_cannot_shrink_its_hold_with_another_endpoints_field(sp: SimPlatform) -> None:
    """`max_output_tokens` means nothing to Chat Completions: it must not size a chat request's hold
    (held for 1 output token, the backend produces 600, whose cost outgrows the whole hold)."""
    org, key = await tenant(sp)
    body = chat_body(f"[[sim chunks=600]] escape {marker()}", stream=True, max_output_tokens=1)
    async with sp.platform.client(key) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        events, comments, done = await read_sse(r)
    assert done, events[-1:]
    meta = final_metadata(comments)
    assert int(meta["x-output-tokens"]) == 600
    await assert_books(sp, org, requests=1, debits=[debit(meta)])


def _asked(sp: SimPlatform, needle: str) -> dict[str, Any]:
    """The body the backend got for the request (not its input count, which carries it too)."""
    [record] = [r for r in sp.sim.requests(needle) if r["path"] in ("/v1/chat/completions", "/v1/responses")]
    asked: dict[str, Any] = record["body"]
    return asked


async def test_a_chat_stream_never_asks_or_serves_more_than_was_held(sp: SimPlatform) -> None:
    org, key = await tenant(sp)
    needle = marker()
    body = chat_body(f"[[sim chunks=1100]] long {needle}", stream=True, stream_options={"include_usage": True})
    async with sp.platform.client(key) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        events, comments, done = await read_sse(r)
    asked = _asked(sp, needle)
    assert asked.get("max_completion_tokens", asked.get("max_tokens")) == CAP
    assert done
    content = [e for e in events if e.get("choices") and e["choices"][0]["delta"].get("content")]
    assert len(content) == CAP  # the backend overran its limit: the adapter stopped it at the hold
    assert [e["choices"][0]["finish_reason"] for e in events if e.get("choices")][-1] == "length"
    meta = final_metadata(comments)
    assert int(meta["x-output-tokens"]) == CAP and events[-1]["usage"]["completion_tokens"] == CAP
    await assert_books(sp, org, requests=1, debits=[debit(meta)])


async def test_a_responses_stream_never_asks_or_serves_more_than_was_held(sp: SimPlatform) -> None:
    org, key = await tenant(sp)
    needle = marker()
    body = {"model": "sim-chat", "input": f"[[sim chunks=1100]] long {needle}", "stream": True}
    async with sp.platform.client(key) as c:
        r, events, meta = await read_stream(c, "POST", "/v1/responses", json=body)
    assert r.status_code == 200
    assert _asked(sp, needle)["max_output_tokens"] == CAP
    validate_events(events)  # the stream the adapter ended is as well formed as a backend's
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) == CAP
    last = events[-1]
    assert last["type"] == "response.incomplete", last["type"]
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["usage"]["output_tokens"] == CAP
    assert meta is not None and int(meta["x-output-tokens"]) == CAP
    await assert_books(sp, org, requests=1, debits=[debit(meta)])


async def test_a_settlement_above_its_hold_charges_the_hold_and_books_the_rest_as_receivable(
        sp: SimPlatform) -> None:
    """A JSON answer cannot be stopped midway: a backend that produced more than was held (here 2,000
    tokens against a hold for 1,024 and the body's bytes of input) is charged in full: the hold's
    amount from the wallet, the remainder owed on the receivable account."""
    org, key = await tenant(sp)
    body = chat_body(f"[[sim chunks=2000]] json {marker()}")
    raw = json.dumps(body).encode()
    async with sp.platform.client(key) as c:
        r = await c.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["completion_tokens"] == 2000
    full = cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert debit(r.headers) == full
    b = await assert_books(sp, org, requests=1, debits=[debit(r.headers)])
    held = cost(len(raw) + 256, CAP)  # the hold: the body's bytes + template allowance, and the cap
    assert CREDIT - b.wallet == held and -b.receivable == full - held > 0
    async with sp.platform.admin() as admin:  # the operator sees what is owed, and why
        balance = (await admin.get(f"/api/orgs/{org}/ledger/balance")).json()
        lines = (await admin.get(f"/api/orgs/{org}/ledger/statement", params={"account": "receivable"})).json()
    assert balance["owed_nanos"] == full - held
    assert [(line["kind"], line["amount"], line["request_id"]) for line in lines["data"]] == [
        ("charge", held - full, r.headers["x-request-id"])]
