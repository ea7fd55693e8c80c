"""Build the documented Responses SSE event sequence from protocol-neutral steps.

Backend-specific stream translators (chat_stream.py, anthropic_stream.py) call `text`, `refusal`,
`tool_call`, `tool_arguments`, then exactly one of `finish` or `fail`. The builder opens and closes
output items and content parts itself, so every produced sequence is well formed:

    response.created, response.in_progress,
    (output_item.added, content_part.added, output_text.delta*, output_text.done,
     content_part.done, output_item.done
     | output_item.added, function_call_arguments.delta*, function_call_arguments.done,
       output_item.done)*,
    response.completed | response.incomplete | response.failed

with `sequence_number` increasing by one from `first_sequence`. A failure never closes open items
as if they were complete: they end `incomplete` inside the `response.failed` snapshot.
"""

from __future__ import annotations

import time
from typing import Any

from core.ids import new_id
from proxy_plugins.adapter.translate.types import (
    FunctionCallItem,
    IncompleteDetails,
    MessageItem,
    OutputText,
    Refusal,
    Response,
    ResponseErrorInfo,
    Usage,
)

__all__ = ["Event", "ResponseStream"]

Event = dict[str, Any]


class ResponseStream:
    def __init__(self, response: Response, first_sequence: int = 0) -> None:
        self.response = response
        self.seq = first_sequence
        self._message: MessageItem | None = None
        self._part: OutputText | Refusal | None = None
        self._calls: dict[int | str, FunctionCallItem] = {}
        self.done = False

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def _index(self, item: MessageItem | FunctionCallItem) -> int:
        return next(i for i, x in enumerate(self.response.output) if x is item)

    def announce(self) -> list[Event]:
        """`response.created`, and `response.queued` for a queued background response."""
        out = [self._event("response.created", response=_copy(self.response))]
        if self.response.status == "queued":
            out.append(self._event("response.queued", response=_copy(self.response)))
        return out

    def start(self, announce: bool = True) -> list[Event]:
        """`announce()` (unless a background job already stored it), then `response.in_progress`."""
        out = self.announce() if announce else []
        self.response.status = "in_progress"
        out.append(self._event("response.in_progress", response=_copy(self.response)))
        return out

    def text(self, delta: str) -> list[Event]:
        return self._content_delta(delta, refusal=False)

    def refusal(self, delta: str) -> list[Event]:
        return self._content_delta(delta, refusal=True)

    def _content_delta(self, delta: str, refusal: bool) -> list[Event]:
        out: list[Event] = []
        if self._calls:
            out += self._close_calls()
        wanted = Refusal if refusal else OutputText
        if self._part is not None and not isinstance(self._part, wanted):
            out += self._close_part()
        if self._message is None:
            self._message = MessageItem(id=new_id("msg"), status="in_progress")
            self.response.output.append(self._message)
            out.append(
                self._event(
                    "response.output_item.added",
                    output_index=self._index(self._message),
                    item=MessageItem(id=self._message.id, status="in_progress"),
                )
            )
        msg = self._message
        if self._part is None:
            self._part = Refusal(refusal="") if refusal else OutputText(text="")
            msg.content.append(self._part)
            out.append(
                self._event(
                    "response.content_part.added",
                    **self._where(),
                    part=Refusal(refusal="") if refusal else OutputText(text=""),
                )
            )
        if not delta:
            return out
        if isinstance(self._part, Refusal):
            self._part.refusal += delta
            out.append(self._event("response.refusal.delta", **self._where(), delta=delta))
        else:
            self._part.text += delta
            out.append(self._event("response.output_text.delta", **self._where(), delta=delta, logprobs=[]))
        return out

    def _where(self) -> dict[str, Any]:
        assert self._message is not None
        return {
            "item_id": self._message.id,
            "output_index": self._index(self._message),
            "content_index": len(self._message.content) - 1,
        }

    def _close_part(self) -> list[Event]:
        part, self._part = self._part, None
        if part is None:
            return []
        where = self._where()
        if isinstance(part, Refusal):
            done = self._event("response.refusal.done", **where, refusal=part.refusal)
        else:
            done = self._event("response.output_text.done", **where, text=part.text, logprobs=[])
        return [done, self._event("response.content_part.done", **where, part=part)]

    def _close_message(self) -> list[Event]:
        out = self._close_part()
        msg, self._message = self._message, None
        if msg is not None:
            msg.status = "completed"
            out.append(self._event("response.output_item.done", output_index=self._index(msg), item=msg))
        return out

    def tool_call(self, key: int | str, call_id: str, name: str) -> list[Event]:
        """A new function call; `key` is how the backend refers to it in later argument deltas."""
        out = self._close_message()
        item = FunctionCallItem(
            id=new_id("fc"),
            call_id=call_id or new_id("fc").replace("fc_", "call_"),
            name=name,
            arguments="",
            status="in_progress",
        )
        self._calls[key] = item
        self.response.output.append(item)
        out.append(
            self._event(
                "response.output_item.added",
                output_index=self._index(item),
                item=FunctionCallItem(
                    id=item.id, call_id=item.call_id, name=name, arguments="", status="in_progress"
                ),
            )
        )
        return out

    def has_call(self, key: int | str) -> bool:
        return key in self._calls

    def tool_arguments(self, key: int | str, delta: str) -> list[Event]:
        item = self._calls.get(key)
        if item is None or not delta:
            return []
        item.arguments += delta
        return [
            self._event(
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=self._index(item),
                delta=delta,
            )
        ]

    def _close_calls(self) -> list[Event]:
        out: list[Event] = []
        for item in self._calls.values():
            item.status = "completed"
            index = self._index(item)
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=index,
                    name=item.name,
                    arguments=item.arguments,
                )
            )
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        self._calls.clear()
        return out

    def finish(self, usage: Usage, incomplete: str | None = None) -> list[Event]:
        """Close what is open and end with `response.completed` (or `.incomplete` when the model
        stopped at `max_output_tokens` or a content filter)."""
        out = self._close_message() + self._close_calls()
        self.response.usage = usage
        self.response.completed_at = int(time.time())
        if incomplete in ("max_output_tokens", "content_filter"):
            self.response.status = "incomplete"
            self.response.incomplete_details = IncompleteDetails(reason=incomplete)  # type: ignore[arg-type]
            out.append(self._event("response.incomplete", response=self.response))
        else:
            self.response.status = "completed"
            out.append(self._event("response.completed", response=self.response))
        self.done = True
        return out

    def fail(self, code: str, message: str, usage: Usage | None = None) -> list[Event]:
        """End with `response.failed`; open items stay `incomplete` so no client mistakes a cut
        stream for a finished one."""
        if self.done:
            return []
        for item in self.response.output:
            if item.status == "in_progress":
                item.status = "incomplete"
        self._message, self._part = None, None
        self._calls.clear()
        self.response.status = "failed"
        if usage is not None:
            self.response.usage = usage
        self.response.error = ResponseErrorInfo(code=code, message=message)
        self.done = True
        return [self._event("response.failed", response=self.response)]

    def cancel(self) -> list[Event]:
        """A background response cancelled mid-run: its last snapshot is `cancelled`."""
        if self.done:
            return []
        for item in self.response.output:
            if item.status == "in_progress":
                item.status = "incomplete"
        self.response.status = "cancelled"
        self.done = True
        # There is no `response.cancelled` stream event in the OpenAPI; `response.failed` would
        # misreport the status, so a cancelled stream ends with an `error` event naming it.
        return [
            self._event("error", code="response_cancelled", message="The response was cancelled.", param=None)
        ]


def _copy(response: Response) -> Response:
    import msgspec

    return msgspec.structs.replace(response, output=list(response.output))
