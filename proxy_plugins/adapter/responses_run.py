"""Run one Responses request on its backend: the part shared by the adapter (client waiting) and
the worker (background). `Run.json()` returns the final Response; `Run.events()` yields batches of
stream events, raising `ApiError` before the first batch when the upstream refuses (so the adapter
can still answer with an HTTP error) and ending with exactly one terminal event afterwards.

Protocols: `openai` backends get the request passed through (upstream model name, the stored
conversation expanded into `input`, the platform keeping storage and background to itself);
`openai_chat` and `anthropic` go through translate/.

Every backend is asked for at most the output the hold covers (`meter.limit`), and every stream
is metered as it is relayed (responses_meter.py): stopped at the hold if its backend goes past it
(`response.incomplete`), its terminal event's usage completed from the meter when the backend
did not report it, and `snapshot()` gives what a cancelled response keeps.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec

from core.contract import output_cap
from core.errors import ApiError
from core.snapshot import BackendRecord, ModelRecord
from proxy_plugins.adapter.backends import Backends
from proxy_plugins.adapter.counting import count_input
from proxy_plugins.adapter.meter import Meter
from proxy_plugins.adapter.responses_meter import TERMINAL, Relayed, bill_terminal, usage_numbers
from proxy_plugins.adapter.translate.anthropic import AnthropicStreamTranslator, from_anthropic, to_anthropic
from proxy_plugins.adapter.translate.chat import ChatStreamTranslator, from_chat, to_chat
from proxy_plugins.adapter.translate.events import Event, ResponseStream
from proxy_plugins.adapter.translate.request import CreateResponse, Item
from proxy_plugins.adapter.translate.response import complete
from proxy_plugins.adapter.translate.types import Response, Usage

__all__ = ["ERROR_CODES", "Run", "usage_numbers"]

# Platform error code -> Responses `error.code` inside a failed response.
ERROR_CODES = {"rate_limit_exceeded": "rate_limit_exceeded", "invalid_request_error": "invalid_prompt"}
_encode = msgspec.json.encode


class Run:
    def __init__(
        self,
        backends: Backends,
        backend: BackendRecord,
        model: ModelRecord,
        req: CreateResponse,
        items: list[Item],
        response: Response,
        *,
        announce: bool = True,
        first_sequence: int = 0,
        tenant: str = "",
        meter: Meter | None = None,
    ) -> None:
        self.backends, self.backend, self.model, self.req = backends, backend, model, req
        self.tenant = tenant
        """The organization, for backends that order their queue by it (backends.py)."""
        self.items, self.response = items, response
        self.announce, self.first_sequence = announce, first_sequence
        self.meter = meter or Meter()
        self.relayed = Relayed(self.meter)
        self._reported_input = 0
        """Input tokens the backend reported before its stream ended (Anthropic's message_start)."""
        self.final: dict[str, Any] | None = None
        """The final Response as JSON builtins, once known."""

    # -- request bodies -------------------------------------------------------------------------
    def _request(self, stream: bool) -> tuple[str, dict[str, Any]]:
        """(path, body) for the backend; its output limit is never above what the hold covers."""
        held, asked = self.meter.per_choice(1), self.req.max_output_tokens
        limit = min(asked or held, held) if held else asked
        req = msgspec.structs.replace(self.req, stream=stream, max_output_tokens=limit)
        protocol = self.backend.protocol
        if protocol == "anthropic":
            return "messages", to_anthropic(req, self.items, self.model.upstream_name, output_cap(self.model))
        if protocol == "openai_chat":
            return "chat/completions", to_chat(req, self.items, self.model.upstream_name)
        body: dict[str, Any] = {k: v for k, v in msgspec.to_builtins(req).items() if v is not None}
        for name in ("previous_response_id", "background", "stream_options"):
            body.pop(name, None)
        body.update(model=self.model.upstream_name, input=self.items, store=False, stream=stream)
        return "responses", body

    def _payload(self, stream: bool) -> tuple[str, bytes]:
        path, body = self._request(stream)
        return path, _encode(body)

    async def count_input(self) -> int:
        """The request's input tokens: as the backend reported them, else as it counts them."""
        if self._reported_input:
            return self._reported_input
        path, body = self._request(stream=True)
        return await count_input(self.backends, self.backend, path, body, self.tenant)

    def snapshot(self, status: str = "cancelled", usage: Usage | None = None) -> dict[str, Any]:
        """The response as produced so far: what a response stopped short of its end keeps."""
        return self.relayed.stopped_short(msgspec.to_builtins(self.response), usage or Usage.of(0, 0), status)

    def _own(self, upstream: dict[str, Any]) -> dict[str, Any]:
        """An upstream Response made the platform's: our id, the client's model name and flags."""
        mine: dict[str, Any] = msgspec.to_builtins(self.response)
        keep = {
            k: mine[k]
            for k in ("id", "model", "previous_response_id", "store", "background", "metadata", "created_at")
        }
        # Our echo fills what the upstream leaves out, so every key of `Response` is present.
        out = {**mine, **{k: v for k, v in upstream.items() if v is not None}, **keep}
        if isinstance(out.get("usage"), dict):
            i, c, o = usage_numbers(out)
            details = out["usage"].get("output_tokens_details") or {}
            out["usage"] = msgspec.to_builtins(
                Usage.of(
                    i,
                    o,
                    cached=c,
                    cache_write=int(
                        (out["usage"].get("input_tokens_details") or {}).get("cache_write_tokens") or 0
                    ),
                    reasoning=int(details.get("reasoning_tokens") or 0),
                )
            )
        if out.get("status") == "completed" and out.get("completed_at") is None:
            out["completed_at"] = int(time.time())
        return out

    # -- one JSON answer ------------------------------------------------------------------------
    async def json(self) -> dict[str, Any]:
        path, payload = self._payload(stream=False)
        reply = await self.backends.post(self.backend, path, payload, self.tenant)
        try:
            if self.backend.protocol == "openai":
                upstream = msgspec.json.decode(reply.body)
                if not isinstance(upstream, dict) or not isinstance(upstream.get("output"), list):
                    raise ValueError("not a Response object")
                self.final = self._own(upstream)
                _fill_logprobs({"response": self.final})
                return self.final
            parse = from_anthropic if self.backend.protocol == "anthropic" else from_chat
            output, usage, reason = parse(reply.body)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            raise ApiError("upstream_error", "The model backend sent a malformed answer.") from None
        self.final = msgspec.to_builtins(complete(self.response, output, usage, reason))
        return self.final

    # -- a stream -------------------------------------------------------------------------------
    async def events(self) -> AsyncGenerator[list[Event], None]:
        """The stream's event batches, metered (see the module docstring)."""
        inner = self._events()
        try:
            async for batch in inner:
                out = self.relayed.admit(batch)
                if self.meter.stopped:  # the backend went past the output the hold covers
                    usage = Usage.of(await self.count_input(), self.meter.produced)
                    self.meter.reported = True
                    self.final = self.snapshot("incomplete", usage)
                    yield [*out, {"type": "response.incomplete", "sequence_number": self.relayed.last_seq + 1,
                                  "response": self.final}]
                    return
                if out and out[-1].get("type") in TERMINAL:
                    await bill_terminal(out[-1], self.meter, self.count_input)
                    response = out[-1].get("response")
                    if isinstance(response, Response):
                        self.final = msgspec.to_builtins(response)
                if out:
                    yield out
        finally:
            await inner.aclose()

    async def _events(self) -> AsyncGenerator[list[Event], None]:
        if not self.model.capabilities.get("streaming", True):
            async for batch in self._replayed():
                yield batch
            return
        path, payload = self._payload(stream=True)
        if self.backend.protocol == "openai":
            async for batch in self._passthrough(path, payload):
                yield batch
            return
        stream = ResponseStream(self.response, self.first_sequence)
        translator: ChatStreamTranslator | AnthropicStreamTranslator = (
            AnthropicStreamTranslator(stream)
            if self.backend.protocol == "anthropic"
            else ChatStreamTranslator(stream)
        )
        async with self.backends.stream(self.backend, path, payload, self.tenant) as upstream:
            yield stream.start(self.announce)
            try:
                async for event in upstream:
                    try:
                        batch = translator.feed(event.data)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        raise ApiError(
                            "upstream_error", "The model backend sent a malformed stream event."
                        ) from None
                    if not self._reported_input:
                        self._reported_input = _input_of(translator)
                    if batch:
                        yield self._settled(stream, batch)
                    if stream.done:
                        return
                yield self._settled(stream, translator.end())
            except ApiError as exc:
                yield self._settled(
                    stream, stream.fail(ERROR_CODES.get(exc.code, "server_error"), exc.message)
                )

    def _settled(self, stream: ResponseStream, batch: list[Event]) -> list[Event]:
        """Record the final Response before its terminal event leaves (callers store it first)."""
        if stream.done:
            self.final = msgspec.to_builtins(stream.response)
        return batch

    async def _replayed(self) -> AsyncIterator[list[Event]]:
        """A model without streaming, run in the background: one call, then its events."""
        stream = ResponseStream(self.response, self.first_sequence)
        final = await self.json()
        # Produced in full already (a JSON call cannot be stopped midway): charged as the backend
        # reports it, so the replayed events are not held to the limit.
        self.meter.limit = 0
        out = stream.start(self.announce)
        stream.response.output = []
        for item in final["output"]:
            if item["type"] == "function_call":
                out += stream.tool_call(item["call_id"], item["call_id"], item["name"])
                out += stream.tool_arguments(item["call_id"], item["arguments"])
            else:
                out += [e for part in item["content"] for e in stream.text(part.get("text", ""))]
        reason = (final.get("incomplete_details") or {}).get("reason")
        out += stream.finish(msgspec.convert(final.get("usage") or {}, Usage), reason)
        self.final = msgspec.to_builtins(stream.response)
        yield out

    async def _passthrough(self, path: str, payload: bytes) -> AsyncIterator[list[Event]]:
        """Relay an OpenAI-protocol stream, owning its ids; a cut stream ends in `response.failed`."""
        snapshot: dict[str, Any] = msgspec.to_builtins(self.response)
        done_items: dict[int, Any] = {}
        seq = self.first_sequence - 1
        async with self.backends.stream(self.backend, path, payload, self.tenant) as upstream:
            try:
                async for event in upstream:
                    try:
                        data = msgspec.json.decode(event.data)
                    except msgspec.DecodeError:
                        raise ApiError(
                            "upstream_error", "The model backend sent a malformed stream event."
                        ) from None
                    if not isinstance(data, dict) or "type" not in data:
                        continue
                    seq = self.first_sequence + int(
                        data.get("sequence_number", seq + 1 - self.first_sequence)
                    )
                    data["sequence_number"] = seq
                    _fill_logprobs(data)
                    if isinstance(data.get("response"), dict):
                        snapshot = data["response"] = self._own(data["response"])
                    if data["type"] == "response.output_item.done":
                        done_items[int(data.get("output_index", len(done_items)))] = data.get("item")
                    if not self.announce and data["type"] in ("response.created", "response.queued"):
                        continue
                    if data["type"] in TERMINAL:
                        self.final = snapshot
                        yield [data]
                        return
                    yield [data]
                    if data["type"] == "error":
                        raise ApiError("upstream_error", str(data.get("message") or "The backend failed."))
                raise ApiError(
                    "upstream_error", "The model backend's stream ended before the response was complete."
                )
            except ApiError as exc:
                snapshot.update(
                    status="failed",
                    output=[done_items[i] for i in sorted(done_items)],
                    error={"code": ERROR_CODES.get(exc.code, "server_error"), "message": exc.message},
                )
                self.final = snapshot
                yield [{"type": "response.failed", "sequence_number": seq + 1, "response": snapshot}]


def _fill_logprobs(event: dict[str, Any]) -> None:
    """`logprobs` is required on text deltas and output_text parts; some OpenAI-compatible servers
    leave it out, and a strict client (the Open Responses suite) would reject the event."""
    if event.get("type") in ("response.output_text.delta", "response.output_text.done"):
        event.setdefault("logprobs", [])
    parts = [event.get("part")]
    for item in (event.get("item"), *((event.get("response") or {}).get("output") or [])):
        if isinstance(item, dict):
            parts += item.get("content") or []
    for part in parts:
        if isinstance(part, dict) and part.get("type") == "output_text":
            part.setdefault("logprobs", [])
            part.setdefault("annotations", [])


def _input_of(translator: ChatStreamTranslator | AnthropicStreamTranslator) -> int:
    """Input tokens a translated stream's backend reported so far (0: none yet)."""
    usage = translator.usage() if isinstance(translator, AnthropicStreamTranslator) else translator.usage
    return usage.input_tokens if usage is not None else 0
